"""The dataset registry: every loader reads local files (no downloads) into uint8 ``(N, C, H, W)`` images.

Loaders
-------
``digits``         scikit-learn's 8x8 hand-written digits (embedded, needs no files), fixed 70/30 split.
``mnist``          gzip IDX files (LeCun et al. 1998).
``fashion_mnist``  gzip IDX files (Xiao et al. 2017).
``cifar10``        ``cifar-10-batches-py`` pickle batches (Krizhevsky 2009).
``cifar100``       ``cifar-100-python`` pickles, fine labels.
``svhn``           ``train_32x32.mat`` / ``test_32x32.mat`` (Netzer et al. 2011; label 10 is digit 0, as torchvision).
``imagefolder``    ``ROOT/<class>/*.{png,jpg,jpeg,bmp,webp}``; test split from ``ROOT/test|val/<class>/`` when
                   present (training classes then also from ``ROOT/train/`` if it exists), else a seeded,
                   class-stratified split (fraction and seed recorded).
``arrays``         an ``.npz`` with ``x_train, y_train, x_test, y_test`` (uint8 NHWC/NCHW/NHW, or float in [0, 1]),
                   read member by member in chunks (never whole).
``tiny_imagenet``  the official ``tiny-imagenet-200/`` tree; ``val/`` labels from ``val_annotations.txt``
                   (MTT ``utils.py`` ``Tiny``: 64x64, ImageNet mean/std, classes in sorted wnid order).
``imagenette`` ``imagewoof`` ``imagefruit`` ``imageyellow`` ``imagemeow`` ``imagesquawk``
                   the MTT ImageNet subsets (``utils.py`` ``Config``; the class ids there index the sorted
                   ILSVRC-2012 wnids, spelled out here) from an ILSVRC-style ``train/<wnid>/`` + ``val/<wnid>/``
                   tree at 128x128 (MTT: ``Resize(128)`` then ``CenterCrop(128)``; here the shorter side is
                   resized with Pillow's antialiased bilinear filter on the uint8 image, then centre-cropped,
                   before standardisation rather than after it).

Decoded image trees are always stored in the uint8 cache (decoded once); the array loaders are read
into memory when small and cached when large or when ``storage="memmap"`` (see :mod:`.store`).
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..safeio import FLAG_BOUNDS, check_root, check_type, fingerprint_files, fingerprint_tensors, safe_unpickle
from ..utils import UserError
from .core import ZCA, ImageDataset, fit_zca
from .store import CACHE_FORMAT, ImageStore, cache_path, open_cache, standardise, write_cache

__all__ = ["LoaderSpec", "LOADERS", "register_loader", "load_dataset", "from_arrays", "from_folder", "read_idx", "DATASETS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # MTT utils.py (Tiny, ImageNet subsets)
MIN_RESIZE, MAX_RESIZE = FLAG_BOUNDS["resize"]  # the same bounds as the CLIs' --resize
CHUNK_BYTES = 16 << 20  # rows per read/write chunk: about this many bytes of uint8
MEMORY_LIMIT = 2 << 30  # storage="auto": float32 sets larger than this stay on disk

_FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# MTT utils.py Config: ImageNet class ids -> wnids of the sorted ILSVRC-2012 synsets (names as in MTT's comments).
IMAGENET_SUBSETS: dict[str, tuple[tuple[str, str], ...]] = {
    "imagenette": (("n01440764", "tench"), ("n02102040", "english_springer"), ("n02979186", "cassette_player"),
                   ("n03000684", "chain_saw"), ("n03028079", "church"), ("n03394916", "french_horn"),
                   ("n03417042", "garbage_truck"), ("n03425413", "gas_pump"), ("n03445777", "golf_ball"),
                   ("n03888257", "parachute")),
    "imagewoof": (("n02096294", "australian_terrier"), ("n02093754", "border_terrier"), ("n02111889", "samoyed"),
                  ("n02088364", "beagle"), ("n02086240", "shih-tzu"), ("n02089973", "english_foxhound"),
                  ("n02087394", "rhodesian_ridgeback"), ("n02115641", "dingo"), ("n02099601", "golden_retriever"),
                  ("n02105641", "english_sheepdog")),
    "imagefruit": (("n07753275", "pineapple"), ("n07753592", "banana"), ("n07745940", "strawberry"),
                   ("n07747607", "orange"), ("n07749582", "lemon"), ("n07768694", "pomegranate"), ("n07753113", "fig"),
                   ("n07720875", "bell_pepper"), ("n07718472", "cucumber"), ("n07742313", "green_apple")),
    "imageyellow": (("n02206856", "bee"), ("n12057211", "ladys_slipper"), ("n07753592", "banana"),
                    ("n07749582", "lemon"), ("n12144580", "corn"), ("n04146614", "school_bus"),
                    ("n03530642", "honeycomb"), ("n02129165", "lion"), ("n01773157", "garden_spider"),
                    ("n01531178", "goldfinch")),
    "imagemeow": (("n02123045", "tabby_cat"), ("n02123159", "bengal_cat"), ("n02123394", "persian_cat"),
                  ("n02123597", "siamese_cat"), ("n02124075", "egyptian_cat"), ("n02129165", "lion"),
                  ("n02129604", "tiger"), ("n02128925", "jaguar"), ("n02128757", "snow_leopard"), ("n02127052", "lynx")),
    "imagesquawk": (("n01806143", "peacock"), ("n02007558", "flamingo"), ("n01818515", "macaw"), ("n02051845", "pelican"),
                    ("n02056570", "king_penguin"), ("n01614925", "bald_eagle"), ("n01843383", "toucan"),
                    ("n01518878", "ostrich"), ("n01860187", "black_swan"), ("n01819313", "cockatoo")),
}  # fmt: skip


@dataclass
class LoadOptions:
    """What a loader may be asked besides its root (recorded in the set when not the default)."""

    image_size: int | None = None
    skip_bad_images: bool = False
    test_fraction: float = 0.2
    split_seed: int = 0


@dataclass
class Split:
    """One split: every row's label up front, and a reader of the rows at sorted ``positions`` in chunks
    ``(uint8 (n, C, H, W), labels (n,))`` (a reader may drop unreadable rows with ``skip_bad_images``)."""

    labels: np.ndarray
    read: Callable[[np.ndarray], Iterator[tuple[np.ndarray, np.ndarray]]]


@dataclass
class Source:
    class_names: list[str]
    train: Split
    test: Split
    shape: Callable[[], tuple[int, int, int]]  # (C, H, W); may decode headers, so only asked when needed
    fingerprint: str
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # None: computed on the training split
    decoded: bool = False  # images decoded from files: always through the cache
    record: dict[str, Any] = field(default_factory=dict)  # facts the set records (split fraction/seed, ...)
    skipped: list[str] = field(default_factory=list)  # unreadable images left out (--skip-bad-images)


@dataclass(frozen=True)
class LoaderSpec:
    name: str
    open: Callable[[Path | None, LoadOptions], Source]
    summary: str
    needs_root: bool = True


LOADERS: dict[str, LoaderSpec] = {}
_ALIASES = {"fashionmnist": "fashion_mnist", "fmnist": "fashion_mnist", "cifar-10": "cifar10", "cifar-100": "cifar100",
            "tiny": "tiny_imagenet", "tinyimagenet": "tiny_imagenet", "folder": "imagefolder", "npz": "arrays"}  # fmt: skip


def register_loader(name: str, summary: str, *, needs_root: bool = True) -> Callable:
    def deco(fn: Callable[[Path | None, LoadOptions], Source]) -> Callable:
        LOADERS[name] = LoaderSpec(name, fn, summary, needs_root)
        return fn

    return deco


def _rows_per_chunk(shape: Sequence[int]) -> int:
    return max(1, CHUNK_BYTES // max(1, int(np.prod(shape))))


def _array_split(x: np.ndarray, y: np.ndarray) -> Split:
    """A split held in (or mapped into) memory as uint8 ``(N, C, H, W)``."""

    def read(pos: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        step = _rows_per_chunk(x.shape[1:])
        for i in range(0, len(pos), step):
            p = pos[i : i + step]
            yield np.asarray(x[p], np.uint8), y[p]

    return Split(np.asarray(y, np.int64), read)


def _array_source(xtr, ytr, xte, yte, class_names, fingerprint, stats=None, record=None) -> Source:
    shape = tuple(int(v) for v in xtr.shape[1:])
    return Source(list(class_names), _array_split(xtr, ytr), _array_split(xte, yte), lambda: shape, fingerprint,
                  stats, record=record or {})  # fmt: skip


# ----------------------------------------------------------------------------------- today's five
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


_STATS = {  # standardisation constants of the DC/DSA/DM/MTT code bases; digits: computed on our fixed train split
    "digits": ((0.3061,), (0.3766,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2861,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


def _idx_loader(dataset: str, subdirs: Sequence[str], class_names: Sequence[str]) -> Callable[[Path | None, LoadOptions], Source]:
    files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]

    def load(root: Path | None, _: LoadOptions) -> Source:
        base = _find(root, subdirs, files, dataset)
        xtr, ytr, xte, yte = (read_idx(base / f) for f in files)
        for x, y, fx, fy in ((xtr, ytr, files[0], files[1]), (xte, yte, files[2], files[3])):
            if x.ndim != 3 or y.ndim != 1:
                raise UserError(f"dataset {dataset!r}: {base / fx} must hold (N, H, W) images and {base / fy} (N,) labels")
            if len(x) != len(y):
                raise UserError(f"dataset {dataset!r}: {base / fx} has {len(x)} images but {base / fy} {len(y)} labels")
        paths = [base / f for f in files]
        return _array_source(xtr[:, None], ytr.astype(np.int64), xte[:, None], yte.astype(np.int64), class_names,
                             fingerprint_files(paths), _STATS[dataset], {"files": str(paths[0].parent)})  # fmt: skip

    return load


register_loader("mnist", "MNIST gzip IDX files")(
    _idx_loader("mnist", ["", "MNIST/raw", "mnist", "mnist/MNIST/raw"], [str(i) for i in range(10)]))
register_loader("fashion_mnist", "Fashion-MNIST gzip IDX files")(
    _idx_loader("fashion_mnist", ["", "FashionMNIST/raw", "fashion_mnist", "fashion_mnist/FashionMNIST/raw"], _FMNIST_CLASSES))


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


@register_loader("cifar10", "CIFAR-10 python pickle batches")
def _load_cifar10(root: Path | None, _: LoadOptions) -> Source:
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    base = _find(root, ["", "cifar-10-batches-py", "cifar10/cifar-10-batches-py"], files, "cifar10")
    xs, ys = zip(*(_cifar_batch(base / f, "labels") for f in files))
    return _array_source(np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5], _CIFAR10_CLASSES,
                         fingerprint_files([base / f for f in files]), _STATS["cifar10"], {"files": str(base)})  # fmt: skip


@register_loader("cifar100", "CIFAR-100 python pickles (fine labels)")
def _load_cifar100(root: Path | None, _: LoadOptions) -> Source:
    base = _find(root, ["", "cifar-100-python", "cifar100/cifar-100-python"], ["train", "test"], "cifar100")
    (xtr, ytr), (xte, yte) = (_cifar_batch(base / split, "fine_labels") for split in ("train", "test"))
    return _array_source(xtr, ytr, xte, yte, [str(i) for i in range(100)], fingerprint_files([base / "train", base / "test"]),
                         _STATS["cifar100"], {"files": str(base)})  # fmt: skip


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


@register_loader("digits", "scikit-learn's 8x8 digits (embedded; no files)", needs_root=False)
def _load_digits(_: Path | None, __: LoadOptions) -> Source:
    images, target = _digits_arrays()
    x = (images / 16.0 * 255.0).round().astype(np.uint8)[:, None]  # 0..16 -> 0..255 grey levels
    y = target.astype(np.int64)
    rng = np.random.RandomState(0)  # legacy RandomState: the split is fixed across numpy versions
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: int(round(0.3 * (y == c).sum()))] for c in range(10)])
    mask = np.ones(len(y), bool)
    mask[test] = False
    fp = fingerprint_tensors({"x": torch.from_numpy(x[mask]), "y": torch.from_numpy(y[mask])})
    return _array_source(x[mask], y[mask], x[~mask], y[~mask], [str(i) for i in range(10)], fp, _STATS["digits"])


@register_loader("svhn", "SVHN cropped digits, train_32x32.mat / test_32x32.mat")
def _load_svhn(root: Path | None, _: LoadOptions) -> Source:
    files = ["train_32x32.mat", "test_32x32.mat"]
    base = _find(root, ["", "svhn", "SVHN"], files, "svhn")
    from scipy.io import loadmat  # lazy: scipy is only needed here

    out = []
    for f in files:
        try:
            mat = loadmat(base / f)
        except (OSError, ValueError, TypeError, NotImplementedError) as exc:
            raise UserError(f"{base / f} cannot be read as a MATLAB file ({exc})") from None
        if "X" not in mat or "y" not in mat:
            raise UserError(f"{base / f} must hold 'X' (32, 32, 3, N) and 'y' (N, 1); found {sorted(k for k in mat if not k.startswith('__'))}")
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
        if x.ndim != 4 or x.shape[2] != 3 or x.dtype != np.uint8 or x.shape[3] != len(y):
            raise UserError(f"{base / f}: 'X' must be (H, W, 3, N) uint8 with N = len(y), found {x.shape} {x.dtype} and {len(y)} labels")
        y = _integer_labels(y, f"{base / f} 'y'")
        if len(y) and (y.min() < 1 or y.max() > 10):
            raise UserError(f"{base / f}: labels must be in 1..10 (10 is digit 0), found {y.min()}..{y.max()}")
        out += [np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y % 10]  # torchvision SVHN: label 10 -> 0
    return _array_source(*out, [str(i) for i in range(10)], fingerprint_files([base / f for f in files]), _STATS["svhn"],
                         {"files": str(base)})  # fmt: skip


# ----------------------------------------------------------------------------------- arrays (.npz)
def _integer_labels(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1) if np.asarray(y).ndim == 2 and np.asarray(y).shape[1] == 1 else np.asarray(y)
    if y.ndim != 1:
        raise UserError(f"{what}: labels must be one integer per image, found shape {y.shape}")
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.array_equal(y, np.round(y)):
        return y.astype(np.int64)
    raise UserError(f"{what}: labels must be integers, found {y.dtype}" + (" with non-integer values" if np.issubdtype(y.dtype, np.number) else ""))


def _layout(shape: tuple[int, ...], layout: str, what: str) -> str:
    """``nchw`` / ``nhwc`` / ``nhw`` of an image array: 4-D with 1 or 3 channels on the last axis is NHWC, on axis 1 NCHW."""
    if len(shape) == 3:
        return "nhw"
    if len(shape) != 4:
        raise UserError(f"{what}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W), found shape {shape}")
    if layout in ("nchw", "nhwc"):
        return layout
    if shape[3] in (1, 3):
        return "nhwc"
    if shape[1] in (1, 3):
        return "nchw"
    raise UserError(f"{what}: cannot tell the channel axis of shape {shape} (1 or 3 channels, first or last): pass the layout")


def _to_nchw_u8(x: np.ndarray, layout: str, what: str) -> np.ndarray:
    """uint8 or float-in-[0, 1] images of ``layout`` -> uint8 ``(n, C, H, W)`` (floats rounded to 256 levels)."""
    if layout == "nhw":
        x = x[:, None]
    elif layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise UserError(f"{what}: images must be uint8 or float in [0, 1], found {x.dtype}")
    if not np.all(np.isfinite(x)) or (x.size and (x.min() < 0 or x.max() > 1)):
        raise UserError(f"{what}: float images must be finite and in [0, 1]" + (f" (found {x.min():.4g}..{x.max():.4g})" if x.size else ""))
    return np.ascontiguousarray(np.round(x * 255.0).astype(np.uint8))


class _NpzMember:
    """One ``.npy`` member of an ``.npz`` read in row chunks through :mod:`zipfile` (never loaded whole)."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        with self._open() as fh:
            try:
                version = np.lib.format.read_magic(fh)
                header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = header(fh)
            except ValueError as exc:
                raise UserError(f"{path}: member {key!r} is not a valid .npy array ({exc})") from None
            self.data_offset = fh.tell()
        if dtype.hasobject:
            raise UserError(f"{path}: {key!r} holds Python objects; only numeric arrays are read (no pickles)")
        if fortran and len(shape) > 1:
            raise UserError(f"{path}: {key!r} is stored in Fortran order; save it C-contiguous (np.ascontiguousarray)")
        self.shape, self.dtype = tuple(shape), dtype

    def _open(self):
        try:
            return zipfile.ZipFile(self.path).open(self.key + ".npy")
        except (zipfile.BadZipFile, OSError, KeyError) as exc:
            raise UserError(f"{self.path} cannot be read as an .npz ({exc})") from None

    def whole(self) -> np.ndarray:
        return np.concatenate(list(self.chunks(np.arange(self.shape[0]), 1 << 20))) if self.shape[0] else np.zeros(self.shape, self.dtype)

    def chunks(self, pos: np.ndarray, rows: int) -> Iterator[np.ndarray]:
        """Rows ``pos`` (sorted) in chunks of at most ``rows`` consecutive source rows, streamed once front to back."""
        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        with self._open() as fh:
            fh.read(self.data_offset)
            for start in range(0, self.shape[0], rows):
                stop = min(self.shape[0], start + rows)
                lo, hi = np.searchsorted(pos, [start, stop])
                if lo == hi:  # nothing wanted here: skip (zip members are read sequentially)
                    _skip(fh, (stop - start) * row_bytes, self.path)
                    continue
                raw = fh.read((stop - start) * row_bytes)
                if len(raw) != (stop - start) * row_bytes:
                    raise UserError(f"{self.path}: member {self.key!r} is truncated")
                block = np.frombuffer(raw, self.dtype).reshape(stop - start, *self.shape[1:])
                yield block[pos[lo:hi] - start]


def _skip(fh, n: int, path: Path) -> None:
    while n > 0:
        got = len(fh.read(min(n, 16 << 20)))
        if got == 0:
            raise UserError(f"{path} is truncated")
        n -= got


def _check_classes(ytr: np.ndarray, yte: np.ndarray, what: str, num_classes: int | None = None) -> int:
    """Labels ``>= 0``; the test split has no class the training split lacks; every class has training images."""
    if len(ytr) == 0:
        raise UserError(f"{what}: the training split is empty")
    if ytr.min() < 0 or (len(yte) and yte.min() < 0):
        raise UserError(f"{what}: labels must be >= 0, found {min(ytr.min(), yte.min() if len(yte) else 0)}")
    k = int(ytr.max()) + 1 if num_classes is None else num_classes
    if ytr.max() >= k:
        raise UserError(f"{what}: training labels must be in [0, {k}), found {ytr.max()}")
    missing = sorted(set(range(k)) - set(np.unique(ytr).tolist()))
    if missing:
        raise UserError(f"{what}: class {missing[0]} has no training images (labels must be 0..K-1 with every class present)")
    extra = sorted(set(np.unique(yte).tolist()) - set(range(k)))
    if extra:
        raise UserError(f"{what}: the test split has class {extra[0]}, which the training split lacks ({k} classes)")
    if k < 2:
        raise UserError(f"{what}: needs at least two classes, found one")
    return k


@register_loader("arrays", "an .npz with x_train, y_train, x_test, y_test (uint8 NHWC/NCHW or float in [0, 1])")
def _load_arrays(root: Path | None, _: LoadOptions) -> Source:
    path = root
    if not path.is_file():
        raise UserError(f"dataset 'arrays': --root must be an .npz file, {path} " + ("is a directory" if path.is_dir() else "does not exist"))
    try:
        names = set(zipfile.ZipFile(path).namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path} is not an .npz file ({exc})") from None
    keys = ["x_train", "y_train", "x_test", "y_test"]
    missing = [k for k in keys if k + ".npy" not in names]
    if missing:
        raise UserError(f"{path}: missing key(s) {', '.join(missing)} (an arrays .npz holds {', '.join(keys)})")
    xtr, xte = _NpzMember(path, "x_train"), _NpzMember(path, "x_test")
    ytr, yte = (_integer_labels(_NpzMember(path, k).whole(), f"{path} {k!r}") for k in ("y_train", "y_test"))
    layouts = []
    for x, y, k in ((xtr, ytr, "x_train"), (xte, yte, "x_test")):
        if not x.shape or x.shape[0] != len(y):
            raise UserError(f"{path}: {k!r} has {x.shape[0] if x.shape else 0} images but {'y' + k[1:]!r} {len(y)} labels")
        layouts.append(_layout(x.shape, "auto", f"{path} {k!r}"))
    shapes = [(1, *x.shape[1:]) if lay == "nhw" else (x.shape[3], *x.shape[1:3]) if lay == "nhwc" else x.shape[1:]
              for x, lay in zip((xtr, xte), layouts)]  # fmt: skip
    if tuple(shapes[0]) != tuple(shapes[1]):
        raise UserError(f"{path}: x_train images are {tuple(shapes[0])} but x_test images {tuple(shapes[1])}")
    k = _check_classes(ytr, yte, str(path))

    def split(member: _NpzMember, y: np.ndarray, layout: str, key: str) -> Split:
        def read(pos: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            done = 0
            rows = max(1, CHUNK_BYTES // (int(np.prod(member.shape[1:])) * member.dtype.itemsize))
            for block in member.chunks(pos, rows):
                yield _to_nchw_u8(block, layout, f"{path} {key!r}"), y[pos[done : done + len(block)]]
                done += len(block)

        return Split(y, read)

    return Source([str(i) for i in range(k)], split(xtr, ytr, layouts[0], "x_train"), split(xte, yte, layouts[1], "x_test"),
                  lambda: tuple(int(s) for s in shapes[0]), fingerprint_files([path]), None, decoded=True)  # fmt: skip


# ----------------------------------------------------------------------------------- image trees
def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _tree_fingerprint(files: Sequence[Path], extra: Sequence[Path] = ()) -> str:
    """SHA-256 over every image's path, size and modification time (cheap for 10^5 files) and the bytes of ``extra``."""
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if extra:
        h.update(fingerprint_files(extra).encode())
    return h.hexdigest()


def _pil():
    from PIL import Image, ImageFile  # lazy: Pillow loads only for image trees

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    return Image


def _fit(img, size: int | None, crop: bool):
    """Resize to ``size``: the shorter side to ``size`` (antialiased bilinear), then a centre crop (``crop``)
    or straight to ``size x size``."""
    if size is None or img.size == (size, size):
        return img
    Image = _pil()
    if not crop:
        return img.resize((size, size), Image.BILINEAR)
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def _probe(files: Sequence[Path], skip: bool) -> tuple[set[tuple[int, int]], bool]:
    """Open each image's header (cheap): the sizes seen and whether all are greyscale."""
    Image = _pil()
    sizes, grey = set(), True
    for p in files:
        try:
            with Image.open(p) as im:
                sizes.add(im.size)
                grey = grey and im.mode in ("1", "L", "I", "I;16", "F")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            if not skip:
                raise UserError(f"{p}: unreadable image ({exc}); fix or remove it, or pass --skip-bad-images") from None
    return sizes, grey


def _tree_source(train: list[tuple[Path, int]], test: list[tuple[Path, int]], class_names: list[str], opts: LoadOptions,
                 what: str, *, size: int | None, crop: bool, stats=None, extra_files: Sequence[Path] = (),
                 record: dict | None = None) -> Source:  # fmt: skip
    """A Source decoding ``(file, label)`` lists with Pillow (RGB unless every image is greyscale).

    Image headers are only probed (sizes, modes) when the images are decoded, i.e. when the cache is
    built; a valid cache needs nothing but the file listing."""
    skipped: list[str] = []
    files = [p for p, _ in train] + [p for p, _ in test]
    probed: dict[str, Any] = {}

    def shape() -> tuple[int, int, int]:
        if not probed:
            sizes, grey = _probe(files, opts.skip_bad_images)
            if not sizes:
                raise UserError(f"{what}: no readable images")
            if size is None and len(sizes) > 1:
                a, b = sorted(sizes)[:2]
                raise UserError(f"{what}: images of different sizes ({a[0]}x{a[1]}, {b[0]}x{b[1]}, ...): pass --image-size S")
            w, h = (size, size) if size is not None else next(iter(sizes))
            probed.update(shape=(1 if grey else 3, h, w), mode="L" if grey else "RGB")
        return probed["shape"]

    def split(items: list[tuple[Path, int]]) -> Split:
        labels = np.array([y for _, y in items], np.int64)

        def read(pos: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            channels, h, w = shape()
            Image = _pil()
            step = _rows_per_chunk((channels, h, w))
            for i in range(0, len(pos), step):
                xs, ys = [], []
                for j in pos[i : i + step]:
                    p = items[j][0]
                    try:
                        with Image.open(p) as im:
                            arr = np.asarray(_fit(im.convert(probed["mode"]), size, crop))
                    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                        if not opts.skip_bad_images:
                            raise UserError(f"{p}: unreadable or truncated image ({exc}); fix or remove it, or pass --skip-bad-images") from None
                        skipped.append(str(p))
                        continue
                    if arr.shape[:2] != (h, w):
                        raise UserError(f"{p} is {arr.shape[1]}x{arr.shape[0]}, others {w}x{h}: pass --image-size S")
                    xs.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
                    ys.append(labels[j])
                if xs:
                    yield np.stack(xs), np.array(ys, np.int64)

        return Split(labels, read)

    return Source(class_names, split(train), split(test), shape, _tree_fingerprint(files, extra_files), stats,
                  decoded=True, record=dict(record or {}), skipped=skipped)  # fmt: skip


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _stratified_test(items: list[tuple[Path, int]], k: int, fraction: float, seed: int, what: str) -> tuple[list, list]:
    if not 0.0 < fraction < 1.0:
        raise UserError(f"test fraction must be in (0, 1), got {fraction}")
    rng = np.random.RandomState(seed)
    labels = np.array([y for _, y in items])
    test = set()
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        n = int(round(fraction * len(idx)))
        if n < 1 or n >= len(idx):
            raise UserError(f"{what}: class {c} has {len(idx)} image(s): too few to hold out {fraction:.0%} as its test split "
                            f"(add images or a test/ folder)")  # fmt: skip
        test.update(rng.permutation(idx)[:n].tolist())
    return [it for i, it in enumerate(items) if i not in test], [it for i, it in enumerate(items) if i in test]


@register_loader("imagefolder", "ROOT/<class>/*.png|jpg|jpeg|bmp|webp (test from ROOT/test|val/<class>/, else a seeded split)")
def _load_imagefolder(root: Path | None, opts: LoadOptions) -> Source:
    check_root(root, "dataset 'imagefolder'")
    if not root.is_dir():
        raise UserError(f"dataset 'imagefolder': --root {root} is not a directory")
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    train_dir = root / "train" if test_dir is not None and (root / "train").is_dir() else root
    dirs = [d for d in _class_dirs(train_dir) if d != test_dir]
    if not dirs:
        raise UserError(f"{train_dir}: no class folders (expected {train_dir}/<class>/*.png)")
    if len(dirs) < 2:
        raise UserError(f"{train_dir}: only one class folder ({dirs[0].name}); a classification dataset needs at least two")
    names = [d.name for d in dirs]
    train = []
    for c, d in enumerate(dirs):
        files = _image_files(d)
        if not files:
            raise UserError(f"{d}: class {d.name!r} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        train += [(p, c) for p in files]
    record: dict[str, Any] = {}
    if test_dir is not None:
        test = []
        for d in _class_dirs(test_dir):
            if d.name not in names:
                raise UserError(f"{d}: the test split has class {d.name!r}, which the training split lacks")
            test += [(p, names.index(d.name)) for p in _image_files(d)]
        record["test_split"] = str(test_dir.name)
    else:
        train, test = _stratified_test(train, len(names), opts.test_fraction, opts.split_seed, str(root))
        record.update(test_split="seeded stratified split", test_fraction=opts.test_fraction, split_seed=opts.split_seed)
    return _tree_source(train, test, names, opts, str(root), size=opts.image_size, crop=True, record=record)


@register_loader("tiny_imagenet", "the official tiny-imagenet-200/ tree (val labels from val_annotations.txt), 64x64")
def _load_tiny(root: Path | None, opts: LoadOptions) -> Source:
    check_root(root, "dataset 'tiny_imagenet'")
    base = next((b for b in (root, root / "tiny-imagenet-200") if (b / "wnids.txt").is_file()), None)
    if base is None:
        raise UserError(f"dataset 'tiny_imagenet': no wnids.txt under {root} or {root / 'tiny-imagenet-200'}")
    wnids = sorted(w for w in (base / "wnids.txt").read_text().split() if w)
    if len(wnids) < 2:
        raise UserError(f"{base / 'wnids.txt'}: needs at least two class ids, found {len(wnids)}")
    train = []
    for c, w in enumerate(wnids):
        files = _image_files(base / "train" / w)
        if not files:
            raise UserError(f"{base / 'train' / w}: class {w!r} has no images")
        train += [(p, c) for p in files]
    ann = base / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise UserError(f"dataset 'tiny_imagenet': {ann} is missing (it labels val/images/)")
    index, test = {w: i for i, w in enumerate(wnids)}, []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        parts = line.split("\t")
        if not line.strip():
            continue
        if len(parts) < 2:
            raise UserError(f"{ann}:{n}: expected 'FILE<TAB>WNID ...', found {line[:60]!r}")
        if parts[1] not in index:
            raise UserError(f"{ann}:{n}: the test split has class {parts[1]!r}, which wnids.txt lacks")
        test.append((base / "val" / "images" / parts[0], index[parts[1]]))
    missing = next((p for p, _ in test if not p.is_file()), None)
    if missing is not None:
        raise UserError(f"{ann} lists {missing.name}, but {missing} does not exist")
    return _tree_source(train, test, wnids, opts, str(base), size=opts.image_size, crop=True, stats=IMAGENET_STATS,
                        extra_files=[base / "wnids.txt", ann])  # fmt: skip


def _imagenet_subset(name: str) -> Callable[[Path | None, LoadOptions], Source]:
    classes = IMAGENET_SUBSETS[name]

    def load(root: Path | None, opts: LoadOptions) -> Source:
        check_root(root, f"dataset {name!r}")
        splits = []
        for split in ("train", "val"):
            items = []
            for c, (wnid, _) in enumerate(classes):
                d = root / split / wnid
                files = _image_files(d) if d.is_dir() else []
                if not files:
                    raise UserError(f"dataset {name!r}: {d} holds no images (an ILSVRC-style tree: {split}/<wnid>/*.JPEG)")
                items += [(p, c) for p in files]
            splits.append(items)
        return _tree_source(splits[0], splits[1], [n for _, n in classes], opts, f"{name} ({root})",
                            size=opts.image_size or 128, crop=True, stats=IMAGENET_STATS)  # fmt: skip

    return load


for _name in IMAGENET_SUBSETS:
    register_loader(_name, f"MTT's ImageNet subset {_name} (train/<wnid>/ + val/<wnid>/ at 128x128)")(_imagenet_subset(_name))

DATASETS = tuple(LOADERS)


# ----------------------------------------------------------------------------------- assembling a dataset
def _select_classes(classes: Sequence[str | int] | str | None, names: list[str], what: str) -> list[int] | None:
    """``--classes`` (names or ids, comma-separated or a list) -> sorted class ids; ``None`` keeps all."""
    if classes is None:
        return None
    items = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else list(classes)
    ids = []
    for c in items:
        if isinstance(c, str) and c in names:
            ids.append(names.index(c))
        elif isinstance(c, (int, np.integer)) or (isinstance(c, str) and c.lstrip("-").isdigit()):
            i = int(c)
            if not 0 <= i < len(names):
                raise UserError(f"--classes: class id {i} is out of range for {what} ({len(names)} classes)")
            ids.append(i)
        else:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise UserError(f"--classes: {c!r} is not a class of {what} (classes: {shown})")
    ids = sorted(set(ids))
    if len(ids) < 2:
        raise UserError(f"--classes needs at least two distinct classes, got {items}")
    return ids


def _channel_stats(chunks: Iterator[tuple[np.ndarray, np.ndarray]], acc: dict) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pass chunks through while summing per-channel pixel values and squares (exact integer sums)."""
    for x, y in chunks:
        hist = np.stack([np.bincount(x[:, ch].ravel(), minlength=256) for ch in range(x.shape[1])]).astype(np.int64)
        acc["hist"] = acc.get("hist", 0) + hist
        yield x, y


def _stats_from(acc: dict) -> tuple[tuple[float, ...], tuple[float, ...]]:
    hist, v = acc["hist"], np.arange(256, dtype=np.float64) / 255.0
    n = np.maximum(hist.sum(1), 1)
    mean = (hist * v).sum(1) / n
    var = (hist * v**2).sum(1) / n - mean**2
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(max(v, 1e-12)) ** 0.5, 6) for v in var)


def _remapped(chunks: Iterator[tuple[np.ndarray, np.ndarray]], lut: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for x, y in chunks:
        yield x, (lut[y] if lut is not None else y)


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    resize: int | None = None,
    zca: bool = False,
    zca_eps: float = 0.1,
    image_size: int | None = None,
    classes: Sequence[str | int] | str | None = None,
    skip_bad_images: bool = False,
    storage: str = "auto",
    cache_dir: str | Path | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    zca_fit_images: int = 10000,
) -> ImageDataset:
    """Load ``name`` from the local ``root`` (``digits`` needs none): standardised, or (``zca``) raw ``[0, 1]``
    pixels ZCA-whitened as in MTT (``mean``/``std`` are then 0/1).

    ``image_size`` resizes image trees while decoding (required when their sizes differ); ``resize``
    resizes the float images (antialiased bilinear) as before; ``classes`` keeps a subset (names or ids,
    relabelled ``0..k-1`` in id order). ``storage``: ``memory`` (float tensors), ``memmap`` (the uint8
    cache, read per batch) or ``auto`` (the cache above 2 GiB of float32; image trees and ``.npz``
    files are always decoded into the cache first). ZCA on the cache path: fitted on a streamed
    covariance of all training images where ``D x D`` fits in 1 GiB (equal to the in-memory fit up to
    summation order), else on ``zca_fit_images`` seeded random training images (recorded).

    Raises :class:`UserError` for unknown names and missing/partial/bad files, naming the exact file.
    """
    check_type(name, str, "dataset name")
    check_type(root, (str, os.PathLike, type(None)), "root")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in LOADERS:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    spec = LOADERS[key]
    if spec.needs_root:
        if root is None:
            raise UserError(f"dataset {key!r} needs --root pointing at its local files (nothing is downloaded)")
        root = Path(root).expanduser().absolute()
    else:
        root = None
    for flag, v in (("resize", resize), ("image_size", image_size)):
        if v is not None and (isinstance(v, bool) or int(v) != v or not MIN_RESIZE <= v <= MAX_RESIZE):
            raise UserError(f"{flag} must be an integer in [{MIN_RESIZE}, {MAX_RESIZE}], got {v!r}")
    if storage not in ("auto", "memory", "memmap"):
        raise UserError(f"storage must be auto, memory or memmap, got {storage!r}")
    opts = LoadOptions(image_size=image_size, skip_bad_images=skip_bad_images, test_fraction=test_fraction, split_seed=split_seed)
    src = spec.open(root, opts)
    k_all = len(src.class_names)
    chosen = _select_classes(classes, src.class_names, key)
    ytr_all, yte_all = src.train.labels, src.test.labels
    _check_label_range(ytr_all, yte_all, k_all, key, root)
    ids = chosen if chosen is not None else list(range(k_all))
    lut = None
    if chosen is not None:
        lut = np.full(k_all, -1, np.int64)
        lut[ids] = np.arange(len(ids))
    pos_tr = np.flatnonzero(np.isin(ytr_all, ids)) if chosen is not None else np.arange(len(ytr_all))
    pos_te = np.flatnonzero(np.isin(yte_all, ids)) if chosen is not None else np.arange(len(yte_all))
    class_names = [src.class_names[i] for i in ids]
    fingerprint = src.fingerprint  # of the files read; a class subset or decode size makes other data
    if chosen is not None or image_size is not None:
        fingerprint = hashlib.sha256(f"{src.fingerprint}|classes={chosen}|image_size={image_size}".encode()).hexdigest()
    source = {"loader": key, "root": str(root) if root is not None else None, **src.record}
    options = {k: v for k, v, default in (("resize", resize, None), ("image_size", image_size, None), ("skip_bad_images", skip_bad_images, False),
                                          ("test_fraction", test_fraction, 0.2), ("split_seed", split_seed, 0)) if v != default}  # fmt: skip
    if chosen is not None:
        options["classes"] = ids
    if options:
        source["options"] = options  # what `evaluate` / `show` pass back to load_dataset

    def too_big(shape: Sequence[int], n: int) -> bool:
        hw = (resize, resize) if resize is not None else tuple(shape[1:])
        return storage == "memmap" or (storage == "auto" and n * shape[0] * hw[0] * hw[1] * 4 > MEMORY_LIMIT)

    if not src.decoded and not too_big(src.shape(), len(pos_tr) + len(pos_te)):  # the in-memory path, exactly as before
        xtr, ytr = _gather(src.train, pos_tr, lut, src.shape())
        xte, yte = _gather(src.test, pos_te, lut, src.shape())
        stats, memmap = src.stats, False
    else:
        path, header, parts = _cached(src, key, root, cache_dir, fingerprint, image_size, (pos_tr, pos_te), lut)
        stats = src.stats or (tuple(header["mean"]), tuple(header["std"]))
        (xtr, ytr), (xte, yte) = parts["train"], parts["test"]
        source["cache"] = str(path)
        if header.get("skipped_images"):
            source["skipped_images"] = header["skipped_images"]
            print(f"{key}: skipped {header['skipped_images']} unreadable image(s) (--skip-bad-images)", file=sys.stderr)
        memmap = too_big(header["image_shape"], len(ytr) + len(yte))
        if not memmap:
            xtr, xte = np.array(xtr), np.array(xte)  # the decoded cache, read into memory
    counts = np.bincount(np.asarray(ytr, np.int64), minlength=len(ids))
    if source.get("skipped_images") and (counts == 0).any():  # every image of a class skipped as unreadable
        raise UserError(f"dataset {key!r}{f' ({root})' if root else ''}: class {class_names[int(np.argmin(counts))]!r} has no training images left")
    mean, std = stats
    if zca:  # MTT: ToTensor() only (raw [0, 1] pixels, no standardisation), then ZCA fitted on them
        mean, std = (0.0,) * len(mean), (1.0,) * len(std)
    ds_kwargs = dict(name=key, train_y=torch.from_numpy(np.asarray(ytr, np.int64)), test_y=torch.from_numpy(np.asarray(yte, np.int64)),
                     num_classes=len(ids), mean=mean, std=std, class_names=class_names, fingerprint=fingerprint, source=source)  # fmt: skip
    if memmap:
        ds = ImageDataset(train_x=ImageStore(xtr, mean, std, resize=resize), test_x=ImageStore(xte, mean, std, resize=resize), **ds_kwargs)
        source["storage"] = "memmap"
        if zca:
            ds.zca, source["zca_fit"] = fit_zca(ds.train_x, zca_eps, zca_fit_images)
            ds.train_x.zca = ds.test_x.zca = ds.zca
        return ds
    ds = ImageDataset(train_x=standardise(torch.from_numpy(xtr), mean, std, resize), test_x=standardise(torch.from_numpy(xte), mean, std, resize),
                      **ds_kwargs)  # fmt: skip
    if zca:
        ds.zca = ZCA(zca_eps).fit(ds.train_x)
        ds.train_x, ds.test_x = ds.zca(ds.train_x), ds.zca(ds.test_x)
    return ds


def _check_label_range(ytr: np.ndarray, yte: np.ndarray, k: int, key: str, root: Path | None) -> None:
    where = f" ({root})" if root is not None else ""
    for part, y in (("training", ytr), ("test", yte)):
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise UserError(f"dataset {key!r}{where}: {part} labels must be in [0, {k}), found {y.min()}..{y.max()}")


def _gather(split: Split, pos: np.ndarray, lut: np.ndarray | None, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    parts = list(_remapped(split.read(pos), lut))
    if not parts:
        return np.zeros((0, *shape), np.uint8), np.zeros(0, np.int64)
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def _cached(src: Source, key: str, root: Path | None, cache_dir, fingerprint: str, image_size: int | None, positions, lut):
    """Open the uint8 cache of this source (decoding it first when missing or stale): keyed by the sources'
    fingerprint (which covers the class subset), the decode size and the cache format."""
    fingerprint = hashlib.sha256(f"{fingerprint}|image_size={image_size}|{CACHE_FORMAT}".encode()).hexdigest()
    path = cache_path(root, fingerprint[:20], key, cache_dir)
    opened = open_cache(path, fingerprint)
    if opened is None:
        c, h, w = src.shape()
        n = len(positions[0]) + len(positions[1])
        print(f"decoding {n} images of {key!r} into the cache {path} (once) ...", file=sys.stderr, flush=True)
        acc: dict = {}
        header: dict[str, Any] = {"fingerprint": fingerprint, "dataset": key, "image_shape": [c, h, w]}

        def splits():
            yield "train", _channel_stats(_remapped(src.train.read(positions[0]), lut), acc)
            mean, std = _stats_from(acc) if acc else ((0.0,) * c, (1.0,) * c)
            header.update(mean=list(mean), std=list(std))
            yield "test", _remapped(src.test.read(positions[1]), lut)
            header["skipped_images"] = len(src.skipped)

        write_cache(path, splits(), header)
        opened = open_cache(path, fingerprint)
        if opened is None:
            raise UserError(f"the cache {path} was written but cannot be read back (disk full?)")
    header, parts = opened
    return path, header, parts


# ----------------------------------------------------------------------------------- Python API
def from_arrays(
    x: Any,
    y: Any,
    x_test: Any = None,
    y_test: Any = None,
    *,
    name: str = "arrays",
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    layout: str = "auto",
    test_fraction: float = 0.2,
    split_seed: int = 0,
    zca: bool = False,
    zca_eps: float = 0.1,
) -> ImageDataset:
    """An in-memory :class:`ImageDataset` from arrays or tensors: uint8 ``[0, 255]`` or float ``[0, 1]``,
    ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` (``layout`` ``auto``/``nhwc``/``nchw``).

    Without a test split a seeded, class-stratified ``test_fraction`` of ``x`` is held out (recorded).
    ``mean``/``std`` default to the per-channel statistics of the training split.
    """
    if layout not in ("auto", "nhwc", "nchw"):
        raise UserError(f"layout must be auto, nhwc or nchw, got {layout!r}")
    if (x_test is None) != (y_test is None):
        raise UserError("give both x_test and y_test, or neither")
    xs = [_as_float_nchw(a, layout, what) for a, what in ((x, "x"), (x_test, "x_test")) if a is not None]
    ys = [_integer_labels(_np(a), what) for a, what in ((y, "y"), (y_test, "y_test")) if a is not None]
    for xx, yy, what in zip(xs, ys, ("x", "x_test")):
        if len(xx) != len(yy):
            raise UserError(f"{what} has {len(xx)} images but its labels {len(yy)}")
    record: dict[str, Any] = {"loader": "arrays (Python)"}
    if len(xs) == 1:
        k = _check_classes(ys[0], np.zeros(0, np.int64), name)
        items = list(zip(range(len(ys[0])), ys[0].tolist()))
        tr, te = _stratified_test(items, k, test_fraction, split_seed, name)
        itr, ite = torch.tensor([i for i, _ in tr]), torch.tensor([i for i, _ in te])
        xs, ys = [xs[0][itr], xs[0][ite]], [ys[0][itr.numpy()], ys[0][ite.numpy()]]
        record.update(test_split="seeded stratified split", test_fraction=test_fraction, split_seed=split_seed)
    if tuple(xs[0].shape[1:]) != tuple(xs[1].shape[1:]):
        raise UserError(f"x images are {tuple(xs[0].shape[1:])} but x_test images {tuple(xs[1].shape[1:])}")
    k = _check_classes(ys[0], ys[1], name)
    if class_names is not None and len(class_names) != k:
        raise UserError(f"class_names has {len(class_names)} names for {k} classes")
    c = xs[0].shape[1]
    if mean is None or std is None:
        flat = xs[0].transpose(0, 1).reshape(c, -1).double()
        mean = tuple(round(float(v), 6) for v in flat.mean(1)) if mean is None else mean
        std = tuple(round(float(v), 6) for v in flat.std(1, unbiased=False).clamp_min(1e-6)) if std is None else std
    if len(mean) != c or len(std) != c or any(s <= 0 for s in std):
        raise UserError(f"mean and std need {c} value(s) each, std > 0; got {list(mean)} and {list(std)}")
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if zca:
        mean, std = (0.0,) * c, (1.0,) * c
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    ds = ImageDataset(
        name=name, train_x=(xs[0] - m) / s, train_y=torch.from_numpy(ys[0]), test_x=(xs[1] - m) / s, test_y=torch.from_numpy(ys[1]),
        num_classes=k, mean=mean, std=std, class_names=list(class_names or [str(i) for i in range(k)]),
        fingerprint=fingerprint_tensors({"x": xs[0], "y": torch.from_numpy(ys[0])}), source=record,
    )  # fmt: skip
    if zca:
        ds.zca = ZCA(zca_eps).fit(ds.train_x)
        ds.train_x, ds.test_x = ds.zca(ds.train_x), ds.zca(ds.test_x)
    return ds


def _np(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _as_float_nchw(a: Any, layout: str, what: str) -> torch.Tensor:
    """uint8 -> ``/255``; float must be finite and in [0, 1]; any layout -> float32 ``(N, C, H, W)``."""
    arr = _np(a)
    lay = _layout(arr.shape, layout, what)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t[:, None] if lay == "nhw" else t.permute(0, 3, 1, 2) if lay == "nhwc" else t
    if t.dtype == torch.uint8:
        return t.float().div_(255.0).contiguous()
    if not t.is_floating_point():
        raise UserError(f"{what}: images must be uint8 or float in [0, 1], found {arr.dtype}")
    t = t.float().contiguous()
    if not torch.isfinite(t).all() or (t.numel() and (t.min() < 0 or t.max() > 1)):
        raise UserError(f"{what}: float images must be finite and in [0, 1] (uint8 images may be 0..255)")
    return t


def from_folder(root: str | Path, **kwargs: Any) -> ImageDataset:
    """:func:`load_dataset` ``("imagefolder", root, **kwargs)``: ``ROOT/<class>/*.png`` and friends."""
    return load_dataset("imagefolder", root, **kwargs)
