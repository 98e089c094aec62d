"""``SyntheticSet``: the one artifact every distillation method produces and every evaluator reads."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .data import ZCA
from .safeio import check_labels, check_values
from .utils import UserError, atomic_save, atomic_write_bytes, package_versions, safe_load

__all__ = ["SyntheticSet", "FORMAT", "dsa_record"]

FORMAT = "condense.SyntheticSet/1"


def dsa_record(dsa: Any, protocol: str) -> dict[str, Any]:
    """Metadata a method stores so that evaluation follows its paper: the evaluation protocol
    (:data:`condense.evaluate.PROTOCOLS`) and the DSA it was distilled with (``None``: none)."""
    enabled = dsa is not None and dsa.enabled
    return {"train_dsa": enabled, "dsa": dsa.describe() if enabled else None, "protocol": protocol}


@dataclass
class SyntheticSet(Dataset):
    """Synthetic images with hard (``(N,)`` int64) or soft (``(N, K)`` float) labels.

    ``lr`` is the learned inner learning rate (MTT/AST) that evaluation uses when present.
    ``meta`` holds JSON-like provenance: method, dataset description (normalisation, ZCA), ipc,
    seed, the full config, the evaluation ``protocol`` of the method's paper, the ``dsa`` it was
    distilled with (strategy, mode, align_corners), package versions and wall time. ``zca`` is the
    fitted whitening state of a ZCA set (:meth:`condense.data.ZCA.state_dict`), so :meth:`pixels`
    shows un-whitened images without the dataset.
    """

    images: torch.Tensor
    labels: torch.Tensor
    lr: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    zca: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        """Validate like a command line does (this is a public API): one :class:`UserError` per mistake."""
        for name in ("images", "labels"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                raise UserError(f"SyntheticSet {name} must be a torch.Tensor, got {type(value).__name__}")
            if value.is_complex() or value.is_sparse:
                raise UserError(f"SyntheticSet {name} must be a dense real tensor, got {value.dtype} ({value.layout})")
        if not isinstance(self.meta, dict):
            raise UserError(f"SyntheticSet meta must be a dict, got {type(self.meta).__name__}")
        if self.images.dim() != 4:
            raise UserError(f"synthetic images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.dim() not in (1, 2):
            raise UserError(f"labels must be (N,) class ids or (N, K) soft labels, got {tuple(self.labels.shape)}")
        if self.labels.shape[0] != self.images.shape[0]:
            raise UserError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")
        if self.images.shape[0] == 0:
            raise UserError("a SyntheticSet needs at least one image")
        self.images = self.images.detach().cpu().float().contiguous()
        self.labels = self.labels.detach().cpu()
        check_values(self.images, "synthetic images")
        k = (self.meta.get("dataset") or {}).get("num_classes") if isinstance(self.meta.get("dataset"), dict) else None
        # class ids are checked before the cast to int64, which would truncate 1.7 to 1 silently
        check_labels(self.labels, int(k) if isinstance(k, int) else None, what="synthetic set labels")
        self.labels = self.labels.long() if self.labels.dim() == 1 else self.labels.float()
        if self.lr is not None:
            try:
                lr = float(self.lr)
            except (TypeError, ValueError):
                raise UserError(f"learned lr must be a number, got {self.lr!r}") from None
            if isinstance(self.lr, bool) or not math.isfinite(lr) or lr <= 0:
                raise UserError(f"learned lr must be finite and > 0, got {self.lr}")
            self.lr = lr

    # ---------------------------------------------------------------- Dataset protocol
    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    @property
    def soft(self) -> bool:
        return self.labels.dim() == 2

    @property
    def num_classes(self) -> int:
        if self.soft:
            return int(self.labels.shape[1])
        return int(self.meta.get("dataset", {}).get("num_classes", int(self.labels.max()) + 1))

    def hard_labels(self) -> torch.Tensor:
        return self.labels.argmax(1) if self.soft else self.labels

    @property
    def ipc(self) -> int:
        return int(torch.bincount(self.hard_labels()).max())

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write one file atomically (temp file + rename); readable with ``weights_only=True``."""
        meta = dict(self.meta)
        meta.setdefault("versions", package_versions())
        return atomic_save(
            {"format": FORMAT, "images": self.images, "labels": self.labels, "lr": self.lr, "meta": meta, "zca": self.zca}, path
        )

    @classmethod
    def load(cls, path: str | Path) -> "SyntheticSet":
        """Load a file written by :meth:`save`; foreign or corrupt files raise :class:`UserError`."""
        obj = safe_load(path, expected_format=FORMAT, what="SyntheticSet")
        try:
            return cls(images=obj["images"], labels=obj["labels"], lr=obj.get("lr"), meta=dict(obj.get("meta") or {}),
                       zca=obj.get("zca"))  # fmt: skip
        except KeyError as exc:
            raise UserError(f"{path} is a damaged SyntheticSet (missing {exc})") from exc
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None

    # ---------------------------------------------------------------- visualisation
    @property
    def protocol(self) -> str:
        """The evaluation protocol of the method's paper (``dc`` when the set does not say)."""
        return str(self.meta.get("protocol") or "dc")

    def pixels(self) -> torch.Tensor:
        """Images mapped back to ``[0, 1]``: ZCA undone with the stored state, then the stored normalisation.

        (A ZCA set without a stored state, written before the state was recorded: min-max per image.)
        """
        ds = self.meta.get("dataset", {})
        x = self.images
        if ds.get("zca") and self.zca is not None:
            x = ZCA.from_state(self.zca).invert(x)
        elif ds.get("zca"):
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            hi = x.amax(dim=(1, 2, 3), keepdim=True)
            return (x - lo) / (hi - lo).clamp_min(1e-8)
        mean = torch.tensor(ds.get("mean", [0.0] * x.shape[1])).view(1, -1, 1, 1)
        std = torch.tensor(ds.get("std", [1.0] * x.shape[1])).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)

    def grid(self, max_per_class: int = 10, pad: int = 1) -> tuple[torch.Tensor, list[int]]:
        """The images as one ``(H', W', C)`` array in ``[0, 1]``: a row per class, up to ``max_per_class``
        columns, ``pad`` white pixels between cells; also the class of each row."""
        pix, labels = self.pixels(), self.hard_labels()
        classes = sorted(set(labels.tolist()))
        cols = min(max_per_class, max(int((labels == c).sum()) for c in classes))
        c, h, w = pix.shape[1:]
        out = torch.ones(len(classes) * (h + pad) + pad, cols * (w + pad) + pad, c)
        for r, cls in enumerate(classes):
            for k, i in enumerate(torch.nonzero(labels == cls, as_tuple=True)[0][:cols].tolist()):
                top, left = pad + r * (h + pad), pad + k * (w + pad)
                out[top : top + h, left : left + w] = pix[i].permute(1, 2, 0)
        return out, classes

    def to_png(self, path: str | Path, *, max_per_class: int = 10, title: str | None = None) -> Path:
        """Save a grid (one row per class, up to ``max_per_class`` columns) as a PNG via matplotlib.

        One ``imshow`` of :meth:`grid` (a subplot per image took ~2 s for 100 images), class names on the rows.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if title is None and self.meta.get("full_size"):
            title = f"FULL SIZE, not a condensed set: {self.meta['full_size']}"
        img, classes = self.grid(max_per_class)
        cell = (img.shape[0] - 1) / len(classes)
        cols = (img.shape[1] - 1) / cell
        fig, ax = plt.subplots(figsize=(max(2.0, cols * 0.9), len(classes) * 0.9))
        gray = img.shape[-1] == 1
        ax.imshow(img.squeeze(-1).numpy() if gray else img.numpy(), cmap="gray" if gray else None, vmin=0, vmax=1,
                  interpolation="nearest")  # fmt: skip
        names = self.meta.get("class_names") or []
        ax.set_yticks([cell * (r + 0.5) for r in range(len(classes))])
        ax.set_yticklabels([str(names[c]) if c < len(names) else str(c) for c in classes], fontsize=6)
        ax.set_xticks([])
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_title(title or f"{self.meta.get('method', 'synthetic')} · {self.meta.get('dataset', {}).get('name', '')} · {len(self)} images", fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        return atomic_write_bytes(buf.getvalue(), path)
