"""CLI commands for the serving stage (registered on the main group; keep imports of heavy modules inside commands)."""

from __future__ import annotations

import click  # noqa: F401

from .cli import cli  # noqa: F401
