r"""The DCGAN-style generator shared by DAFL, DFAD, ZSKT and Fast-DFKD.

All four official code bases use the same body (DAFL ``Generator``, DFAD ``GeneratorA``, ZSKT
``GeneratorCIFAR``, Fast-DFKD ``Generator``)::

    z (B, nz) -> Linear -> (2 ngf, H/4, W/4) -> BN -> up x2 -> conv3 -> BN -> LReLU(0.2)
              -> up x2 -> conv3 (ngf) -> BN -> LReLU(0.2) -> conv3 (C) -> head

and differ only in the output ``head`` and BN details:

* ``"tanh_bn"`` - DAFL / DFAD: ``tanh`` then ``BatchNorm2d(C, affine=False)`` (standardised-looking output);
* ``"bn"`` - ZSKT: ``BatchNorm2d(C, affine=True)``;
* ``"sigmoid"`` - Fast-DFKD: ``sigmoid`` pixels in [0, 1], then the dataset's normalisation
  ``(x - mean) / std`` so the output lives in the same space as the (standardised) real data.

``bn_eps=0.8`` reproduces a quirk of DAFL's official code (``BatchNorm2d(128, 0.8)`` passes 0.8 as
``eps``); like the official code it applies to the two conv blocks only, while the first BN (DAFL's
``conv_blocks0``) and the output BN keep PyTorch's 1e-5. The default ``bn_eps`` is 1e-5 (DFAD, ZSKT,
Fast-DFKD).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from condense.utils import UserError

__all__ = ["Generator", "HEADS", "sample_latents"]

HEADS = ("tanh_bn", "bn", "sigmoid")


class Generator(nn.Module):
    """``G(z)``: latents ``(B, nz)`` -> images ``(B, C, H, W)`` (H, W divisible by 4)."""

    def __init__(
        self,
        nz: int,
        channels: int,
        image_size: int | tuple[int, int],
        *,
        ngf: int = 64,
        head: str = "tanh_bn",
        bn_eps: float = 1e-5,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if nz < 1 or ngf < 1 or channels < 1:
            raise UserError(f"generator needs nz, ngf, channels >= 1, got {nz}, {ngf}, {channels}")
        if h % 4 or w % 4 or h < 4 or w < 4:
            raise UserError(f"generator image size must be a multiple of 4, got {(h, w)} (load the dataset with resize=)")
        if head not in HEADS:
            raise UserError(f"unknown generator head {head!r}; choose from {', '.join(HEADS)}")
        self.nz, self.channels, self.image_size, self.head = nz, channels, (h, w), head
        self.init = (h // 4, w // 4)
        self.fc = nn.Linear(nz, 2 * ngf * self.init[0] * self.init[1])
        self.bn0 = nn.BatchNorm2d(2 * ngf)  # default eps, as DAFL's conv_blocks0
        self.block1 = nn.Sequential(nn.Conv2d(2 * ngf, 2 * ngf, 3, padding=1), nn.BatchNorm2d(2 * ngf, eps=bn_eps), nn.LeakyReLU(0.2))
        self.block2 = nn.Sequential(nn.Conv2d(2 * ngf, ngf, 3, padding=1), nn.BatchNorm2d(ngf, eps=bn_eps), nn.LeakyReLU(0.2))
        self.to_image = nn.Conv2d(ngf, channels, 3, padding=1)
        self.out_bn = nn.BatchNorm2d(channels, affine=head == "bn") if head != "sigmoid" else None
        mean_t = torch.tensor(list(mean) if mean is not None else [0.0] * channels).view(1, -1, 1, 1)
        std_t = torch.tensor(list(std) if std is not None else [1.0] * channels).view(1, -1, 1, 1)
        if mean_t.numel() != channels or std_t.numel() != channels or (std_t <= 0).any():
            raise UserError(f"mean/std must have {channels} entries and std > 0")
        self.register_buffer("pixel_mean", mean_t, persistent=True)
        self.register_buffer("pixel_std", std_t, persistent=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.nz:
            raise UserError(f"latents must have shape (B, {self.nz}), got {tuple(z.shape)}")
        x = self.bn0(self.fc(z).view(len(z), -1, *self.init))
        x = self.block1(F.interpolate(x, scale_factor=2))
        x = self.to_image(self.block2(F.interpolate(x, scale_factor=2)))
        if self.head == "tanh_bn":
            return self.out_bn(torch.tanh(x))
        if self.head == "bn":
            return self.out_bn(x)
        return (torch.sigmoid(x) - self.pixel_mean) / self.pixel_std


def sample_latents(n: int, nz: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard-normal latents ``(n, nz)`` drawn on the CPU from ``generator`` (device-independent values)."""
    return torch.randn(n, nz, generator=generator).to(device)

