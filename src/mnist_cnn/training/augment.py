"""Batched data augmentation for digits, as tensor ops on whole batches (no per-image Python).

A random affine transform per image (rotation, scale, shear, translation; never flips: a
mirrored 2 is not a digit) is applied with one ``affine_grid`` + ``grid_sample`` call, and an
optional elastic distortion adds a smoothed random displacement field. The ``photo`` effects
imitate what preprocessing leaves of a phone photo of paper: another pen width (grey dilation or
erosion), blur, noise, a faint fragment of a ruled line through the digit and pieces of a form's
box near the border. All randomness comes from the ``torch.Generator`` passed in, so a seed fixes
the result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from mnist_cnn.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    rotate: float = 0.0  # max rotation, degrees (uniform in [-rotate, rotate])
    scale: float = 0.0  # max relative zoom (uniform in [1-scale, 1+scale])
    shear: float = 0.0  # max shear, degrees
    translate: float = 0.0  # max shift as a fraction of the image side
    elastic_alpha: float = 0.0  # elastic displacement strength, pixels (0 = off)
    elastic_sigma: float = 4.0  # smoothing of the elastic field, pixels
    p: float = 1.0  # probability that an image is augmented at all
    # photo effects (what preprocessing leaves of a photo of a page)
    stroke: float = 0.0  # probability of another pen width: grey dilation or erosion (half each)
    blur: float = 0.0  # max Gaussian blur sigma, pixels
    noise: float = 0.0  # max noise sigma, as a fraction of the ink level
    lines: float = 0.0  # probability of a faint fragment of a ruled line through the image
    frame: float = 0.0  # probability of pieces of a box's frame near the border

    @property
    def enabled(self) -> bool:
        return self.p > 0 and any(
            (self.rotate, self.scale, self.shear, self.translate, self.elastic_alpha, *self._photo)
        )

    @property
    def _photo(self) -> tuple[float, ...]:
        return (self.stroke, self.blur, self.noise, self.lines, self.frame)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "light": AugmentConfig(rotate=8, scale=0.08, shear=5, translate=0.08),
    "medium": AugmentConfig(rotate=12, scale=0.12, shear=8, translate=0.1),
    "strong": AugmentConfig(rotate=15, scale=0.15, shear=10, translate=0.12, elastic_alpha=1.5, elastic_sigma=4.0),
    # medium's geometry plus what a photo of a page leaves behind after preprocessing
    "photo": AugmentConfig(
        rotate=12, scale=0.12, shear=8, translate=0.1, stroke=0.5, blur=0.8, noise=0.08, lines=0.3, frame=0.15
    ),
}
PROBABILITIES = ("p", "stroke", "lines", "frame")  # fields that must be <= 1


def parse_augment(value: str | dict | AugmentConfig | None) -> AugmentConfig:
    """A preset name, ``"key=value,..."`` (e.g. ``rotate=10,scale=0.1``), a dict of
    :class:`AugmentConfig` fields, or a config."""
    if value is None:
        return PRESETS["none"]
    if isinstance(value, AugmentConfig):
        return value
    if isinstance(value, str) and "=" in value:
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ConfigError(f"augment {value!r}: expected key=value pairs separated by commas")
        return parse_augment({k.strip(): v.strip() for k, v in pairs})
    if isinstance(value, str):
        if value not in PRESETS:
            raise ConfigError(
                f"unknown augmentation {value!r}; valid presets: {', '.join(PRESETS)}, "
                "or key=value pairs such as rotate=10,scale=0.1"
            )
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
        values = [getattr(cfg, f.name) for f in fields(cfg)]
        if not all(math.isfinite(v) and v >= 0 for v in values) or any(getattr(cfg, k) > 1 for k in PROBABILITIES):
            raise ConfigError(f"augment: values must be finite numbers >= 0 and {', '.join(PROBABILITIES)} <= 1")
        if cfg.elastic_alpha > 0 and cfg.elastic_sigma <= 0:
            raise ConfigError("augment: elastic_sigma must be > 0 when elastic_alpha is set")
        return cfg
    raise ConfigError(f"augment: expected a preset name or an object, got {type(value).__name__}")


def _uniform(n: int, bound: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, device=device) * 2 - 1) * bound


def random_affine_matrices(n: int, cfg: AugmentConfig, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``[n, 2, 3]`` matrices mapping output to input coordinates (affine_grid's convention).
    Uniform rotation, shear, zoom and shift; the matrix is rotation @ shear, so no flips."""
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
    return theta


def _gaussian_kernel(sigma: float, device: torch.device, max_radius: int) -> torch.Tensor:
    # truncated at 3 sigma, and below the image side (reflect padding needs pad < side)
    radius = max(1, min(int(3 * sigma), max_radius))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def elastic_field(
    n: int, h: int, w: int, cfg: AugmentConfig, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Smoothed random displacement ``[n, h, w, 2]`` (x, y) in normalised grid units, at most
    ``elastic_alpha`` pixels per image (Simard et al. 2003, as a separable Gaussian blur)."""
    noise = torch.rand(n * 2, 1, h, w, generator=gen, device=device) * 2 - 1
    k = _gaussian_kernel(cfg.elastic_sigma, device, min(h, w) - 1)
    pad = len(k) // 2
    noise = F.conv2d(F.pad(noise, (pad, pad, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    noise = F.conv2d(F.pad(noise, (0, 0, pad, pad), mode="reflect"), k.view(1, 1, -1, 1))
    noise = noise / noise.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    disp = noise.view(n, 2, h, w).permute(0, 2, 3, 1)  # [n, h, w, (dx, dy)]
    # pixels -> [-1, 1] grid units (align_corners=False: one pixel is 2/side)
    return disp * torch.tensor([2 / w, 2 / h], device=device) * cfg.elastic_alpha


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment a float batch ``[B, C, H, W]`` (any value range; background must be the minimum)."""
    if not cfg.enabled:
        return x
    n, _, h, w = x.shape
    theta = random_affine_matrices(n, cfg, gen, x.device).to(x.dtype)
    # images left as they are when p < 1 (affine and elastic alike): [n] bool
    skip = torch.rand(n, generator=gen, device=x.device) >= cfg.p if cfg.p < 1 else None
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)  # [n, h, w, 2]
    if cfg.elastic_alpha > 0:
        grid = grid + elastic_field(n, h, w, cfg, gen, x.device).to(x.dtype)
    # pad with the background value (the minimum: 0 for raw pixels, -mean/std once normalised)
    bg = x.amin(dim=(1, 2, 3), keepdim=True)
    out = F.grid_sample(x - bg, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + bg
    if any(cfg._photo):
        top = x.amax(dim=(1, 2, 3), keepdim=True)
        span = (top - bg).clamp_min(1e-6)
        out = photo_effects((out - bg) / span, cfg, gen) * span + bg  # in ink units: background 0, ink 1
    return out if skip is None else torch.where(skip[:, None, None, None], x, out)


def _chance(n: int, p: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """[n, 1, 1, 1] float: 1 with probability ``p``."""
    return (torch.rand(n, 1, 1, 1, generator=gen, device=device) < p).float()


def _rand(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """[n, 1, 1, 1] uniform in [lo, hi)."""
    return lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=gen, device=device)


def photo_effects(u: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Pen width, blur, line fragments, frame pieces and noise on ``u`` [B, C, H, W] in 0..1 ink
    units (0 background); every draw happens for every image (fixed random stream), the effect is
    masked per image."""
    n, dev = u.shape[0], u.device
    if cfg.stroke > 0:  # a wider or narrower pen: partway towards a 3x3 grey dilation / erosion
        which = torch.rand(n, 1, 1, 1, generator=gen, device=dev)
        amount = torch.rand(n, 1, 1, 1, generator=gen, device=dev)
        wider = F.max_pool2d(u, 3, 1, 1)
        narrower = -F.max_pool2d(-u, 3, 1, 1)
        grow = (which < cfg.stroke / 2).float() * amount
        shrink = ((which >= cfg.stroke / 2) & (which < cfg.stroke)).float() * 0.7 * amount  # keep thin strokes
        u = u + grow * (wider - u) + shrink * (narrower - u)
    if cfg.blur > 0:
        u = _blur(u, _rand(n, 0, cfg.blur, gen, dev))
    h, w = u.shape[-2:]
    if cfg.lines > 0:  # what is left of a ruled line after line removal: faint, partial, axis-aligned
        u = torch.maximum(u, _chance(n, cfg.lines, gen, dev) * _segments(n, h, w, 0, 1, 0.15, 0.6, gen, dev))
    if cfg.frame > 0:  # a box's side (sometimes a corner) in the outer 4 pixels, clearly visible
        edge = _segments(n, h, w, 0, 4 / max(h, w), 0.3, 1.0, gen, dev)
        corner = _chance(n, 0.5, gen, dev) * _segments(n, h, w, 0, 4 / max(h, w), 0.3, 1.0, gen, dev)
        u = torch.maximum(u, _chance(n, cfg.frame, gen, dev) * torch.maximum(edge, corner))
    if cfg.noise > 0:
        u = u + _rand(n, 0, cfg.noise, gen, dev) * torch.randn(u.shape, generator=gen, device=dev)
    return u.clamp(0, 1)


def _segments(
    n: int, h: int, w: int, lo: float, hi: float, dim: float, bright: float, gen: torch.Generator, dev: torch.device
) -> torch.Tensor:
    """[n, 1, h, w]: one 1-px horizontal or vertical segment per image, at a position within ``lo``..``hi``
    (fraction of the side) from the top/left or (for frames, ``hi`` < 1) mirrored to the bottom/right,
    2 px to the whole side long, ink ``dim``..``bright``."""
    yy = torch.arange(h, device=dev).view(1, 1, h, 1).float()
    xx = torch.arange(w, device=dev).view(1, 1, 1, w).float()
    pos = _rand(n, lo, hi, gen, dev)
    far = _chance(n, 0.5, gen, dev)
    pos = far * (1 - 1e-6 - pos) + (1 - far) * pos  # mirrored to the other side half the time
    a, b = _rand(n, 0, 1, gen, dev), _rand(n, 0, 1, gen, dev)
    start, stop = torch.minimum(a, b) - 0.1, torch.maximum(a, b) + 0.1
    level = _rand(n, dim, bright, gen, dev)
    across = (yy == (pos * h).floor()) & (xx >= start * w) & (xx <= stop * w)  # horizontal
    down = (xx == (pos * w).floor()) & (yy >= start * h) & (yy <= stop * h)  # vertical
    vertical = _chance(n, 0.5, gen, dev).bool()
    return torch.where(vertical, down, across).float() * level


def _blur(u: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image ``sigma`` [n, 1, 1, 1] (0: unchanged), 5-tap kernels."""
    n, c, h, w = u.shape
    x = torch.arange(-2, 3, device=u.device, dtype=u.dtype).view(1, 5)
    k = torch.exp(-(x**2) / (2 * sigma.view(n, 1).clamp_min(1e-3) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [n*c, 5]
    flat = u.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="replicate"), k.view(n * c, 1, 1, 5), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="replicate"), k.view(n * c, 1, 5, 1), groups=n * c)
    return flat.view(n, c, h, w)
