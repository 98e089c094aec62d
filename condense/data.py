"""Image datasets read from local files (no torchvision, no downloads) and a per-class sampler.

Datasets
--------
``digits``         scikit-learn's 8x8 hand-written digits (embedded, needs no files), fixed 70/30 split.
``mnist``          gzip IDX files (LeCun et al. 1998).
``fashion_mnist``  gzip IDX files (Xiao et al. 2017).
``cifar10``        ``cifar-10-batches-py`` pickle batches (Krizhevsky 2009).
``cifar100``       ``cifar-100-python`` pickles, fine labels.

Images are returned as float32 tensors ``(N, C, H, W)`` standardised with the per-channel
constants used by the dataset-distillation literature (DC/DSA/DM/MTT ``utils.get_dataset``).
With ``zca=True`` they are instead ZCA-whitened exactly as MTT does it (GeorgeCazenavette/
mtt-distillation ``utils.py`` ``get_dataset``: ``transforms.ToTensor()`` only -- raw ``[0, 1]``
pixels, *no* mean/std standardisation -- then Kornia's ``ZCAWhitening(eps=0.1, compute_inv=True)``
fitted on the training split and applied to both splits); see :class:`ZCA`.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .safeio import FLAG_BOUNDS, check_labels, check_root, fingerprint_files, fingerprint_tensors, safe_unpickle
from .utils import UserError

__all__ = ["ImageDataset", "ZCA", "ClassSampler", "load_dataset", "split_validation", "DATASETS", "read_idx"]

# Standardisation constants of the DC/DSA/DM/MTT code bases; digits: computed on our fixed train split.
_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": ((0.3061,), (0.3766,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2861,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
}

_FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


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
    """A standardised image classification dataset held in memory."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] = field(default_factory=list)
    zca: ZCA | None = None
    fingerprint: str = ""  # content fingerprint of the files read (condense.safeio.fingerprint_files)

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
    fit = replace(dataset, train_x=dataset.train_x[keep], train_y=dataset.train_y[keep])
    val = replace(fit, test_x=dataset.train_x[val_idx], test_y=dataset.train_y[val_idx])
    return fit, val


# ----------------------------------------------------------------------------------- file readers
def read_idx(path: Path) -> np.ndarray:
    """Read a (optionally gzip-compressed) IDX file into a numpy array; damage is a one-line :class:`UserError`."""
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        kind = "truncated gzip stream" if isinstance(exc, EOFError) else f"not a valid gzip file: {exc}"
        raise UserError(f"{path} cannot be read ({kind})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path} is truncated: its header declares {ndim} dimensions but holds {len(raw)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated: header says {dims}, found {data.size} values")
    return data.reshape(dims)


def _find(root: Path, subdirs: Sequence[str], files: Sequence[str], dataset: str) -> Path:
    """The first of ``root/<sub>`` that holds all ``files``; else a :class:`UserError` naming them."""
    check_root(root, f"dataset {dataset!r}")
    candidates = [root / s if s else root for s in subdirs]
    for cand in candidates:
        if all((cand / f).is_file() for f in files):
            return cand
    present = [c for c in candidates if c.is_dir()]
    missing = [f for f in files if not any((c / f).is_file() for c in present)]
    where = ", ".join(str(c) for c in candidates)
    raise UserError(
        f"dataset {dataset!r}: files missing under root {root}: expected {', '.join(files)} in one of [{where}]"
        + (f"; missing: {', '.join(missing)}" if missing else "")
    )


def _idx_loader(dataset: str, subdirs: Sequence[str]) -> Callable[[Path], tuple[np.ndarray, ...]]:
    files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]

    def load(root: Path) -> tuple[np.ndarray, ...]:
        base = _find(root, subdirs, files, dataset)
        xtr, ytr, xte, yte = (read_idx(base / f) for f in files)
        for x, y, fx, fy in ((xtr, ytr, files[0], files[1]), (xte, yte, files[2], files[3])):
            if x.ndim != 3 or y.ndim != 1:
                raise UserError(f"dataset {dataset!r}: {base / fx} must hold (N, H, W) images and {base / fy} (N,) labels")
            if len(x) != len(y):
                raise UserError(f"dataset {dataset!r}: {base / fx} has {len(x)} images but {base / fy} {len(y)} labels")
        return xtr[:, None], ytr, xte[:, None], yte, [base / f for f in files]

    return load


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR pickle (restricted unpickler) as ``(images (N, 3, 32, 32) uint8, labels (N,))``, validated."""
    b = safe_unpickle(path, what="CIFAR batch")
    if not isinstance(b, dict) or "data" not in b or label_key not in b:
        keys = sorted(map(str, b)) if isinstance(b, dict) else type(b).__name__
        raise UserError(f"{path} is not a CIFAR batch: expected keys 'data' and {label_key!r}, found {keys}")
    data, labels = np.asarray(b["data"]), np.asarray(b[label_key])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise UserError(f"{path}: 'data' must be (N, 3072) uint8, found {data.shape} {data.dtype}")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: {len(data)} images but {labels.size} labels of type {labels.dtype}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _load_cifar10(root: Path) -> tuple[np.ndarray, ...]:
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    base = _find(root, ["", "cifar-10-batches-py", "cifar10/cifar-10-batches-py"], files, "cifar10")
    xs, ys = zip(*(_cifar_batch(base / f, "labels") for f in files))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5], [base / f for f in files]


def _load_cifar100(root: Path) -> tuple[np.ndarray, ...]:
    base = _find(root, ["", "cifar-100-python", "cifar100/cifar-100-python"], ["train", "test"], "cifar100")
    (xtr, ytr), (xte, yte) = (_cifar_batch(base / split, "fine_labels") for split in ("train", "test"))
    return xtr, ytr, xte, yte, [base / "train", base / "test"]


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1797 images, values 0..16) and labels, as ``load_digits`` returns them.

    Read from the CSV scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``, parsed as
    ``load_digits`` parses it) without importing scikit-learn, whose import (scipy.stats included)
    costs ~2-3 s of every digits run; ``load_digits`` itself where that file is not found.
    """
    spec = importlib.util.find_spec("sklearn")
    csv = next((Path(loc) / "datasets" / "data" / "digits.csv.gz" for loc in (spec.submodule_search_locations or [])), None) if spec else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images, d.target
    with gzip.open(csv, mode="rt", encoding="utf-8") as fh:
        data = np.loadtxt(fh, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def _load_digits(_: Path | None) -> tuple[np.ndarray, ...]:
    images, target = _digits_arrays()
    x = (images / 16.0 * 255.0).round().astype(np.uint8)[:, None]  # 0..16 -> 0..255 grey levels
    y = target.astype(np.int64)
    rng = np.random.RandomState(0)  # legacy RandomState: the split is fixed across numpy versions
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: int(round(0.3 * (y == c).sum()))] for c in range(10)])
    mask = np.ones(len(y), bool)
    mask[test] = False
    return x[mask], y[mask], x[~mask], y[~mask], []


_LOADERS: dict[str, tuple[Callable, int, list[str]]] = {
    "digits": (_load_digits, 10, [str(i) for i in range(10)]),
    "mnist": (_idx_loader("mnist", ["", "MNIST/raw", "mnist", "mnist/MNIST/raw"]), 10, [str(i) for i in range(10)]),
    "fashion_mnist": (
        _idx_loader("fashion_mnist", ["", "FashionMNIST/raw", "fashion_mnist", "fashion_mnist/FashionMNIST/raw"]),
        10,
        _FMNIST_CLASSES,
    ),
    "cifar10": (_load_cifar10, 10, _CIFAR10_CLASSES),
    "cifar100": (_load_cifar100, 100, [str(i) for i in range(100)]),
}
DATASETS = tuple(_LOADERS)
_ALIASES = {"fashionmnist": "fashion_mnist", "fmnist": "fashion_mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}


MIN_RESIZE, MAX_RESIZE = FLAG_BOUNDS["resize"]  # the same bounds as the CLIs' --resize


def _available_memory() -> int:
    """Physical memory in bytes (a bound for allocations we are asked to make up front)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _to_tensor(x: np.ndarray, mean: Sequence[float], std: Sequence[float], resize: int | None) -> torch.Tensor:
    t = torch.from_numpy(np.array(x, dtype=np.uint8)).float().div_(255.0)
    if resize is not None and tuple(t.shape[-2:]) != (resize, resize):
        t = F.interpolate(t, size=(resize, resize), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (t - m) / s


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    resize: int | None = None,
    zca: bool = False,
    zca_eps: float = 0.1,
) -> ImageDataset:
    """Load ``name`` from the local ``root`` (``digits`` needs none): standardised, or (``zca``) raw ``[0, 1]``
    pixels ZCA-whitened as in MTT (``mean``/``std`` are then 0/1).

    Raises :class:`UserError` for unknown names and missing/partial files, naming the exact files.
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _LOADERS:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    loader, num_classes, class_names = _LOADERS[key]
    if key != "digits":
        if root is None:
            raise UserError(f"dataset {key!r} needs --root pointing at its local files (nothing is downloaded)")
        root = Path(root).expanduser()
    if resize is not None and (isinstance(resize, bool) or int(resize) != resize or not MIN_RESIZE <= resize <= MAX_RESIZE):
        raise UserError(f"resize must be an integer in [{MIN_RESIZE}, {MAX_RESIZE}], got {resize!r}")
    xtr, ytr, xte, yte, files = loader(root)
    for part, y in (("training", ytr), ("test", yte)):
        check_labels(torch.from_numpy(np.asarray(y, np.int64)), num_classes, what=f"dataset {key!r} {part} labels"
                     + (f" ({files[0].parent})" if files else ""))  # fmt: skip
    if resize is not None:
        need = (len(xtr) + len(xte)) * xtr.shape[1] * resize * resize * 4
        if need > _available_memory():
            raise UserError(f"--resize {resize} needs {need / 2**30:.1f} GiB for {key!r}, more than this machine has")
    mean, std = _STATS[key]
    if zca:  # MTT: ToTensor() only (raw [0, 1] pixels, no standardisation), then ZCA fitted on them
        mean, std = (0.0,) * len(mean), (1.0,) * len(std)
    ds = ImageDataset(
        name=key,
        train_x=_to_tensor(xtr, mean, std, resize),
        train_y=torch.from_numpy(np.asarray(ytr, np.int64)),
        test_x=_to_tensor(xte, mean, std, resize),
        test_y=torch.from_numpy(np.asarray(yte, np.int64)),
        num_classes=num_classes,
        mean=mean,
        std=std,
        class_names=list(class_names),
        fingerprint=fingerprint_files(files) if files else fingerprint_tensors({"x": torch.from_numpy(xtr), "y": torch.from_numpy(ytr)}),
    )
    if zca:
        ds.zca = ZCA(zca_eps).fit(ds.train_x)
        ds.train_x, ds.test_x = ds.zca(ds.train_x), ds.zca(ds.test_x)
    return ds
