"""The dataset object, its per-class sampler, validation splits and ZCA whitening.

Images are returned as float32 tensors ``(N, C, H, W)`` standardised with the per-channel
constants used by the dataset-distillation literature (DC/DSA/DM/MTT ``utils.get_dataset``).
With ``zca=True`` they are instead ZCA-whitened exactly as MTT does it (GeorgeCazenavette/
mtt-distillation ``utils.py`` ``get_dataset``: ``transforms.ToTensor()`` only -- raw ``[0, 1]``
pixels, *no* mean/std standardisation -- then Kornia's ``ZCAWhitening(eps=0.1, compute_inv=True)``
fitted on the training split and applied to both splits); see :class:`ZCA`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Union

import torch

from ..utils import UserError

if TYPE_CHECKING:
    from .store import ImageStore

__all__ = ["ImageDataset", "ZCA", "ClassSampler", "split_validation", "fit_zca", "Images"]

Images = Union[torch.Tensor, "ImageStore"]  # a float tensor, or uint8 rows on disk standardised per read


class ZCA:
    """ZCA whitening ``x -> (x - mu) W`` with ``W = U (S + eps)^{-1/2} U^T`` of the train covariance.

    Kornia's ``ZCAWhitening(eps, compute_inv=True)`` (``kornia.enhance.zca_mean``) as MTT uses it: the
    mean ``mu`` and the unbiased covariance ``C = U S U^T`` (divisor ``N - 1``) of the flattened
    images, ``eps`` added to the eigenvalues; inverse ``x -> x U (S + eps)^{1/2} U^T + mu``. MTT fits it
    on raw ``[0, 1]`` pixels (:func:`load_dataset` does the same). Kornia factorises ``C`` with an SVD,
    here ``eigh`` (the same ``U``, ``S`` for a symmetric PSD matrix), in float64 (MTT: float32 on the GPU).
    The state (``mu``, ``U``, ``S``, ``eps``) is what a :class:`~condense.synset.SyntheticSet` stores
    to undo the whitening (:meth:`state_dict`, :meth:`from_state`).
    """

    def __init__(self, eps: float = 0.1) -> None:
        if not eps > 0:
            raise UserError(f"zca_eps must be > 0, got {eps}")
        self.eps = float(eps)
        self.mean: torch.Tensor | None = None
        self.eigvec: torch.Tensor | None = None
        self.eigval: torch.Tensor | None = None
        self.transform: torch.Tensor | None = None
        self.inverse: torch.Tensor | None = None

    def fit(self, x: torch.Tensor) -> "ZCA":
        flat = x.reshape(len(x), -1).double()
        n, d = flat.shape
        if n < 2:
            raise UserError("ZCA needs at least two training images")
        mean = flat.mean(0)
        centred = flat - mean
        if n - 1 < d:  # rank <= n - 1: thin SVD of the data; the null space has eigenvalue 0 (same W, far cheaper)
            _, sv, vt = torch.linalg.svd(centred, full_matrices=False)
            return self._set(mean, vt.T, sv**2 / (n - 1))
        eigval, eigvec = torch.linalg.eigh(centred.T @ centred / (n - 1))
        return self._set(mean, eigvec, eigval.clamp_min(0))

    def _set(self, mean: torch.Tensor, eigvec: torch.Tensor, eigval: torch.Tensor) -> "ZCA":
        """``U`` may hold only the ``r`` leading eigenvectors (``D x r``); the rest have eigenvalue 0:
        ``W = U diag((S + eps)^-1/2 - eps^-1/2) U^T + eps^-1/2 I`` (and likewise the inverse)."""
        self.mean, self.eigvec, self.eigval = mean.double(), eigvec.double(), eigval.double()
        eye = torch.eye(len(self.mean), dtype=torch.float64)

        def matrix(fn) -> torch.Tensor:
            if self.eigvec.shape[1] == len(self.mean):
                return (self.eigvec * fn(self.eigval + self.eps)) @ self.eigvec.T
            null = fn(torch.tensor(self.eps, dtype=torch.float64))
            return (self.eigvec * (fn(self.eigval + self.eps) - null)) @ self.eigvec.T + null * eye

        self.transform, self.inverse = matrix(torch.rsqrt), matrix(torch.sqrt)
        return self

    def state_dict(self) -> dict:
        """Plain tensors (float32) and ``eps``: loadable with ``torch.load(weights_only=True)``."""
        if self.mean is None or self.eigvec is None or self.eigval is None:
            raise RuntimeError("ZCA.fit must be called first")
        return {"eps": self.eps, "mean": self.mean.float(), "eigvec": self.eigvec.float(), "eigval": self.eigval.float()}

    @classmethod
    def from_state(cls, state: dict) -> "ZCA":
        try:
            return cls(float(state["eps"]))._set(state["mean"], state["eigvec"], state["eigval"])
        except (KeyError, TypeError) as exc:
            raise UserError(f"damaged ZCA state ({exc})") from exc

    def matches(self, other: "ZCA", rtol: float = 1e-3) -> bool:
        """Same eps, mean and spectrum (up to float32 storage): the same fitted transform."""
        if self.mean is None or other.mean is None or self.mean.shape != other.mean.shape or self.eps != other.eps:
            return False
        if self.eigval.shape != other.eigval.shape:
            return False
        return bool(torch.allclose(self.mean, other.mean, rtol=rtol, atol=1e-5)
                    and torch.allclose(self.eigval, other.eigval, rtol=rtol, atol=1e-5 * float(other.eigval.max())))  # fmt: skip

    def _apply(self, x: torch.Tensor, matrix: torch.Tensor | None, forward: bool) -> torch.Tensor:
        if matrix is None or self.mean is None:
            raise RuntimeError("ZCA.fit must be called first")
        flat = x.reshape(len(x), -1).to(matrix.dtype)
        mean, mat = self.mean.to(x.device), matrix.to(x.device)
        out = (flat - mean) @ mat if forward else flat @ mat + mean
        return out.to(x.dtype).reshape(x.shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, self.transform, True)

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, self.inverse, False)


@dataclass
class ImageDataset:
    """A standardised image classification dataset.

    ``train_x``/``test_x`` are float tensors (in memory) or :class:`~condense.data.store.ImageStore`
    views of an on-disk uint8 cache read per batch; both give ``len``, ``.shape`` and ``x[idx]`` (standardised
    float rows), which is all methods, experts and evaluation use. ``source`` records how the set was
    loaded (loader, root, options), so a synthetic set can be evaluated from the same data later.
    """

    name: str
    train_x: Images
    train_y: torch.Tensor
    test_x: Images
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] = field(default_factory=list)
    zca: ZCA | None = None
    fingerprint: str = ""  # content fingerprint of the files read (condense.safeio.fingerprint_files)
    source: dict[str, Any] = field(default_factory=dict)  # loader, root, options, storage (JSON-friendly)

    @staticmethod
    def from_arrays(*args: Any, **kwargs: Any) -> "ImageDataset":
        """uint8 or float images in any layout, in memory: :func:`condense.data.loaders.from_arrays`."""
        from .loaders import from_arrays

        return from_arrays(*args, **kwargs)

    @staticmethod
    def from_folder(root: Any, **kwargs: Any) -> "ImageDataset":
        """``ROOT/<class>/*.png`` and friends: :func:`condense.data.loaders.from_folder`."""
        from .loaders import from_folder

        return from_folder(root, **kwargs)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def class_counts(self) -> list[int]:
        return torch.bincount(self.train_y, minlength=self.num_classes).tolist()

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Map standardised (and possibly ZCA-whitened) images back to ``[0, 1]`` pixel space."""
        if self.zca is not None:
            x = self.zca.invert(x)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)

    def describe(self) -> dict:
        """JSON-friendly description stored in artifacts' metadata."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "channels": self.channels,
            "image_size": list(self.image_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "zca": self.zca is not None,
            "zca_eps": self.zca.eps if self.zca is not None else None,
            "train_size": len(self.train_y),
            "test_size": len(self.test_y),
            **self.source,
        }


class ClassSampler:
    """Class-balanced index of a label vector, for sampling real batches of one class."""

    def __init__(self, labels: torch.Tensor, num_classes: int | None = None) -> None:
        labels = labels.cpu()
        self.num_classes = int(num_classes if num_classes is not None else labels.max().item() + 1)
        self._index = [torch.nonzero(labels == c, as_tuple=True)[0] for c in range(self.num_classes)]

    def count(self, c: int) -> int:
        return len(self._index[c])

    def indices(self, c: int) -> torch.Tensor:
        return self._index[c]

    def sample(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` indices of class ``c``: without replacement when possible, else with replacement."""
        idx = self._index[c]
        if len(idx) == 0:
            raise UserError(f"class {c} has no examples")
        if n <= len(idx):
            return idx[torch.randperm(len(idx), generator=generator)[:n]]
        return idx[torch.randint(len(idx), (n,), generator=generator)]


def split_validation(dataset: ImageDataset, fraction: float = 0.2, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Hold out a class-stratified ``fraction`` of the training split for model selection.

    Returns ``(fit, val)``: both train on the remaining training images; ``fit`` keeps the real test
    split, ``val`` has the held-out images as its test split. Select hyper-parameters on ``val``,
    report ``fit``'s test accuracy once. Statistics (normalisation, ZCA) are left as loaded.
    """
    if not 0.0 < fraction < 1.0:
        raise UserError(f"validation fraction must be in (0, 1), got {fraction}")
    gen = torch.Generator().manual_seed(int(seed))
    sampler = ClassSampler(dataset.train_y, dataset.num_classes)
    held = []
    for c in range(dataset.num_classes):
        idx = sampler.indices(c)
        n = int(round(fraction * len(idx)))
        if n < 1 or n >= len(idx):
            raise UserError(f"class {c} has {len(idx)} training images: too few to hold out {fraction:.0%} of them")
        held.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
    val_idx = torch.cat(held).sort().values
    keep = torch.ones(len(dataset.train_y), dtype=torch.bool)
    keep[val_idx] = False
    fit = replace(dataset, train_x=_rows(dataset.train_x, keep), train_y=dataset.train_y[keep])
    val = replace(fit, test_x=_rows(dataset.train_x, val_idx), test_y=dataset.train_y[val_idx])
    return fit, val


def _rows(x: Images, idx: torch.Tensor) -> Images:
    """``x[idx]`` that stays on disk for an on-disk store."""
    return x.take(idx) if hasattr(x, "take") and not isinstance(x, torch.Tensor) else x[idx]


def fit_zca(x: Images, eps: float, max_images: int, seed: int = 0, chunk: int = 4096) -> tuple[ZCA, str]:
    """Fit :class:`ZCA` on training images ``x`` without holding them as float, and say how.

    ``D x D`` (``D = C*H*W``) in float64 within 1 GiB and ``N > D``: the covariance of all images,
    accumulated over chunks in two passes (mean, then ``sum (x - mu)^T (x - mu)``) -- the in-memory
    :meth:`ZCA.fit` up to summation order. ``N <= D`` (small sets): all images at once, exactly
    :meth:`ZCA.fit`. Otherwise ``max_images`` seeded random training images (MTT fits on all; a
    covariance of 128x128x3 images would need 18 GiB).
    """
    n, d = len(x), int(torch.tensor(x.shape[1:]).prod())
    if n - 1 < d and n * d * 8 <= 1 << 30:
        return ZCA(eps).fit(x[:]), f"all {n} training images"
    if d * d * 8 > 1 << 30:
        k = min(n, int(max_images))
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values
        return ZCA(eps).fit(x[idx]), f"{k} random training images (seed {seed}) of {n}"
    total = torch.zeros(d, dtype=torch.float64)
    for i in range(0, n, chunk):
        total += x[i : i + chunk].reshape(-1, d).double().sum(0)
    mean = total / n
    cov = torch.zeros(d, d, dtype=torch.float64)
    for i in range(0, n, chunk):
        c = x[i : i + chunk].reshape(-1, d).double() - mean
        cov.addmm_(c.T, c)
    eigval, eigvec = torch.linalg.eigh(cov / (n - 1))
    return ZCA(eps)._set(mean, eigvec, eigval.clamp_min(0)), f"all {n} training images (streamed covariance)"
