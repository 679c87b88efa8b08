"""Batched data augmentation for digits, as tensor ops on whole batches (no per-image Python).

A random affine transform per image (rotation, scale, shear, translation; never flips: a
mirrored 2 is not a digit) is applied with one ``affine_grid`` + ``grid_sample`` call, and an
optional elastic distortion adds a smoothed random displacement field. All randomness comes from
the ``torch.Generator`` passed in, so a seed fixes the result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from .errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    rotate: float = 0.0  # max rotation, degrees (uniform in [-rotate, rotate])
    scale: float = 0.0  # max relative zoom (uniform in [1-scale, 1+scale])
    shear: float = 0.0  # max shear, degrees
    translate: float = 0.0  # max shift as a fraction of the image side
    elastic_alpha: float = 0.0  # elastic displacement strength, pixels (0 = off)
    elastic_sigma: float = 4.0  # smoothing of the elastic field, pixels
    p: float = 1.0  # probability that an image is augmented at all

    @property
    def enabled(self) -> bool:
        return self.p > 0 and any((self.rotate, self.scale, self.shear, self.translate, self.elastic_alpha))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "light": AugmentConfig(rotate=8, scale=0.08, shear=5, translate=0.08),
    "medium": AugmentConfig(rotate=12, scale=0.12, shear=8, translate=0.1),
    "strong": AugmentConfig(rotate=15, scale=0.15, shear=10, translate=0.12, elastic_alpha=1.5, elastic_sigma=4.0),
}


def parse_augment(value: str | dict | AugmentConfig | None) -> AugmentConfig:
    """A preset name, a dict of :class:`AugmentConfig` fields, or a config."""
    if value is None:
        return PRESETS["none"]
    if isinstance(value, AugmentConfig):
        return value
    if isinstance(value, str):
        if value not in PRESETS:
            raise ConfigError(f"unknown augmentation {value!r}; valid presets: {', '.join(PRESETS)}")
        return PRESETS[value]
    if isinstance(value, dict):
        names = {f.name for f in fields(AugmentConfig)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(f"augment: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        try:
            cfg = AugmentConfig(**{k: float(v) for k, v in value.items()})
        except (TypeError, ValueError):
            raise ConfigError("augment: every value must be a number") from None
        if any(getattr(cfg, f.name) < 0 for f in fields(cfg)) or cfg.p > 1:
            raise ConfigError("augment: values must be >= 0 and p <= 1")
        return cfg
    raise ConfigError(f"augment: expected a preset name or an object, got {type(value).__name__}")


def _uniform(n: int, bound: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, device=device) * 2 - 1) * bound


def random_affine_matrices(n: int, cfg: AugmentConfig, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``[n, 2, 3]`` matrices mapping output to input coordinates (affine_grid's convention)."""
    rot = _uniform(n, math.radians(cfg.rotate), gen, device)
    shear = _uniform(n, math.radians(cfg.shear), gen, device)
    zoom = 1 + _uniform(n, cfg.scale, gen, device)
    tx, ty = _uniform(n, 2 * cfg.translate, gen, device), _uniform(n, 2 * cfg.translate, gen, device)
    cos, sin, tan = torch.cos(rot), torch.sin(rot), torch.tan(shear)
    # inverse zoom: sampling the input at coordinates / zoom enlarges the digit by zoom
    a = torch.stack([cos, -sin + cos * tan, tx], dim=1) / zoom[:, None]
    b = torch.stack([sin, cos + sin * tan, ty], dim=1) / zoom[:, None]
    theta = torch.stack([a, b], dim=1)
    theta[:, :, 2] = torch.stack([tx, ty], dim=1)  # translation is not scaled
    if cfg.p < 1:
        keep = torch.rand(n, generator=gen, device=device) >= cfg.p
        theta[keep] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device=device)
    return theta


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def elastic_field(n: int, size: int, cfg: AugmentConfig, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Smoothed random displacement ``[n, size, size, 2]`` in normalised grid units."""
    noise = torch.rand(n * 2, 1, size, size, generator=gen, device=device) * 2 - 1
    k = _gaussian_kernel(cfg.elastic_sigma, device)
    pad = len(k) // 2
    noise = F.conv2d(F.pad(noise, (pad, pad, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    noise = F.conv2d(F.pad(noise, (0, 0, pad, pad), mode="reflect"), k.view(1, 1, -1, 1))
    noise = noise / noise.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    disp = noise.view(n, 2, size, size).permute(0, 2, 3, 1)
    return disp * (cfg.elastic_alpha * 2 / size)  # pixels -> [-1, 1] grid units


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment a float batch ``[B, C, H, W]`` (any value range; background must be the minimum)."""
    if not cfg.enabled:
        return x
    n, _, h, w = x.shape
    theta = random_affine_matrices(n, cfg, gen, x.device).to(x.dtype)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if cfg.elastic_alpha > 0:
        grid = grid + elastic_field(n, h, cfg, gen, x.device).to(x.dtype)
    # pad with the background value (the minimum: 0 for raw pixels, -mean/std once normalised)
    bg = x.amin(dim=(1, 2, 3), keepdim=True)
    return F.grid_sample(x - bg, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + bg
