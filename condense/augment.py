"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021), in plain torch.

Each transformation is differentiable w.r.t. the input images. Parameters are sampled explicitly
(:meth:`DSA.sample`) and applied separately (:meth:`DSA.apply`), so the *same* parameters can be
applied to a real and a synthetic batch (Siamese augmentation, Sec. 3 of the paper). A parameter
set sampled for ``n = 1`` is broadcast to the whole batch — this is the official code's
``batchmode`` that is active whenever a seed is given (the real and synthetic batches of one class
have different sizes, so they share one transformation).

Ratios are the official ``ParamDiffAug`` defaults. ``mode="single"`` picks one operation group of
the strategy per call (official ``aug_mode='S'``, used by DSA/DM/MTT/DataDAM); ``mode="all"``
applies every group in order (``aug_mode='M'``).

Defaults that differ between the official code bases (each a documented default with a flag):

* strategy ``"auto"`` (:func:`resolve_strategy`): ``color_crop_cutout_scale_rotate`` (no flip) for the
  digit datasets ``digits``/``mnist`` -- DatasetCondensation ``readme.md``: "use
  color_crop_cutout_scale_rotate for the digit datasets (MNIST and SVHN), as flip augmentation is not
  good for digit datasets" -- and ``color_crop_cutout_flip_scale_rotate`` for everything else
  (Fashion-MNIST and CIFAR included, as in that README).
* ``align_corners`` of the scale/rotate ``affine_grid``/``grid_sample``: ``False`` in
  VICO-UoE/DatasetCondensation ``utils.py`` (DC/DSA/DM; the call passes no argument, torch's default
  is ``False``) and DataDAM ``utils.py``; ``True`` in MTT's and AST's ``utils.py``. :class:`DSA`
  defaults to ``False``; the MTT/AST configs and expert recipes set ``True``. Both conventions map pixel ``i`` to
  ``s (i - c) + c`` for the centred scale/rotation of a *square* image, so on the square datasets here
  the two differ only by float rounding (~2e-6 per pixel on 8x8 digits; tested with ``allclose``) -- which
  hundreds of training epochs still amplify into different networks (same digits set, same seeds:
  86.77 vs 87.14 %, see ``experiments/results/matching.md``); it matters for a rotation of non-square images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .utils import UserError

__all__ = ["DSA", "DSAParams", "DEFAULT_STRATEGY", "DIGITS_STRATEGY", "AUTO", "resolve_strategy", "make_dsa"]

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DIGITS_STRATEGY = "color_crop_cutout_scale_rotate"  # DatasetCondensation readme: no flip for digit datasets
AUTO = "auto"
_DIGIT_DATASETS = ("digits", "mnist")
_GROUPS = {
    "color": ("brightness", "saturation", "contrast"),
    "crop": ("crop",),
    "cutout": ("cutout",),
    "flip": ("flip",),
    "scale": ("scale",),
    "rotate": ("rotate",),
}


@dataclass
class DSAParams:
    """Sampled augmentation parameters: the chosen operations and one tensor row per image (or one row)."""

    ops: tuple[str, ...]
    values: dict[str, torch.Tensor] = field(default_factory=dict)


def resolve_strategy(strategy: str, dataset: str) -> str:
    """``"auto"`` -> the dataset's default strategy (no flip for digit datasets); anything else unchanged."""
    if strategy.lower() != AUTO:
        return strategy
    return DIGITS_STRATEGY if dataset in _DIGIT_DATASETS else DEFAULT_STRATEGY


def make_dsa(strategy: str, dataset: str, *, align_corners: bool) -> "DSA":
    """The DSA of a method config, ``"auto"`` resolved for ``dataset`` (``"none"``: the identity, ``enabled`` False)."""
    return DSA(resolve_strategy(strategy, dataset), align_corners=align_corners)


class DSA:
    """Differentiable augmentation with explicitly sampled (hence shareable) parameters."""

    def __init__(
        self,
        strategy: str = DEFAULT_STRATEGY,
        mode: str = "single",
        *,
        prob_flip: float = 0.5,
        ratio_scale: float = 1.2,
        ratio_rotate: float = 15.0,
        ratio_crop_pad: float = 0.125,
        ratio_cutout: float = 0.5,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
        align_corners: bool = False,
    ) -> None:
        groups = [g for g in strategy.split("_") if g] if strategy and strategy.lower() != "none" else []
        unknown = [g for g in groups if g not in _GROUPS]
        if unknown:
            raise UserError(f"unknown DSA operation(s) {unknown}; choose from {', '.join(_GROUPS)}")
        if mode not in ("single", "all"):
            raise UserError(f"DSA mode must be 'single' or 'all', got {mode!r}")
        self.strategy, self.groups, self.mode = strategy, groups, mode
        self.prob_flip, self.ratio_scale, self.ratio_rotate = prob_flip, ratio_scale, ratio_rotate
        self.ratio_crop_pad, self.ratio_cutout = ratio_crop_pad, ratio_cutout
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast
        self.align_corners = bool(align_corners)

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, mode={self.mode!r}, align_corners={self.align_corners})"

    @property
    def enabled(self) -> bool:
        """False for the identity strategy ``"none"``."""
        return bool(self.groups)

    def describe(self) -> dict:
        """What a :class:`~condense.synset.SyntheticSet` records, so evaluation can rebuild this DSA."""
        return {"strategy": self.strategy, "mode": self.mode, "align_corners": self.align_corners}

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, image_size: tuple[int, int], generator: torch.Generator | None = None) -> DSAParams:
        """Sample parameters for ``n`` images (``n = 1``: one transformation shared by a whole batch)."""
        if not self.groups:
            return DSAParams(ops=())
        if self.mode == "single":
            chosen = [self.groups[int(torch.randint(len(self.groups), (1,), generator=generator))]]
        else:
            chosen = list(self.groups)
        ops = tuple(op for g in chosen for op in _GROUPS[g])
        h, w = image_size
        values: dict[str, torch.Tensor] = {}
        for op in ops:
            if op in ("brightness", "saturation", "contrast", "flip"):
                values[op] = torch.rand(n, 1, 1, 1, generator=generator)
            elif op == "scale":
                r = self.ratio_scale
                values[op] = torch.rand(n, 2, generator=generator) * (r - 1.0 / r) + 1.0 / r
            elif op == "rotate":
                values[op] = (torch.rand(n, generator=generator) - 0.5) * 2 * self.ratio_rotate / 180 * math.pi
            elif op == "crop":
                sx, sy = int(h * self.ratio_crop_pad + 0.5), int(w * self.ratio_crop_pad + 0.5)
                values[op] = torch.stack(
                    [torch.randint(-sx, sx + 1, (n,), generator=generator), torch.randint(-sy, sy + 1, (n,), generator=generator)], 1
                )
            elif op == "cutout":
                cx, cy = int(h * self.ratio_cutout + 0.5), int(w * self.ratio_cutout + 0.5)
                values[op] = torch.stack(
                    [
                        torch.randint(0, h + (1 - cx % 2), (n,), generator=generator),
                        torch.randint(0, w + (1 - cy % 2), (n,), generator=generator),
                    ],
                    1,
                )
        return DSAParams(ops=ops, values=values)

    # ------------------------------------------------------------------ applying
    def apply(self, x: torch.Tensor, params: DSAParams) -> torch.Tensor:
        """Apply sampled parameters to ``x`` (B, C, H, W); differentiable in ``x``."""
        for op in params.ops:
            v = params.values[op].to(x.device)
            if v.shape[0] == 1 and x.shape[0] != 1:
                v = v.expand(x.shape[0], *v.shape[1:])
            elif v.shape[0] != x.shape[0]:
                raise ValueError(f"DSA parameters for {v.shape[0]} images applied to a batch of {x.shape[0]}")
            x = getattr(self, f"_{op}")(x, v)
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment with independent per-image parameters (evaluation / expert training)."""
        return self.apply(x, self.sample(x.shape[0], tuple(x.shape[-2:]), generator))

    def siamese(self, *batches: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Apply one shared transformation to every batch (the Siamese augmentation of DSA)."""
        params = self.sample(1, tuple(batches[0].shape[-2:]), generator)
        return tuple(self.apply(b, params) for b in batches)

    # ------------------------------------------------------------------ operations
    def _brightness(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return x + (v.to(x.dtype) - 0.5) * self.brightness

    def _saturation(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        return (x - mean) * (v.to(x.dtype) * self.saturation) + mean

    def _contrast(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (v.to(x.dtype) + self.contrast) + mean

    def _flip(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.where(v < self.prob_flip, x.flip(3), x)

    def _affine(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=self.align_corners)
        return F.grid_sample(x, grid, align_corners=self.align_corners)

    def _scale(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros_like(v[:, 0])
        theta = torch.stack([torch.stack([v[:, 0], zeros, zeros], 1), torch.stack([zeros, v[:, 1], zeros], 1)], 1)
        return self._affine(x, theta)

    def _rotate(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        c, s, zeros = torch.cos(v), torch.sin(v), torch.zeros_like(v)
        theta = torch.stack([torch.stack([c, s, zeros], 1), torch.stack([-s, c, zeros], 1)], 1)
        return self._affine(x, theta)

    def _crop(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Translation by up to ``ratio_crop_pad`` of the size, zero-padded (official ``rand_crop``)."""
        b, _, h, w = x.shape
        dev = x.device
        gb, gx, gy = torch.meshgrid(torch.arange(b, device=dev), torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        gx = (gx + v[:, 0].view(b, 1, 1) + 1).clamp(0, h + 1)
        gy = (gy + v[:, 1].view(b, 1, 1) + 1).clamp(0, w + 1)
        padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
        return padded[gb, gx, gy].permute(0, 3, 1, 2)

    def _cutout(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Zero a square of ``ratio_cutout`` of the size at a random centre (official ``rand_cutout``)."""
        b, _, h, w = x.shape
        cx, cy = int(h * self.ratio_cutout + 0.5), int(w * self.ratio_cutout + 0.5)
        dev = x.device
        gb, gx, gy = torch.meshgrid(torch.arange(b, device=dev), torch.arange(cx, device=dev), torch.arange(cy, device=dev), indexing="ij")
        gx = (gx + v[:, 0].view(b, 1, 1) - cx // 2).clamp(0, h - 1)
        gy = (gy + v[:, 1].view(b, 1, 1) - cy // 2).clamp(0, w - 1)
        mask = torch.ones(b, h, w, dtype=x.dtype, device=dev)
        mask[gb, gx, gy] = 0
        return x * mask.unsqueeze(1)
