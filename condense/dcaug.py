"""DC's own evaluation augmentation: the non-differentiable per-image crop / scale / rotate / noise.

Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021 (Sec. 4: "we apply
... data augmentation (crop, scale and rotate) only for MNIST"); official VICO-UoE/DatasetCondensation
``utils.py``: ``augment`` (the operations) and ``get_daparam`` (when they are used).  DC evaluates
its sets *without* DSA and trains each evaluation network with this augmentation (``epoch('train',
..., aug=True)``); DSA, when on, replaces it (``dc_aug_param`` is muted).

:func:`dc_augment_for` is ``get_daparam``: ``crop_scale_rotate`` for MNIST, ``crop_noise`` for a
BatchNorm ConvNet ("makes model training with Batch Norm layer easier"), nothing otherwise (so on
``digits`` and Fashion-MNIST DC's protocol has no augmentation at all). Parameters: crop 4 pixels,
scale 0.2, rotate 45 degrees, noise 0.001.

:class:`DCAugment` picks one operation of the strategy per image, uniformly, and applies it as the
official code does:

* ``crop``: pad by ``crop`` pixels with each channel's batch mean, take the window at a random offset
  in ``[0, 2 crop)`` per axis (so shifts of ``-crop .. crop - 1``);
* ``scale``: nearest-neighbour resize to ``(int(u1 H), int(u2 H))`` with ``u ~ U(1 - s, 1 + s)`` (both
  sides from the *height*, as officially; the same on square images), centred on a zero canvas, centre crop;
* ``rotate``: ``scipy.ndimage.rotate`` (cubic spline, the canvas grows, fill = mean of the channel means)
  by an integer angle in ``[-rotate, rotate)``, centre crop;
* ``noise``: ``x + noise * N(0, 1)``.

Deviation: random numbers come from the caller's ``torch.Generator`` (one stream, reproducible),
not numpy's global state; the distributions are the official ones. The input batch is not modified.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .utils import UserError

__all__ = ["DCAugment", "dc_augment_for", "DC_OPS"]

DC_OPS = ("crop", "scale", "rotate", "noise")


class DCAugment:
    """DC's ``augment``: one of ``strategy``'s operations per image (see the module docstring)."""

    def __init__(self, strategy: str, *, crop: int = 4, scale: float = 0.2, rotate: int = 45, noise: float = 0.001) -> None:
        ops = tuple(o for o in strategy.split("_") if o)
        unknown = [o for o in ops if o not in DC_OPS]
        if not ops or unknown:
            raise UserError(f"DC augmentation strategy {strategy!r}: operations must be among {', '.join(DC_OPS)}")
        self.strategy, self.ops = strategy, ops
        self.crop, self.scale, self.rotate, self.noise = int(crop), float(scale), int(rotate), float(noise)

    def __repr__(self) -> str:
        return f"DCAugment({self.strategy!r})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean = x.detach().mean(dim=(0, 2, 3))  # per channel, over the whole batch, before any change
        cval = float(mean.mean()) if "rotate" in self.ops else 0.0  # rotation fill: one host read per batch
        choice = torch.randint(len(self.ops), (len(x),), generator=generator).tolist()
        return torch.stack([self._apply(self.ops[k], img, mean, cval, generator) for k, img in zip(choice, x.detach())])

    def _apply(self, op: str, img: torch.Tensor, mean: torch.Tensor, cval: float, gen: torch.Generator | None) -> torch.Tensor:
        h = img.shape[-2]
        if op == "crop":
            r, c = torch.randint(2 * self.crop, (2,), generator=gen).tolist()
            return crop_shift(img, mean, self.crop, r, c)
        if op == "scale":
            u = (1 - self.scale) + 2 * self.scale * torch.rand(2, generator=gen, dtype=torch.float64)
            return rescale(img, int(u[0] * h), int(u[1] * h))
        if op == "rotate":
            angle = int(torch.randint(-self.rotate, self.rotate, (1,), generator=gen))
            return rotate(img, angle, cval)
        return img + self.noise * torch.randn(img.shape, generator=gen, dtype=img.dtype).to(img.device)


def crop_shift(img: torch.Tensor, mean: torch.Tensor, crop: int, r: int, c: int) -> torch.Tensor:
    """The ``H x W`` window at ``(r, c)`` of ``img`` padded by ``crop`` pixels of the channel means."""
    ch, h, w = img.shape
    canvas = mean.to(img).view(ch, 1, 1).expand(ch, h + 2 * crop, w + 2 * crop).clone()
    canvas[:, crop : crop + h, crop : crop + w] = img
    return canvas[:, r : r + h, c : c + w]


def rescale(img: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """Nearest resize to ``nh x nw``, centred on a zero canvas, centre ``H x W`` crop (official ``scalefun``)."""
    ch, h, w = img.shape
    tmp = F.interpolate(img[None], [nh, nw])[0]
    side = max(nh, nw, h, w)
    canvas = img.new_zeros(ch, side, side)
    r, c = (side - nh) // 2, (side - nw) // 2
    canvas[:, r : r + nh, c : c + nw] = tmp
    r, c = (side - h) // 2, (side - w) // 2
    return canvas[:, r : r + h, c : c + w]


def rotate(img: torch.Tensor, angle: int, cval: float) -> torch.Tensor:
    """``scipy.ndimage.rotate`` by ``angle`` degrees (grown canvas filled with ``cval``), centre crop."""
    from scipy.ndimage import rotate as nd_rotate  # lazy: scipy.ndimage only when MNIST is augmented

    out = nd_rotate(img.cpu().numpy(), angle=angle, axes=(-2, -1), cval=cval)
    h, w = img.shape[-2:]
    r, c = (out.shape[-2] - h) // 2, (out.shape[-1] - w) // 2
    return torch.as_tensor(out[:, r : r + h, c : c + w].copy(), dtype=img.dtype, device=img.device)


def dc_augment_for(dataset: str, *, batchnorm: bool) -> DCAugment | None:
    """Official ``get_daparam``: MNIST -> crop/scale/rotate; a BatchNorm ConvNet -> crop/noise (wins); else none."""
    if batchnorm:
        return DCAugment("crop_noise")
    if dataset == "mnist":
        return DCAugment("crop_scale_rotate")
    return None
