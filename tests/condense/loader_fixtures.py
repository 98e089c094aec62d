"""Tiny generated datasets in every layout the loaders read (a few KB each, written under ``tmp_path``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from condense.data.loaders import IMAGENET_SUBSETS


def rgb(rng: np.random.RandomState, h: int, w: int, c: int = 3) -> np.ndarray:
    return rng.randint(0, 256, (h, w, c) if c > 1 else (h, w)).astype(np.uint8)


def write_image(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def image_folder(root: Path, classes=("cat", "dog", "eel"), per_class: int = 6, size=(8, 8), ext: str = ".png",
                 test: int = 0, seed: int = 0) -> Path:  # fmt: skip
    """``root/<class>/i.png`` (and ``root/test/<class>/`` with ``test`` images per class when > 0)."""
    rng = np.random.RandomState(seed)
    for c in classes:
        for i in range(per_class):
            write_image(root / c / f"{i:03d}{ext}", rgb(rng, *size))
        for i in range(test):
            write_image(root / "test" / c / f"{i:03d}{ext}", rgb(rng, *size))
    return root


def decode(path: Path, mode: str = "RGB") -> np.ndarray:
    """The reference decode: Pillow, CHW uint8."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert(mode))
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def npz(path: Path, n: int = 40, n_test: int = 12, k: int = 4, size: int = 6, layout: str = "nhwc", dtype: str = "uint8",
        seed: int = 0, **overrides) -> tuple[Path, dict[str, np.ndarray]]:  # fmt: skip
    """An arrays ``.npz``; returns it and the uint8 NCHW reference (``x_train``, ``y_train``, ...)."""
    rng = np.random.RandomState(seed)
    ref = {"x_train": rng.randint(0, 256, (n, 3, size, size)).astype(np.uint8), "y_train": np.arange(n) % k,
           "x_test": rng.randint(0, 256, (n_test, 3, size, size)).astype(np.uint8), "y_test": np.arange(n_test) % k}  # fmt: skip
    arrays = dict(ref)
    for key in ("x_train", "x_test"):
        x = ref[key].transpose(0, 2, 3, 1) if layout == "nhwc" else ref[key]
        arrays[key] = x.astype(np.float32) / 255.0 if dtype == "float" else x
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path, ref


def tiny_imagenet(root: Path, wnids=("n01443537", "n01629819", "n01641577"), per_class: int = 4, val: int = 2, seed: int = 0) -> Path:
    """The official ``tiny-imagenet-200/`` layout, 64x64 JPEGs (few of them)."""
    base = root / "tiny-imagenet-200"
    rng = np.random.RandomState(seed)
    (base).mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # the loader sorts them
    lines = []
    for w in wnids:
        for i in range(per_class):
            write_image(base / "train" / w / "images" / f"{w}_{i}.JPEG", rgb(rng, 64, 64))
        for i in range(val):
            name = f"val_{w}_{i}.JPEG"
            write_image(base / "val" / "images" / name, rgb(rng, 64, 64))
            lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def imagenet_subset(root: Path, subset: str = "imagenette", per_class: int = 2, size=(20, 15), seed: int = 0) -> Path:
    """An ILSVRC-style ``train/<wnid>/`` + ``val/<wnid>/`` tree holding the subset's wnids (non-square images)."""
    rng = np.random.RandomState(seed)
    for split in ("train", "val"):
        for wnid, _ in IMAGENET_SUBSETS[subset]:
            for i in range(per_class):
                write_image(root / split / wnid / f"{wnid}_{i}.JPEG", rgb(rng, size[1], size[0]))
    return root


def svhn(root: Path, n: int = 20, n_test: int = 10, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """``train_32x32.mat`` / ``test_32x32.mat`` as the official files: X (32, 32, 3, N), y (N, 1) in 1..10."""
    from scipy.io import savemat

    rng = np.random.RandomState(seed)
    ref = {}
    for split, m in (("train", n), ("test", n_test)):
        x = rng.randint(0, 256, (32, 32, 3, m)).astype(np.uint8)
        y = (np.arange(m) % 10 + 1).reshape(-1, 1).astype(np.uint8)
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        ref[split] = (x.transpose(3, 2, 0, 1), y.reshape(-1) % 10)
    return root, ref
