"""Small shared utilities: user-facing errors, devices, seeding, atomic artifacts.

Everything in the framework that touches the file system or a device goes through
these helpers so that every package (``condense``, ``graphs``, ``synth``) validates
inputs and writes artifacts the same way.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import math
import os
import platform
import random
import re
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import numpy as np
import torch

__all__ = [
    "UserError",
    "resolve_device",
    "synchronize",
    "timed",
    "seed_everything",
    "make_generator",
    "atomic_save",
    "content_checksum",
    "set_verify",
    "atomic_write_bytes",
    "atomic_write_text",
    "safe_load",
    "package_versions",
    "check_positive",
    "check_probability",
    "markdown_table",
]


class UserError(ValueError):
    """An error caused by user input (bad flag, missing file, foreign artifact).

    Command-line entry points catch it and print one line instead of a traceback.
    """


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Turn ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``None`` (auto) into a device.

    Raises :class:`UserError` if the requested device is not available here.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"unknown device {device!r} (expected cpu, cuda, cuda:N or mps)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise UserError(f"device {device!r} requested but MPS is not available on this machine")
    elif dev.type != "cpu":
        raise UserError(f"unsupported device {device!r}")
    return dev


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued kernels (CUDA); a no-op elsewhere. Call before reading a timer."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: str | torch.device) -> float:
    """Wall seconds of one ``fn()`` call, the device synchronised before and after (CUDA is asynchronous)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A dedicated, seeded :class:`torch.Generator` (keeps randomness local and resumable)."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``.NAME.XXXXXXXX.tmp`` files a killed save of ``path`` left behind.

    A live save holds an exclusive ``flock`` on its temporary file, so only abandoned ones can be
    locked here (and removed); a concurrent writer's file is never touched.
    """
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp$")
    try:
        names = [n for n in os.listdir(path.parent) if pattern.match(n)]
    except OSError:
        return
    for name in names:
        stale = path.parent / name
        try:
            fd = os.open(stale, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(stale)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.ENOENT):
                raise
        finally:
            os.close(fd)


def _free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


_MIB = 1 << 20


def _mib(n: int) -> str:
    return f"{n / _MIB:.1f} MiB" if n >= _MIB // 10 else f"{n} bytes"

#: errno values that mean "the device (or the user's quota) is full"
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], size: Callable[[], int], what: str) -> Path:
    """Write through ``write(fh)`` into a temporary file next to ``path``, fsync, then rename over it.

    This is the one save path of every artifact and output file. The temporary file is
    ``flock``-ed while it is written; stale ones of earlier killed saves of the same path are
    removed first. Any :class:`OSError` (disk full, quota, permission lost, ...) removes the
    temporary file, leaves ``path`` as it was and becomes one :class:`UserError` line; when the
    device is full it says how much space the file needs (``size()``) and how much is free.
    """
    path = Path(path)
    tmp = None
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, path)  # still locked: a concurrent cleanup never sees it unlocked
            tmp = None
    except OSError as exc:
        _discard(tmp)
        if exc.errno in _NO_SPACE:
            free = _free_bytes(path.parent if path.parent.exists() else Path("."))
            have = f", {_mib(free)} free" if free is not None else ""
            raise UserError(f"cannot write {what} {path}: no space left on the device (the file needs {_mib(size())}{have}); "
                            f"free some space or write elsewhere; nothing was written") from None  # fmt: skip
        raise UserError(f"cannot write {what} {path}: {exc.strerror or exc}; nothing was written") from None
    except BaseException:
        _discard(tmp)
        raise
    return path


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass


class _CountingSink:
    """A write-only file object that only counts bytes (the size of a ``torch.save`` without writing it)."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes) -> int:
        self.n += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _saved_size(obj: Any) -> int:
    sink = _CountingSink()
    torch.save(obj, sink)
    return sink.n


# ------------------------------------------------------------------------------------ checksums
#: The key under which :func:`atomic_save` stores the content checksum of a dict artifact.
CHECKSUM_KEY = "checksum"
_UNVERIFIED_SEEN: set[str] = set()


def _verify_default() -> bool:
    return os.environ.get("CONDENSE_NO_VERIFY", "") in ("", "0")


_VERIFY = _verify_default()


def set_verify(enabled: bool | None) -> None:
    """Turn checksum verification in :func:`safe_load` on or off for this process (``None``: the default).

    Off is for forensic use only (``--no-verify`` on every command that loads files, or the
    environment variable ``CONDENSE_NO_VERIFY=1``, the default when set): a damaged file is then
    loaded as it is.
    """
    global _VERIFY
    _VERIFY = _verify_default() if enabled is None else bool(enabled)


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}:".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy())  # the buffer itself, no copy
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, (set, frozenset)):
        _feed(h, sorted(obj, key=repr))
    elif isinstance(obj, (bytes, bytearray)):
        h.update(f"B{len(obj)}:".encode() + bytes(obj))
    else:  # str, int, float, bool, None, dtypes, devices: repr is exact and stable (floats round-trip)
        text = repr(obj).encode("utf-8", "surrogateescape")
        h.update(f"{type(obj).__name__}{len(text)}:".encode() + text)


def content_checksum(obj: Any) -> str:
    """``sha256:<hex>`` over the content of an artifact: every tensor's dtype, shape and bytes and every
    plain value, walked in a fixed order (dict keys sorted), so equal content gives equal checksums
    whatever the container bytes of ``torch.save`` are."""
    h = hashlib.sha256()
    _feed(h, obj)
    return "sha256:" + h.hexdigest()


def atomic_save(obj: Any, path: str | os.PathLike, *, what: str = "artifact") -> Path:
    """``torch.save`` to a temporary file in the target directory, then rename over ``path``.

    A crash mid-write never leaves a truncated artifact behind, and an existing file is only
    replaced once the new one is complete. A dict artifact gets its :func:`content_checksum`
    under :data:`CHECKSUM_KEY` (the caller's dict is not changed), which :func:`safe_load` verifies.
    """
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
        obj[CHECKSUM_KEY] = content_checksum(obj)
    return _atomic_write(path, lambda fh: torch.save(obj, fh), lambda: _saved_size(obj), what)


def atomic_write_bytes(data: bytes, path: str | os.PathLike, *, what: str = "file") -> Path:
    """Write ``data`` to ``path`` atomically, like :func:`atomic_save` (figures, raw files)."""
    return _atomic_write(path, lambda fh: fh.write(data), lambda: len(data), what)


def atomic_write_text(text: str, path: str | os.PathLike, *, what: str = "file") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, like :func:`atomic_save` (results tables, JSON)."""
    return atomic_write_bytes(text.encode("utf-8"), path, what=what)


def _verify(obj: dict, path: Path, what: str) -> dict:
    """Check and drop the stored checksum; files without one (written before checksums) load with a warning."""
    stored = obj.pop(CHECKSUM_KEY, None)
    if not _VERIFY:
        return obj
    if stored is None:
        key = str(path.resolve())
        if key not in _UNVERIFIED_SEEN:
            _UNVERIFIED_SEEN.add(key)
            print(f"warning: {path} stores no checksum (written by an older version): loading it unverified; "
                  f"save it again to add one", file=sys.stderr)  # fmt: skip
        return obj
    actual = content_checksum(obj)
    if stored != actual:
        raise UserError(f"{path}: checksum mismatch, this {what} was changed or damaged after it was written "
                        f"(stored {str(stored)[:19]}..., content {actual[:19]}...); pass --no-verify "
                        f"(or set CONDENSE_NO_VERIFY=1) only to inspect it anyway")  # fmt: skip
    return obj


def safe_load(path: str | os.PathLike, *, expected_format: str | None = None, what: str = "artifact") -> dict:
    """Load a dict saved by :func:`atomic_save` with ``weights_only=True`` and verify its checksum.

    If ``expected_format`` is given the dict must carry ``{"format": expected_format}``.
    Any failure (missing, corrupt, foreign file, content that does not match its checksum) becomes
    a one-line :class:`UserError` naming the file; a file without a checksum (written before
    checksums were stored) loads with a one-line warning. :func:`set_verify` turns the check off.
    The returned dict does not contain the checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head[:2] != b"PK" and head[:1] != b"\x80":  # neither torch's zip container nor a legacy pickle
            raise UserError(f"{path} is not a readable {what} (not a file written by torch.save: unrecognised content)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol warnings: the error below says what matters
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise UserError(f"{path}: refusing to load this {what}: it references {found.group(1)}, not only tensors and plain "
                            "data; an artifact of this project never does (the file may be malicious)") from None  # fmt: skip
        if "Weights only load failed" in text:  # torch's advice to disable the protection is not ours to give
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
            text = f"not a tensor file: {detail.group(1).strip() if detail else 'unsupported content'}"
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise UserError(f"{path} is not a readable {what} (corrupt or foreign file: {first[:200]})") from None
    if expected_format is not None:
        fmt = obj.get("format") if isinstance(obj, dict) else None
        if fmt != expected_format:
            raise UserError(f"{path} is not a {what}: expected format {expected_format!r}, found {fmt!r}")
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a {what} (expected a dict, found {type(obj).__name__})")
    return _verify(obj, path, what)


def package_versions(packages: Iterable[str] = ("torch", "torch-geometric", "numpy", "scikit-learn", "condense")) -> dict[str, str]:
    """Versions of the packages that influence results (stored in every artifact)."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Validate a finite positive number (learning rates, temperatures, ...)."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise UserError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def check_probability(name: str, value: float) -> float:
    """Validate a number in [0, 1]."""
    v = check_positive(name, value, allow_zero=True)
    if v > 1:
        raise UserError(f"{name} must lie in [0, 1], got {value!r}")
    return v


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-markdown table (also readable in a terminal)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in cells[1:]])
