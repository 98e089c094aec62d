"""Images kept as uint8 on disk and read per batch: the storage whose memory does not grow with the data.

A *cache file* holds the decoded training and test images of one dataset (uint8, ``(N, C, H, W)``,
row-major), both label vectors (int64) and a JSON trailer (format, source fingerprint, shapes,
class names, per-channel statistics). It is written once, atomically, and read row by row (:class:`DiskRows`);
a file whose trailer, size or fingerprint does not match what the sources say is never used
(:func:`open_cache` returns ``None`` and the caller rebuilds it).

:class:`ImageStore` is what :class:`~condense.data.ImageDataset` holds instead of a float tensor on
that path: ``len``, ``.shape`` and ``x[idx]`` behave like the tensor would (``idx`` an int, slice,
index or mask tensor/array), each read converting only the requested rows with exactly the
operations the in-memory path applies to the whole set (``/255``, optional resize, ``(x - mean) / std``,
optional ZCA), so the rows are bit-identical to the in-memory tensor's (ZCA: equal up to the
matrix product's summation order, which BLAS may block differently for a batch).
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import UserError

__all__ = ["ImageStore", "DiskRows", "standardise", "write_cache", "open_cache", "CACHE_FORMAT"]

CACHE_FORMAT = "condense-u8-cache-v1"
_MAGIC = b"CONDENSEU8"
_TAIL = struct.Struct("<Q10s")  # trailer length, magic


def standardise(u8: torch.Tensor, mean: Sequence[float], std: Sequence[float], resize: int | None) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> float32 ``[0, 1]`` -> (antialiased bilinear resize) -> ``(x - mean) / std``.

    The single conversion both storages use, so a row read from the cache equals the in-memory row bit for bit.
    """
    t = u8.float().div_(255.0)
    if resize is not None and tuple(t.shape[-2:]) != (resize, resize):
        t = F.interpolate(t, size=(resize, resize), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (t - m) / s


class DiskRows:
    """Rows ``(N, C, H, W)`` of uint8 at ``offset`` in a file, read with positional reads (``os.preadv``).

    Not ``np.memmap``: where the page cache uses large folios (recent Linux), each fault on a mapping maps
    up to 2 MiB around the touched row, so random rows of a mapped cache drive the process's RSS towards
    the file's size (measured here: 100 random 3 KiB rows of a 0.9 GiB file, +190 MiB RSS; 2,560 rows, the
    whole file). ``pread`` copies just the rows asked for, through the same page cache.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, path: Path, offset: int, shape: tuple[int, int, int, int]) -> None:
        self.path, self.offset, self.shape = Path(path), int(offset), tuple(int(s) for s in shape)
        self.row_bytes = int(np.prod(self.shape[1:]))
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def __getstate__(self) -> dict:  # a forked/spawned worker opens its own descriptor
        return {**self.__dict__, "_fd": None}

    def __getitem__(self, idx: Any) -> np.ndarray:
        if isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            if step == 1:
                return self._run(start, max(start, stop))
            idx = np.arange(start, stop, step)
        pos = np.asarray(idx, np.int64).reshape(-1)
        out = np.empty((len(pos), *self.shape[1:]), np.uint8)
        order = np.argsort(pos, kind="stable")
        sorted_pos = pos[order]
        breaks = np.flatnonzero(np.diff(sorted_pos) != 1) + 1  # runs of consecutive rows: one read each
        tmp = np.empty_like(out)
        for run in np.split(np.arange(len(pos)), breaks):
            if len(run):
                self._read_into(tmp[run[0] : run[-1] + 1], int(sorted_pos[run[0]]))
        out[order] = tmp
        return out

    def _run(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.shape[1:]), np.uint8)
        if stop > start:
            self._read_into(out, start)
        return out

    def _read_into(self, buf: np.ndarray, row: int) -> None:
        view, at = memoryview(buf).cast("B"), self.offset + row * self.row_bytes
        while len(view):
            got = os.preadv(self._file(), [view], at)
            if got <= 0:
                raise UserError(f"the cache {self.path} is truncated (rebuild it: delete the file)")
            view, at = view[got:], at + got

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self._run(0, len(self))
        return out if dtype is None else out.astype(dtype)


class ImageStore:
    """Tensor-like view of uint8 images (a :class:`DiskRows` cache file, or an array), standardised per read."""

    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(
        self,
        images: "np.ndarray | DiskRows",
        mean: Sequence[float],
        std: Sequence[float],
        *,
        resize: int | None = None,
        zca: Any = None,
        rows: np.ndarray | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"ImageStore needs uint8 (N, C, H, W) images, got {images.dtype} {images.shape}")
        self.images, self.mean, self.std, self.resize, self.zca = images, tuple(mean), tuple(std), resize, zca
        self.rows = rows  # None: all rows in order; else int64 positions into ``images``

    # -- tensor-like surface
    def __len__(self) -> int:
        return len(self.images) if self.rows is None else len(self.rows)

    @property
    def shape(self) -> torch.Size:
        c, h, w = self.images.shape[1:]
        if self.resize is not None:
            h = w = self.resize
        return torch.Size((len(self), c, h, w))

    def dim(self) -> int:
        return 4

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def _positions(self, idx: Any) -> np.ndarray:
        n = len(self)
        if isinstance(idx, slice):
            pos = np.arange(n)[idx]
        elif isinstance(idx, (int, np.integer)):
            i = int(idx)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of range for {n} images")
            pos = np.array([i % n])
        else:
            arr = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
            pos = np.flatnonzero(arr) if arr.dtype == bool else arr.astype(np.int64).reshape(-1)
            if len(pos) and (pos.min() < -n or pos.max() >= n):
                raise IndexError(f"index out of range for {n} images")
            pos = pos % max(n, 1)
        return pos if self.rows is None else self.rows[pos]

    def __getitem__(self, idx: Any) -> torch.Tensor:
        pos = self._positions(idx)
        out = self.read(pos)
        return out[0] if isinstance(idx, (int, np.integer)) else out

    def read(self, positions: np.ndarray) -> torch.Tensor:
        """Rows ``positions`` of the underlying uint8 array (not of this view), standardised."""
        if len(positions) > 1 and np.all(positions[1:] == positions[:-1] + 1):
            u8 = np.array(self.images[positions[0] : positions[-1] + 1])  # contiguous: one sequential read
        else:
            u8 = self.images[positions]  # copies only these rows
        x = standardise(torch.from_numpy(u8), self.mean, self.std, self.resize)
        return self.zca(x) if self.zca is not None else x

    def take(self, idx: Any) -> "ImageStore":
        """A view of rows ``idx`` (no pixels read): what ``tensor[idx]`` is for the in-memory path."""
        return ImageStore(self.images, self.mean, self.std, resize=self.resize, zca=self.zca, rows=self._positions(idx))

    def batches(self, batch_size: int = 4096) -> Iterator[torch.Tensor]:
        for i in range(0, len(self), batch_size):
            yield self[i : i + batch_size]

    def to_tensor(self, batch_size: int = 4096) -> torch.Tensor:
        """The whole view as one float tensor (small sets only: this is what the storage avoids)."""
        return torch.cat(list(self.batches(batch_size))) if len(self) else torch.empty(tuple(self.shape))

    def to(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.to_tensor().to(*args, **kwargs)

    def __repr__(self) -> str:
        return f"ImageStore({tuple(self.shape)}, uint8 on disk, zca={self.zca is not None})"


# ------------------------------------------------------------------------------------------ cache file
def write_cache(
    path: Path,
    splits: Iterable[tuple[str, Iterator[tuple[np.ndarray, np.ndarray]]]],
    header: dict[str, Any],
) -> Path:
    """Stream ``(images uint8 (n, C, H, W), labels)`` chunks of each split into ``path`` atomically.

    The trailer (``header`` plus the splits' shapes and byte offsets) goes last, so nothing about the
    counts must be known before decoding starts (skipped images shrink a split)."""

    def write(fh) -> None:
        offset, meta, labels = 0, {}, {}
        for name, chunks in splits:
            shape, ys, start = None, [], offset
            for x, y in chunks:
                if shape is not None and tuple(x.shape[1:]) != shape:
                    raise UserError(f"{name} images of different sizes ({shape} and {tuple(x.shape[1:])}): pass --image-size")
                shape = tuple(x.shape[1:])
                buf = np.ascontiguousarray(x, dtype=np.uint8)
                fh.write(memoryview(buf).cast("B"))
                offset += buf.nbytes
                ys.append(np.asarray(y, np.int64))
            labels[name] = np.concatenate(ys) if ys else np.zeros(0, np.int64)
            meta[name] = {"offset": start, "count": len(labels[name]), "shape": list(shape or header.get("image_shape", (0, 0, 0)))}
        for name, y in labels.items():
            meta[name]["labels_offset"] = offset
            fh.write(y.tobytes())
            offset += y.nbytes
        trailer = json.dumps({**header, "format": CACHE_FORMAT, "splits": meta, "data_bytes": offset}).encode()
        fh.write(trailer)
        fh.write(_TAIL.pack(len(trailer), _MAGIC))

    return _stream_atomically(path, write)


def _stream_atomically(path: Path, write: Callable) -> Path:
    """``write(fh)`` into a temporary file next to ``path``, fsync, rename over ``path``: a killed or failed
    build never leaves a partial cache (the file is streamed, so :func:`condense.utils.atomic_write_bytes`,
    which takes the bytes whole, does not fit)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise UserError(f"cannot write the cache {path}: {exc.strerror or exc}; pass --cache-dir DIR with free space") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def open_cache(path: Path, fingerprint: str) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]] | None:
    """``(header, {split: (on-disk images, labels)})`` of a cache file that matches ``fingerprint``; else ``None``.

    Anything unexpected (missing, truncated, other format, other sources) means "rebuild", never "trust"."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            if size < _TAIL.size:
                return None
            fh.seek(size - _TAIL.size)
            length, magic = _TAIL.unpack(fh.read(_TAIL.size))
            if magic != _MAGIC or length > size - _TAIL.size:
                return None
            fh.seek(size - _TAIL.size - length)
            header = json.loads(fh.read(length))
        if header.get("format") != CACHE_FORMAT or header.get("fingerprint") != fingerprint:
            return None
        if int(header["data_bytes"]) + length + _TAIL.size != size:
            return None
        out = {}
        for name, m in header["splits"].items():
            count, shape = int(m["count"]), tuple(int(s) for s in m["shape"])
            labels = np.fromfile(path, np.int64, count, offset=int(m["labels_offset"])) if count else np.zeros(0, np.int64)
            images = DiskRows(path, int(m["offset"]), (count, *shape)) if count else np.zeros((0, *shape), np.uint8)
            out[name] = (images, labels)
        return header, out
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None


def default_cache_dir() -> Path:
    """``$CONDENSE_CACHE``, else ``~/.cache/condense``."""
    return Path(os.environ.get("CONDENSE_CACHE") or Path.home() / ".cache" / "condense").expanduser()


def cache_path(root: Path | None, key: str, name: str, cache_dir: str | Path | None) -> Path:
    """Where the cache of ``name`` with ``key`` lives: ``cache_dir`` when given; else next to the data
    (``ROOT/.condense_cache/`` for a directory, the file's folder for a file) when writable; else the
    default cache directory."""
    fname = f"{name}-{key}.u8"
    if cache_dir is not None:
        return Path(cache_dir).expanduser() / fname
    if root is not None:
        base = root if root.is_dir() else root.parent
        target = base / ".condense_cache"
        if (target.is_dir() and os.access(target, os.W_OK)) or (not target.exists() and os.access(base, os.W_OK)):
            return target / fname
    return default_cache_dir() / fname
