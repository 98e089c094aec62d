"""Shared reliability mechanisms: one per class of failure, used by every package.

* :func:`safe_unpickle` - the only way the project reads a pickle (Planetoid ``ind.*``, CIFAR batches):
  a restricted unpickler that resolves numpy arrays/dtypes, scipy.sparse matrices and builtin
  containers, and refuses any other global with one line naming the file. Nothing in a data file
  can run code.
* :func:`fingerprint_files` / :func:`fingerprint_tensors` - cheap content fingerprints (sizes plus a
  hash of the first and last MiB of each file; a hash of tensor bytes) for resume signatures and
  for telling stale dataset caches from fresh ones.
* :func:`check_outputs` - before any work, resolve every output and input of a command and refuse
  (one line, nothing written) duplicate outputs, an output that is an input or a file of the
  dataset root, an output that is a directory, and a directory that cannot be created or written.
  Every flag that names a path is declared once, where the parser adds it, with
  ``add_argument(..., **output_flag())`` or ``**input_flag()``; :class:`CLIParser` then runs
  :func:`check_outputs` on the parsed values of every declared flag by itself (no command can
  forget one), refuses an existing output file unless ``--overwrite`` is given (added to every
  command that writes a file), and turns checksum verification off for ``--no-verify`` (added to
  every command that reads a file).
  :func:`lock_outputs` then takes an advisory ``fcntl`` lock per output so that a second process
  writing the same file fails with a clear error instead of silently winning.
* :class:`CLIParser` / :func:`cli_main` - every command line parses with :class:`CLIParser`, which
  turns argparse errors into :class:`~condense.utils.UserError` and checks numeric flags against
  real bounds (finite floats, 64-bit ints, seeds, counts >= 1, known ranges) before any work;
  :func:`cli_main` wraps ``main`` so that a user error is one ``error:`` line with exit status 2,
  Ctrl-C is one line naming the iteration and the last checkpoint with exit status 130, and
  output locks are released.
* :func:`check_labels` / :func:`check_finite_state` - tensors entering training are checked once
  at the boundary (hard labels in ``[0, C)``, soft labels finite, non-negative and normalised,
  finite weights).
"""
from __future__ import annotations

import _compat_pickle
import argparse
import errno
import fcntl
import functools
import hashlib
import math
import os
import pickle
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from .utils import UserError, set_verify

__all__ = [
    "safe_unpickle",
    "check_root",
    "fingerprint_files",
    "fingerprint_tensors",
    "cache_is_stale",
    "mark_cache",
    "check_outputs",
    "output_flag",
    "input_flag",
    "PathFlag",
    "declared_paths",
    "lock_outputs",
    "release_locks",
    "CLIParser",
    "cli_main",
    "check_labels",
    "check_finite_state",
    "check_type",
    "check_training_pair",
    "check_values",
    "check_image_dataset",
    "MAX_ABS_VALUE",
    "check_count",
    "check_seed",
    "parse_list",
]

# ------------------------------------------------------------------------------------- pickles
#: Globals a data pickle may reference: numpy arrays, dtypes and scalars, scipy.sparse matrices
#: (under the module names scipy has used since 0.x), builtin containers and the two helpers
#: Python 2 pickles need to rebuild them. Everything else is refused.
_ALLOWED_GLOBALS = frozenset(
    [("numpy", "ndarray"), ("numpy", "dtype")]
    + [(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")]
    + [(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")]
    + [(m, f"{k}_{kind}") for k in ("csr", "csc", "coo") for kind in ("matrix", "array")
       for m in ("scipy.sparse", f"scipy.sparse.{k}", f"scipy.sparse._{k}")]
    + [("builtins", n) for n in ("list", "dict", "tuple", "set", "frozenset", "bytearray", "object", "int", "float", "complex", "bool", "str", "bytes")]
    + [("collections", "defaultdict"), ("collections", "OrderedDict"), ("copyreg", "_reconstructor"), ("_codecs", "encode")]
)


class _Refused(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__.list, copy_reg._reconstructor) -> Python 3, as Unpickler(fix_imports=True) does
        key = _compat_pickle.NAME_MAPPING.get((module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        if key not in _ALLOWED_GLOBALS:
            raise _Refused(module, name)
        if key[0].startswith("scipy.sparse"):  # old private module paths: resolve from the public namespace
            import scipy.sparse

            return getattr(scipy.sparse, key[1])
        return super().find_class(*key)


def safe_unpickle(path: str | os.PathLike, *, what: str = "data file") -> Any:
    """Unpickle ``path`` (``encoding="latin1"``, for Python 2 pickles) resolving only data classes.

    A pickle that references anything else (``os.system``, ``builtins.open``, a user class, ...) is
    refused with one :class:`UserError` line naming the file and the reference; truncated or
    non-pickle files are a :class:`UserError` too.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh, encoding="latin1").load()
    except _Refused as exc:
        raise UserError(f"{path}: refusing to load this {what}: it references {exc.qualname}, which a data file never "
                        f"contains (the file may be malicious)") from None  # fmt: skip
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - truncated/garbled pickles raise many types
        raise UserError(f"{path} is not a readable {what} (truncated or not a pickle: {type(exc).__name__}: {str(exc)[:120]})") from None


def check_root(root: str | os.PathLike, what: str) -> Path:
    """A dataset root must be an existing directory; the message says which of the two it is not."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{what}: root {root} {'is not a directory' if root.exists() else 'does not exist'}")
    return root


# ---------------------------------------------------------------------------------- fingerprints
_MIB = 1 << 20


def fingerprint_files(paths: Iterable[str | os.PathLike]) -> str:
    """SHA-256 over each file's name, size and first and last MiB (cheap even for GB files)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        size = p.stat().st_size
        h.update(f"{p.name}\0{size}\0".encode())
        with open(p, "rb") as fh:
            h.update(fh.read(_MIB))
            if size > 2 * _MIB:
                fh.seek(size - _MIB)
                h.update(fh.read(_MIB))
            else:
                h.update(fh.read())
    return h.hexdigest()


def fingerprint_tensors(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of ``tensors`` (e.g. a state dict)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}\0{tuple(t.shape)}\0{t.dtype}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


CACHE_MARKER = "condense_raw.sha256"


def _cache_files(processed: Path) -> dict[str, str]:
    """``name -> sha256`` of every file a library cached in ``processed/`` (the marker itself excluded)."""
    out = {}
    for p in sorted(processed.iterdir()):
        if p.is_file() and p.name != CACHE_MARKER and not p.name.startswith("."):
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(_MIB), b""):
                    h.update(block)
            out[p.name] = h.hexdigest()
    return out


def cache_is_stale(processed: Path, fingerprint: str) -> bool:
    """True when ``processed/`` exists but is not exactly what :func:`mark_cache` recorded for raw files
    with this ``fingerprint``.

    Loaders that let a library cache parsed data (PyG's ``processed/``) rebuild when this says so,
    and call :func:`mark_cache` after a successful build. The marker holds the raw fingerprint and
    the SHA-256 of every cached file, so a cache file that was truncated, replaced (e.g. by a
    pickle that PyG would load with ``weights_only=False`` after its safe load fails) or added
    behind a valid marker counts as stale and is rebuilt, never read; a cache without a marker
    (or with a marker of the earlier one-line format) is stale too.
    """
    marker = processed / CACHE_MARKER
    if not processed.exists():
        return False
    try:
        lines = marker.read_text().split("\n") if marker.is_file() else []
        if not lines or lines[0].strip() != fingerprint:
            return True
        recorded = dict(reversed(line.split("  ", 1)) for line in lines[1:] if line.strip())
        return not recorded or recorded != _cache_files(processed)
    except (OSError, ValueError, UnicodeError):
        return True


def mark_cache(processed: Path, fingerprint: str) -> None:
    """Record which raw files ``processed/`` was built from and the hash of every file in it (best
    effort: a read-only root is fine)."""
    from .utils import atomic_write_text

    try:
        files = _cache_files(processed)
        atomic_write_text(fingerprint + "\n" + "".join(f"{h}  {n}\n" for n, h in files.items()), processed / CACHE_MARKER)
    except (OSError, UserError):
        pass


# --------------------------------------------------------------------------------------- outputs
def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _probe_directory(flag: str, target: Path) -> None:
    """The directory that will hold ``target`` exists or can be created, and is writable."""
    parent = target.parent
    anchor = parent
    while not anchor.exists():
        if anchor.parent == anchor:
            break
        anchor = anchor.parent
    if not anchor.is_dir():
        raise UserError(f"{flag} {target}: {anchor} is not a directory")
    try:  # a real probe: works for root, read-only mounts and /proc alike
        fd, probe = tempfile.mkstemp(prefix=".condense-probe.", dir=anchor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{flag} {target}: cannot write into {anchor} ({exc.strerror or exc})") from None


def _resolve(flag: str, p: str | os.PathLike) -> Path:
    """``p`` made absolute with symlinks resolved; a symlink loop or an unencodable name is one line."""
    try:
        path = Path(p).expanduser()
        os.fsencode(path)
        return path.resolve()
    except RuntimeError as exc:  # "Symlink loop from ..." (Python < 3.13)
        raise UserError(f"{flag} {p}: {exc}") from None
    except UnicodeError:
        raise UserError(f"{flag} {p!r}: the path cannot be encoded for this file system") from None
    except OSError as exc:
        raise UserError(f"{flag} {p}: {exc.strerror or exc}") from None


def check_outputs(
    outputs: Mapping[str, str | os.PathLike | None],
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
    *,
    roots: Mapping[str, str | os.PathLike | None] | None = None,
    directories: Sequence[str] = (),
    overwrite: bool = True,
    resumable: Sequence[str] = (),
) -> dict[str, Path]:
    """Validate a command's outputs before any work; return them resolved (``None`` entries dropped).

    ``outputs``/``inputs`` map a flag (``"--out"``) to a path; flags in ``directories`` name output
    directories, the others files; ``roots`` are directories the command reads (dataset roots,
    expert directories). Refused with one :class:`UserError` line: two outputs that are the same
    file, an output that is an input, an output that would replace a file under a root, a file
    output that is a directory (or a directory output that is a file), an output whose directory
    cannot be created or written, and - with ``overwrite=False`` - a file output that already
    exists (except the ``resumable`` ones, e.g. checkpoints a run resumes from). Nothing is written.
    """
    outs = {f: _resolve(f, p) for f, p in outputs.items() if p is not None and str(p) != ""}
    ins = {f: _resolve(f, p) for f, p in (inputs or {}).items() if p is not None and str(p) != ""}
    rts = {f: _resolve(f, r) for f, r in (roots or {}).items() if r is not None and str(r) != ""}
    flags = list(outs)
    for i, a in enumerate(flags):
        for b in flags[i + 1:]:
            if _same(outs[a], outs[b]):
                raise UserError(f"{a} and {b} are the same file ({outs[a]}); give each output its own path")
        for f, p in ins.items():
            if _same(outs[a], p):
                raise UserError(f"{a} {outs[a]} is also the input {f}; refusing to overwrite an input, write elsewhere")
        for f, r in rts.items():
            if a not in directories and r.is_dir() and r in outs[a].parents and outs[a].exists():
                raise UserError(f"{a} {outs[a]} would replace a file inside the dataset root {f} {r}; write elsewhere")
    for flag, p in outs.items():
        if flag in directories:
            if p.exists() and not p.is_dir():
                raise UserError(f"{flag} {p} exists and is not a directory")
            _probe_directory(flag, p / "x")
        else:
            if p.is_dir():
                raise UserError(f"{flag} {p} is a directory; give a file name like {p / 'out.pt'}")
            if not overwrite and flag not in resumable and p.exists():
                raise UserError(f"{flag} {p} already exists (the result of an earlier run?); pass --overwrite to replace it, "
                                f"or choose another path")  # fmt: skip
            _probe_directory(flag, p)
    return outs


class PathFlag(argparse._StoreAction):
    """A flag (or positional) that names a path the command reads (``role="input"``) or writes (``"output"``).

    Declared with :func:`output_flag` / :func:`input_flag`; :class:`CLIParser` collects the parsed
    values of all of them and checks them with :func:`check_outputs` before the command runs.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, *, role: str, directory: bool = False, resumable: bool = False,
                 reads_when: str | None = None, replaces_when: str | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(option_strings, dest, **kwargs)
        self.role, self.directory, self.resumable = role, directory, resumable
        self.reads_when, self.replaces_when = reads_when, replaces_when


def output_flag(*, directory: bool = False, resumable: bool = False, reads_when: str | None = None,
                replaces_when: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``add_argument`` keywords of a flag that writes a path: ``parser.add_argument("--out", **output_flag())``.

    ``directory``: the flag names a directory of outputs (never refused for existing; its files are
    the command's own). ``resumable``: an existing file is state the run resumes from (checkpoints,
    caches), not a result that ``--overwrite`` protects. ``reads_when``: the dest of a boolean flag
    under which the path is read instead of written (``--json`` with ``--figure-only``). ``replaces_when``:
    the dest of a boolean flag that, like ``--overwrite``, lets the run replace an existing file
    (``--resume``: the output belongs to the run being continued).
    """
    return {"action": functools.partial(PathFlag, role="output", directory=directory, resumable=resumable, reads_when=reads_when,
                                        replaces_when=replaces_when)}  # fmt: skip


def input_flag(*, directory: bool = False) -> dict[str, Any]:
    """``add_argument`` keywords of a flag that names a file (or, ``directory``, a dataset root, an expert
    directory) the command reads: no output of the command may be it, or replace a file inside it."""
    return {"action": functools.partial(PathFlag, role="input", directory=directory)}


def _path_flags(parser: argparse.ArgumentParser) -> list[PathFlag]:
    return [a for a in parser._actions if isinstance(a, PathFlag)]


def _install_auto_flags(parser: argparse.ArgumentParser) -> None:
    """``--overwrite`` on every (sub)command that writes a file, ``--no-verify`` on every one that reads one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _install_auto_flags(sub)
    flags = _path_flags(parser)
    known = parser._option_string_actions
    if any(a.role == "output" and not a.directory and not a.resumable for a in flags) and "--overwrite" not in known:
        parser.add_argument("--overwrite", action="store_true", default=argparse.SUPPRESS,
                            help="replace existing output files (default: refuse, so an earlier result is never lost)")  # fmt: skip
    if any(a.role == "input" or a.reads_when or a.resumable for a in flags) and "--no-verify" not in known:
        parser.add_argument("--no-verify", action="store_true", default=argparse.SUPPRESS,
                            help="load files whose content checksum does not match (forensic use only)")  # fmt: skip


def declared_paths(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> list[PathFlag]:
    """The :class:`PathFlag` actions of ``parser`` and of the sub-command chosen in ``ns``."""
    out = list(_path_flags(parser))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(ns, action.dest, None) or "")
            if chosen is not None:
                out += declared_paths(chosen, ns)
    return out


def _check_declared(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    """:func:`check_outputs` over every declared path flag's parsed value (lists: one entry per path)."""
    outputs: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    roots: dict[str, Any] = {}
    directories, resumable = [], []
    for a in declared_paths(parser, ns):
        value = getattr(ns, a.dest, None)
        values = value if isinstance(value, (list, tuple)) else [value]
        flag = a.option_strings[-1] if a.option_strings else a.dest.upper()
        reading = a.role == "input" or (a.reads_when is not None and bool(getattr(ns, a.reads_when, False)))
        for i, v in enumerate(v for v in values if v is not None and str(v) != ""):
            name = flag if len(values) == 1 else f"{flag}[{i}]"
            if reading:  # a root may also be one file (``--dataset arrays --root x.npz``)
                (roots if a.directory and not Path(v).is_file() else inputs)[name] = v
            else:
                outputs[name] = v
                if a.directory:
                    directories.append(name)
                if a.resumable or (a.replaces_when is not None and bool(getattr(ns, a.replaces_when, False))):
                    resumable.append(name)
    check_outputs(outputs, inputs, roots=roots, directories=directories, resumable=resumable,
                  overwrite=bool(getattr(ns, "overwrite", False)))  # fmt: skip


_LOCKS: list[tuple[int, Path]] = []
_LOCK_DIR = Path(tempfile.gettempdir()) / "condense-locks"


def lock_outputs(paths: Iterable[Path], flags: Iterable[str] | None = None) -> None:
    """Take an exclusive advisory lock per output (released by :func:`release_locks` / :func:`cli_main`).

    The lock files live in ``$TMPDIR/condense-locks`` (named by a hash of the resolved output path),
    never next to the user's files. A second process asking for a held lock gets a :class:`UserError`.
    """
    flags = list(flags) if flags is not None else None
    for i, path in enumerate(paths):
        path = Path(path).resolve()
        name = hashlib.sha256(os.fsencode(path)).hexdigest()[:32] + ".lock"
        try:
            _LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
        except OSError:
            return  # no shared lock directory here: run unlocked rather than refuse
        lock = _LOCK_DIR / name
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    flag = flags[i] if flags else "output"
                    raise UserError(f"another process is writing {flag} {path} right now; wait for it to finish or "
                                    f"choose another path") from None  # fmt: skip
                raise
            try:  # the holder may have unlinked the file between our open and flock: retry on the new one
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                _LOCKS.append((fd, lock))
                break
            os.close(fd)


def release_locks() -> None:
    """Release every lock taken by :func:`lock_outputs` in this process."""
    while _LOCKS:
        fd, lock = _LOCKS.pop()
        try:
            os.unlink(lock)
        except OSError:
            pass
        os.close(fd)


# ------------------------------------------------------------------------------- tensor checks
def check_labels(labels: torch.Tensor, num_classes: int | None = None, *, what: str = "labels") -> None:
    """Hard labels: integers in ``[0, num_classes)``; soft labels ``(N, K)``: finite, >= 0, rows summing to 1."""
    if labels.dim() == 2:
        lab = labels.double()
        if not torch.isfinite(lab).all():
            raise UserError(f"{what}: soft labels contain NaN or Inf")
        if (lab < 0).any():
            raise UserError(f"{what}: soft labels contain negative values (min {lab.min().item():.3g})")
        sums = lab.sum(1)
        if len(sums) and not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            worst = sums[(sums - 1).abs().argmax()].item()
            raise UserError(f"{what}: soft-label rows must sum to 1 (found a row summing to {worst:.4g})")
        if num_classes is not None and labels.shape[1] != num_classes:
            raise UserError(f"{what}: soft labels have {labels.shape[1]} columns but the dataset has {num_classes} classes")
        return
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise UserError(f"{what}: class ids must be integers")
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise UserError(f"{what}: class id {lo if lo < 0 else hi} is outside {bound}")


#: the largest magnitude a pixel, feature or weight entering training may have: beyond it a value is
#: corrupt, not data (float32 squares of values above ~1.8e19 overflow to Inf, so a 1e38 "pixel" would
#: silently turn every loss into NaN; no standardised input or trained weight comes near 1e9)
MAX_ABS_VALUE = 1e9


def check_values(tensor: torch.Tensor, what: str, *, limit: float = MAX_ABS_VALUE) -> None:
    """A floating tensor entering training is finite and within ``±limit`` (one :class:`UserError` line
    naming ``what``, how many values are bad and the first bad one); other dtypes pass."""
    if not torch.is_tensor(tensor) or not (tensor.is_floating_point() or tensor.is_complex()) or not tensor.numel():
        return
    t = tensor.detach()
    finite = torch.isfinite(t)
    if not finite.all():
        bad = int((~finite).sum())
        raise UserError(f"{what}: {bad} of {t.numel()} values are NaN or Inf (first: {t[~finite].flatten()[0].item()})")
    big = t.abs() > limit
    if big.any():
        raise UserError(f"{what}: {int(big.sum())} of {t.numel()} values exceed ±{limit:g} in magnitude (first: "
                        f"{t[big].flatten()[0].item():.3g}); the file is corrupt or not in the expected units")  # fmt: skip


def check_image_dataset(dataset: Any, *, test: bool = True) -> Any:
    """A loaded image dataset is usable: a non-empty training split and (``test``: the command scores on it)
    a non-empty test split - an empty one would be "evaluated" as 0.0 % -, as many labels as images,
    and finite, non-absurd pixels. Returns ``dataset``."""
    name = getattr(dataset, "name", "dataset")
    for part, x, y in (("training", dataset.train_x, dataset.train_y), ("test", dataset.test_x, dataset.test_y)):
        if (len(y) == 0 or len(x) == 0) and (part == "training" or test):
            raise UserError(f"dataset {name!r}: the {part} split is empty; there is nothing to "
                            f"{'condense' if part == 'training' else 'evaluate on'} (check the dataset files)")  # fmt: skip
        if len(x) != len(y):
            raise UserError(f"dataset {name!r}: the {part} split has {len(x)} images but {len(y)} labels")
        check_values(x, f"dataset {name!r} {part} images")
    return dataset


def check_type(value: Any, types: type | tuple[type, ...], name: str) -> Any:
    """``value`` is an instance of ``types`` (the public Python API's first check); returns it."""
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))):
        names = " or ".join("None" if t is type(None) else t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise UserError(f"{name} must be of type {names}, got {type(value).__name__}")
    return value


def check_training_pair(x: Any, y: Any, num_classes: int | None = None, *, shape: Sequence[int] | None = None,
                        what: str = "training data") -> None:  # fmt: skip
    """Images and labels handed to a public function: tensors, ``(N, C, H, W)`` images (of ``shape``
    ``(C, H, W)`` when given) with as many hard ``(N,)`` or soft ``(N, K)`` labels, at least one of
    each, finite pixels and valid labels (float class ids are refused, never truncated)."""
    if not isinstance(x, torch.Tensor) and not (hasattr(x, "shape") and hasattr(x, "__getitem__")):  # or a memory-mapped store
        raise UserError(f"{what} images must be a torch.Tensor, got {type(x).__name__}")
    check_type(y, torch.Tensor, f"{what} labels")
    if len(x.shape) != 4:
        raise UserError(f"{what} images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise UserError(f"{what} images have shape {tuple(x.shape[1:])} per image but the dataset's are {tuple(shape)}")
    if y.dim() not in (1, 2):
        raise UserError(f"{what} labels must be (N,) class ids or (N, K) soft labels, got shape {tuple(y.shape)}")
    if len(y) != len(x):
        raise UserError(f"{what}: {len(x)} images but {len(y)} labels")
    if len(x) == 0:
        raise UserError(f"{what} is empty")
    check_values(x, f"{what} images")
    check_labels(y, num_classes, what=f"{what} labels")


def check_finite_state(state: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Every floating tensor of a state dict is finite and not absurd (:func:`check_values`)."""
    for k, t in state.items():
        check_values(t, f"{what}: weight {k!r}")


# ------------------------------------------------------------------------------------ numbers
INT64_MAX = 2**63 - 1


def check_count(name: str, value: Any, minimum: int = 1, maximum: int = INT64_MAX) -> int:
    """An integer in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        hi = "" if maximum == INT64_MAX else f" and <= {maximum}"
        raise UserError(f"{name} must be >= {minimum}{hi}, got {value}")
    return value


def check_seed(name: str, value: Any) -> int:
    """A seed torch, numpy and Python all accept: ``0 <= seed < 2**63``."""
    return check_count(name, value, 0, INT64_MAX)


def parse_list(name: str, text: str, cast: Callable[[str], Any] = str) -> list[Any]:
    """A non-empty comma-separated list (``--models ,`` is refused, not silently empty)."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise UserError(f"{name} must name at least one item, got {text!r}")
    try:
        return [cast(t) for t in items]
    except ValueError as exc:
        raise UserError(f"{name}: bad item in {text!r} ({exc})") from None


#: Flags whose bounds are the same in every command (dest -> (min, max), inclusive; ``None`` = open).
FLAG_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, INT64_MAX), "seeds": (0, INT64_MAX), "split_seeds": (0, INT64_MAX),
    "resize": (4, 1024), "ipc": (1, None), "ipcs": (1, None), "threads": (1, 1024),
    "num_evals": (1, None), "epochs": (1, None), "eval_epochs": (1, None), "full_epochs": (1, None),
    "max_epochs": (1, None), "teacher_epochs": (1, None), "restarts": (1, None), "top": (1, None),
    "max_per_class": (1, None), "checkpoint_every": (0, None), "checkpoint_interval": (0, None), "synset_size": (1, None),
    "batch_size": (1, None), "num_experts": (1, None), "width": (1, None), "hops": (1, 16), "bins": (1, None),
    "nodes": (2, None), "features": (1, None), "queries": (1, None), "repeats": (1, None),
    "lr": (0, None), "weight_decay": (0, None), "zca_eps": (0, None),
    "split_rate": (0, 0.99), "val_fraction": (0, 0.99), "degree": (0, None),
    "support": (0, None), "sweep_supports": (0, None), "sweep_hops": (1, 16), "steps": (1, None),
}
#: of those, the ones whose lower bound is exclusive (``> 0``)
_STRICT_POSITIVE = {"checkpoint_interval", "lr", "zca_eps", "degree", "split_rate", "val_fraction", "support", "sweep_supports"}
#: config fields that count things (``--batch-real``, ``--iterations``, ...) must be >= 1 unless
#: their help documents what 0 means.
_COUNT_FIELD = re.compile(r"(^|_)(iterations|rounds|epochs?|steps|batch|size|width|ngf|nz|k|dim|hidden|bottleneck|student|class)($|_)")
_ZERO_DOCUMENTED = re.compile(r"\b0\s*(=|:)|\(0\b|0 disables|0 = ")


def _check_value(flag: str, dest: str, value: Any, helptext: str) -> None:
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_value(flag, dest, v, helptext)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{flag} must be a finite number, got {value}")
    if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise UserError(f"{flag} {value} does not fit in 64 bits")
    key = dest[4:] if dest.startswith("cfg_") else dest
    lo, hi = FLAG_BOUNDS.get(key, (None, None))
    if lo is None and dest.startswith("cfg_") and isinstance(value, int) and _COUNT_FIELD.search(key) \
            and not _ZERO_DOCUMENTED.search(helptext or ""):
        lo = 1
    strict = key in _STRICT_POSITIVE
    if lo is not None and (value <= lo if strict else value < lo):
        raise UserError(f"{flag} must be {'>' if strict else '>='} {lo}, got {value}")
    if hi is not None and value > hi:
        raise UserError(f"{flag} must be <= {hi}, got {value}")


class CLIParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are :class:`UserError` (one line, exit 2 via :func:`cli_main`)
    and whose parsed numbers are checked against :data:`FLAG_BOUNDS` and the generic rules (finite
    floats, 64-bit ints, counts >= 1) before the command runs. Sub-parsers inherit the class."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        _install_auto_flags(self)
        ns = super().parse_args(args, namespace)
        self._check(ns)
        if getattr(ns, "no_verify", False):
            set_verify(False)  # back to the environment's default when cli_main returns
        _check_declared(self, ns)
        return ns

    def _check(self, ns: argparse.Namespace) -> None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(ns, action.dest, None) or "")
                if isinstance(chosen, CLIParser):
                    chosen._check(ns)
                continue
            if action.dest in (argparse.SUPPRESS, "help") or not hasattr(ns, action.dest):
                continue
            value = getattr(ns, action.dest)
            if value is None or value is action.default:
                continue  # defaults are the project's own values
            flag = action.option_strings[-1] if action.option_strings else action.dest
            _check_value(flag, action.dest, value, action.help or "")




def _module_of(main: Callable[..., int]) -> str:
    """The ``python -m`` name that runs ``main`` (``condense`` for ``condense.cli``, ``graphs.mirage`` for its ``__main__``)."""
    name = main.__module__
    if name == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        name = spec.name if spec is not None else Path(sys.argv[0]).stem
    for suffix in (".__main__", ".cli"):
        name = name.removesuffix(suffix)
    return name


def _tolerant_streams() -> list[Any]:
    """Let stdout/stderr print any file name: a non-UTF-8 name (surrogate-escaped by Python) is shown
    backslash-escaped instead of ending the run in ``UnicodeEncodeError``; returns the streams changed."""
    changed = []
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                continue
            changed.append(stream)
    return changed


def check_environment() -> None:
    """Environment variables a command depends on, checked before any work (one line each).

    ``MPLBACKEND``: matplotlib refuses to import with an unknown backend, which would end a run in a
    traceback at its first figure; only checked when set (importing matplotlib costs ~0.3 s).
    """
    backend = os.environ.get("MPLBACKEND")
    if backend:
        try:
            from matplotlib import rcsetup  # the import itself fails on an unknown backend

            rcsetup.validate_backend(backend)  # (matplotlib may have been imported before the variable was set)
        except ValueError:
            raise UserError(f"MPLBACKEND={backend!r} is not a matplotlib backend; unset it or set MPLBACKEND=Agg "
                            f"(every figure of this project is written to a file)") from None  # fmt: skip


def cli_main(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a command's ``main(argv)``: user errors -> ``error: ...`` and 2; Ctrl-C -> one line and 130
    (SIGTERM: 143). SIGINT/SIGTERM during a checkpointed loop first save the last completed iteration
    (:func:`condense.checkpoint.deferred_interrupts`); the line then gives the command that resumes."""

    from .checkpoint import deferred_interrupts, forget_progress, interrupt_message, set_command  # no cycle: checkpoint imports utils

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        from .threads import end_startup

        end_startup()  # Ctrl-C from here on is this wrapper's (one line, the checkpoint's resume command)
        strict = _tolerant_streams()
        forget_progress()
        argv = args[0] if args and args[0] is not None else kwargs.get("argv")
        set_command(["python", "-m", _module_of(main), *(sys.argv[1:] if argv is None else argv)])
        try:
            check_environment()
            with deferred_interrupts():
                return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except UnicodeEncodeError as exc:  # a non-UTF-8 name (surrogate-escaped) reaching a text stream or file
            print(f"error: {exc.object[max(0, exc.start - 40):exc.end + 40]!a} cannot be encoded as {exc.encoding} "
                  f"(a file name in another encoding?); rename it or set a UTF-8 locale", file=sys.stderr)  # fmt: skip
            return 2
        except KeyboardInterrupt as exc:
            print(interrupt_message(), file=sys.stderr)
            return 128 + (exc.args[0] if exc.args and isinstance(exc.args[0], int) else 2)  # SIGINT 130, SIGTERM 143
        except OSError as exc:  # disk full, permission lost mid-run, ...: the environment, not a bug
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
            return 2
        finally:
            release_locks()
            set_verify(None)
            for stream in strict:
                stream.reconfigure(errors="strict")

    return wrapper
