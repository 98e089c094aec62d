"""Checkpoint / resume for long optimisation loops, bit-for-bit.

A checkpoint stores the loop's tensors and optimiser states plus every random-number-generator
state the loop uses (torch's global CPU/CUDA RNGs and any explicit generators), so that a resumed
run produces exactly the same result as an unbroken one. All randomness of the methods goes
through torch RNGs for this reason. The ``signature`` (method, dataset, ipc, config) must match on
resume, otherwise a :class:`UserError` explains the mismatch.

:meth:`Checkpointer.check` runs before any work: a ``path`` holding a file that is not a checkpoint
of this project, or (without ``resume``) a checkpoint of another run, is refused - never unlinked
or overwritten. The most recently used checkpointer is remembered so that an interrupted command
can say where it stopped (:func:`interrupt_message`).

When to save: every ``every`` iterations and/or every ``interval`` seconds of wall time (the CLIs'
default: every :data:`DEFAULT_INTERVAL` seconds). Interrupts: while a checkpointed loop runs,
:func:`deferred_interrupts` (installed by :func:`condense.safeio.cli_main`) turns the first SIGINT or
SIGTERM into a request: the iteration running now completes, its state is saved, and only then
``KeyboardInterrupt`` is raised, so the checkpoint holds the last completed iteration. A second
signal, or a loop that does not reach its next iteration boundary within a grace period (twice the
longest iteration seen, at least :data:`GRACE_SECONDS`), interrupts at once.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .distributed import is_main_process
from .utils import UserError, atomic_save, atomic_write_text, safe_load

__all__ = ["Checkpointer", "Stages", "add_checkpoint_flags", "checkpoint_path", "checkpointer_from_args", "drop_default_checkpoint", "rng_state", "set_rng_state", "interrupt_message", "forget_progress", "resumes_on_rerun", "kept_result", "user_cache", "default_state_path", "deferred_interrupts",
           "set_command", "DEFAULT_INTERVAL"]

FORMAT = "condense.Checkpoint/1"
#: the CLIs' default checkpoint interval in seconds (``--checkpoint-interval``)
DEFAULT_INTERVAL = 600.0
#: the least time an interrupted loop gets to reach its next iteration boundary and save
GRACE_SECONDS = 5.0


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Snapshot of torch's global RNGs and the given named generators."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    state["generators"] = {k: g.get_state() for k, g in (generators or {}).items()}
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in (generators or {}).items():
        g.set_state(state["generators"][k])


class Checkpointer:
    """Save to ``path`` (atomically) every ``every`` iterations and/or every ``interval`` seconds; load on resume.

    ``every=None`` saves on the time interval only. ``resume=False`` starts fresh even when ``path``
    holds a checkpoint of the same run (it is replaced at the first save); ``resume_hint`` is what
    the interrupt message tells the user to do when the command line is unknown, ``resume_args``
    the flags to append to the command line to resume (``("--resume",)``; none where a rerun resumes).
    ``protect`` (with ``resume=False``): a checkpoint of this very run at ``path`` - the progress of an
    interrupted run - is not silently replaced; :meth:`check` asks for ``--resume`` or ``--overwrite``.
    """

    def __init__(self, path: str | Path, every: int | None = 100, signature: dict[str, Any] | None = None, *,
                 resume: bool = True, resume_hint: str = "rerun the same command to resume", interval: float | None = None,
                 resume_args: Sequence[str] = (), protect: bool = False) -> None:  # fmt: skip
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise UserError(f"checkpoint interval must be an integer >= 1, got {every!r}")
        if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0
                                     or interval == float("inf")):  # fmt: skip
            raise UserError(f"checkpoint interval must be a number of seconds > 0, got {interval!r}")
        if every is None and interval is None:
            raise UserError("a checkpointer needs an iteration count or a time interval")
        self.path, self.every, self.signature = Path(path), every, dict(signature or {})
        self.interval = None if interval is None else float(interval)
        self.resume, self.resume_hint, self.resume_args = bool(resume), resume_hint, tuple(resume_args)
        self.protect = bool(protect)  # check(): refuse to start afresh over a checkpoint of this very run
        self.iteration: int | None = None  # the iteration running now (updated by due())
        self.saved: int | None = None  # the iteration of the last checkpoint written or loaded
        self.looping = False  # a loop has started (load() or due() was called)
        self.on_interrupt = False  # the last checkpoint was written because of an interrupt
        self._last_save = self._last_due = time.monotonic()
        self._longest = 0.0  # the longest time between two due() calls: how long an iteration takes

    def _mark(self) -> None:
        global _ACTIVE
        _ACTIVE, self.looping = self, True

    def due(self, iteration: int) -> bool:
        """Whether the loop should save after ``iteration`` completed iterations (always, once an interrupt is pending)."""
        self._mark()
        self.iteration = int(iteration) - 1
        now = time.monotonic()
        self._longest, self._last_due = max(self._longest, now - self._last_due), now
        if _PENDING:
            return True
        if self.every is not None and iteration % self.every == 0:
            return True
        return self.interval is not None and now - self._last_save >= self.interval

    def save(self, iteration: int, state: dict[str, Any]) -> None:
        """Write the state after ``iteration`` completed iterations; then raise a pending interrupt."""
        self._mark()
        if is_main_process():  # under torch.distributed every rank holds the same state: rank 0 writes, all resume from it
            atomic_save({"format": FORMAT, "iteration": int(iteration), "signature": self.signature, "state": state}, self.path)
        self.saved, self._last_save, self.on_interrupt = int(iteration), time.monotonic(), bool(_PENDING)
        if _PENDING:
            _raise_pending()

    def grace(self) -> float:
        """Seconds an interrupted loop gets to reach its next iteration boundary."""
        return max(GRACE_SECONDS, 2.0 * max(self._longest, time.monotonic() - self._last_due))

    def _read(self) -> dict[str, Any]:
        if self.path.exists() and not self.path.is_file():
            raise UserError(f"checkpoint path {self.path} is not a file")
        obj = safe_load(self.path, what="checkpoint")
        if obj.get("format") != FORMAT:
            raise UserError(f"{self.path} holds a file that is not a checkpoint of this project (format {obj.get('format')!r}); "
                            "refusing to overwrite it - point --checkpoint elsewhere")  # fmt: skip
        return obj

    def _require_same_run(self, obj: dict[str, Any], how: str = "") -> None:
        """Raise unless the checkpoint's signature equals this run's (``how`` says what to do instead)."""
        saved = obj.get("signature", {})
        diffs = sorted(k for k in set(saved) | set(self.signature) if saved.get(k) != self.signature.get(k))
        if diffs:
            k = diffs[0]
            raise UserError(f"checkpoint {self.path} belongs to a different run: "
                            f"{k} is {_short(saved.get(k))} there but {_short(self.signature.get(k))} now{how}")  # fmt: skip

    def check(self) -> None:
        """Validate ``path`` before any work (see the module docstring); raises :class:`UserError`."""
        if not self.path.exists() and not self.path.is_symlink():
            return
        try:
            obj = self._read()
        except UserError as exc:
            msg = str(exc)
            raise UserError(msg if "refusing" in msg else f"{msg}; refusing to overwrite it - point --checkpoint elsewhere") from None
        self._require_same_run(obj, "" if self.resume else " (pass the same settings with --resume to continue it, or point --checkpoint elsewhere)")
        if self.protect and not self.resume:
            raise UserError(f"{self.path} holds this run's checkpoint at iteration {obj.get('iteration')} (an interrupted run?): "
                            "add --resume to continue it, or --overwrite to start over")  # fmt: skip

    def load(self) -> tuple[int, dict[str, Any]] | None:
        """``(iteration, state)`` of the last checkpoint, or ``None`` when there is none yet (or ``resume=False``)."""
        self._mark()
        self._last_save = self._last_due = time.monotonic()
        if not self.resume or not self.path.exists():
            return None
        obj = self._read()
        self._require_same_run(obj)
        self.saved = int(obj["iteration"])
        return self.saved, obj["state"]


class Stages:
    """One checkpoint for a run made of loops that run one after another (a teacher, then each student).

    Iterations are counted over all stages (the checkpoint's iteration). A finished stage keeps what
    its later stages need (:meth:`finish`; e.g. the trained weights) and is skipped on resume; the
    stage running at the last save resumes from its saved state (:meth:`resumed`). ``checkpoint=None``
    turns every call into a no-op, so code paths stay the same with and without checkpoints.
    """

    def __init__(self, checkpoint: Checkpointer | None) -> None:
        self.checkpoint, self.count = checkpoint, 0
        self.done: dict[str, Any] = {}
        self._current: dict[str, Any] | None = None
        loaded = checkpoint.load() if checkpoint is not None else None
        if loaded is not None:
            self.count, blob = loaded
            self.done, self._current = dict(blob["done"]), blob["current"]

    def finished(self, stage: str) -> Any | None:
        """What :meth:`finish` kept for ``stage`` in the resumed run, or ``None``."""
        return self.done.get(stage)

    def resumed(self, stage: str) -> Any | None:
        """The state saved in ``stage``'s last completed iteration when the run stopped inside it, or ``None`` (asked once)."""
        current, self._current = self._current, None
        return current["state"] if current is not None and current["stage"] == stage else None

    def step(self, stage: str, state: Callable[[], Any]) -> None:
        """One iteration of ``stage`` completed: save ``state()`` when due (then raise a pending interrupt)."""
        self.count += 1
        if self.checkpoint is not None and self.checkpoint.due(self.count):
            self.checkpoint.save(self.count, {"done": self.done, "current": {"stage": stage, "state": state()}})

    def finish(self, stage: str, kept: Any) -> None:
        """``stage`` completed; ``kept`` goes into every later checkpoint."""
        self.done[stage] = kept


def add_checkpoint_flags(parser: Any, unit: str = "epochs", default: str = "OUT.ckpt") -> None:
    """The checkpoint flags of ``condense distill`` on another command: ``--checkpoint``, ``--checkpoint-every``,
    ``--checkpoint-interval``, ``--no-checkpoint``, ``--resume`` (read by :func:`checkpointer_from_args`)."""
    from .safeio import output_flag  # safeio imports this module lazily

    parser.add_argument("--checkpoint", default=None, help=f"checkpoint path (default: {default})", **output_flag(resumable=True))
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help=f"save a resumable checkpoint every K {unit} (kept after the run; default: on the time interval only)")
    parser.add_argument("--checkpoint-interval", type=float, default=None, metavar="SECONDS",
                        help=f"save a resumable checkpoint every SECONDS of wall time (default: {DEFAULT_INTERVAL:g}; the default "
                             "checkpoint is deleted when the run completes, an asked-for one is kept)")  # fmt: skip
    parser.add_argument("--no-checkpoint", action="store_true", help="no checkpoints (Ctrl-C then loses the run)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint (bit-for-bit)")


def _explicit(args: Any) -> bool:
    return bool(args.checkpoint_every or args.checkpoint or args.resume or args.checkpoint_interval is not None)


def checkpoint_path(args: Any, default: str | Path) -> Path | None:
    """``--checkpoint`` or ``default``; ``None`` with ``--no-checkpoint`` (refused beside the other checkpoint flags)."""
    if args.no_checkpoint:
        if _explicit(args):
            raise UserError("--no-checkpoint contradicts --checkpoint / --checkpoint-every / --checkpoint-interval / --resume")
        return None
    return Path(args.checkpoint) if args.checkpoint else Path(default)


def checkpointer_from_args(args: Any, path: Path | None, signature: dict[str, Any]) -> Checkpointer | None:
    """The run's checkpointer from :func:`add_checkpoint_flags`' flags, checked before any work (``None`` for no path)."""
    if path is None:
        return None
    if args.resume and not path.exists():
        raise UserError(f"--resume given but no checkpoint at {path}")
    interval = args.checkpoint_interval if args.checkpoint_interval is not None else None if args.checkpoint_every else DEFAULT_INTERVAL
    ckpt = Checkpointer(path, args.checkpoint_every or None, signature=signature, resume=args.resume, resume_hint="rerun with --resume",
                        interval=interval, resume_args=("--resume",), protect=not getattr(args, "overwrite", False))  # fmt: skip
    ckpt.check()
    return ckpt


def drop_default_checkpoint(args: Any, ckpt: Checkpointer | None) -> None:
    """After the results are written: the default safety checkpoint has served its purpose; an asked-for one is kept."""
    if ckpt is not None and not _explicit(args):
        ckpt.path.unlink(missing_ok=True)


class RunState:
    """Finished runs of an experiment kept in a JSON file under their keys, so that a rerun skips them, and
    the checkpoint of the run in progress (``PATH.<key>.ckpt``) for loops that take a :class:`Checkpointer`.
    ``path=None`` keeps nothing."""

    def __init__(self, path: Path | None, interval: float = DEFAULT_INTERVAL) -> None:
        self.path, self.interval = path, interval
        self.rows: dict = {}
        if path is not None and path.is_file():
            try:
                rows = json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError):
                raise UserError(f"{path} is not a state file of this experiment (not JSON): remove it or pass another --state") from None
            if not isinstance(rows, dict):
                raise UserError(f"{path} is not a state file of this experiment: remove it or pass another --state")
            self.rows = rows

    def checkpoint(self, key: str) -> "Checkpointer | None":
        if self.path is None:
            return None
        ck = Checkpointer(self.path.with_name(f"{self.path.name}.{key.replace('/', '-')}.ckpt"), None, {"run": key},
                          interval=self.interval)  # fmt: skip
        ck.check()
        return ck

    def keep(self, key: str, row: Any, ck: "Checkpointer | None" = None) -> None:
        self.rows[key] = row
        if self.path is not None:
            atomic_write_text(json.dumps(self.rows), self.path)
        if ck is not None:
            ck.path.unlink(missing_ok=True)


def user_cache(*parts: str) -> Path:
    """A directory in the user's cache: ``$XDG_CACHE_HOME`` (or ``~/.cache``), then ``condense/PARTS...``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "condense", *parts)


def default_state_path(experiment: str, settings: Any) -> Path:
    """Default ``--state`` of an experiment: a file in the user's cache (:func:`user_cache`, ``experiments``)
    named after the settings that determine its results."""
    return user_cache("experiments") / f"{experiment}-{hashlib.sha256(repr(settings).encode()).hexdigest()[:16]}.json"


def kept_result(path: str | Path, key: str, compute: Callable[[], Any], *, needs: str | Path | None = None) -> tuple[Any, bool]:
    """A finished unit of work (an experiment's row) kept in ``path`` as JSON: ``(result, True)`` when it holds
    ``key`` (the settings that determine the result), else ``(compute(), False)`` after writing it there atomically.
    ``needs``: another output of the same work (a row's saved set); while it is missing the work is done again."""
    path = Path(path)
    if path.is_file() and (needs is None or Path(needs).is_file()):
        try:
            old = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            old = {}
        if isinstance(old, dict) and old.get("key") == key and "result" in old:
            return old["result"], True
    result = compute()
    atomic_write_text(json.dumps({"key": key, "result": result}), path)
    return result, False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_ACTIVE: Checkpointer | None = None
_PENDING: list[int] = []  # the signal whose interrupt waits for the next iteration boundary
_COMMAND: list[str] = []  # the command line being run, for the resume hint
_RERUN: list[str] = []  # where a command that resumes by rerunning keeps its finished work
_OWNER = [0]  # the process that installed the handlers (forked children must not defer)


def forget_progress() -> None:
    """Start of a command: no checkpointer of an earlier in-process command is reported on Ctrl-C."""
    global _ACTIVE
    _ACTIVE = None
    _PENDING.clear()
    _COMMAND.clear()
    _RERUN.clear()


def resumes_on_rerun(kept: str) -> None:
    """This command keeps its finished work (rows, folds, networks) in ``kept`` and a rerun skips it:
    an interrupt outside a checkpointed loop says so and gives the command to rerun."""
    _RERUN[:] = [kept]


def set_command(words: Sequence[str]) -> None:
    """The command line being run (``["python", "-m", "condense", "distill", ...]``), for :func:`interrupt_message`."""
    _COMMAND[:] = [str(w) for w in words]


def _resume_command(ck: Checkpointer) -> str:
    if not _COMMAND:
        return ck.resume_hint
    extra = [a for a in ck.resume_args if a not in _COMMAND]
    return f"resume with: {shlex.join([*_COMMAND, *extra])}"


def interrupt_message() -> str:
    """The one line a command prints on Ctrl-C: where it stopped and how to continue."""
    ck = _ACTIVE
    if _RERUN and (ck is None or ck.saved is None or not ck.path.exists()):  # no checkpoint (left) of the interrupted part
        return f"interrupted; finished work is kept in {_RERUN[0]} - " + (f"resume with: {shlex.join(_COMMAND)}" if _COMMAND else "rerun the same command to resume")
    if ck is None:
        return "interrupted before any checkpointed iteration (nothing to resume)"
    at = f" at iteration {ck.iteration}" if ck.iteration is not None else ""
    if ck.saved is None:
        when = " and ".join(w for w in (f"every {ck.every} iterations" if ck.every else "",
                                        f"every {ck.interval:g} s" if ck.interval else "") if w)  # fmt: skip
        return f"interrupted{at}; no checkpoint written yet (one is saved {when} to {ck.path})"
    if ck.on_interrupt:  # the loop finished its iteration and saved it: nothing is lost
        return f"interrupted at iteration {ck.saved}; the last checkpoint is {ck.path} (iteration {ck.saved}, written on the interrupt) - {_resume_command(ck)}"
    return f"interrupted{at}; the last checkpoint is {ck.path} (iteration {ck.saved}) - {_resume_command(ck)}"


def _raise_pending() -> None:
    signum = _PENDING[0]
    _PENDING.clear()
    signal.setitimer(signal.ITIMER_REAL, 0)
    raise KeyboardInterrupt(signum)


def _on_signal(signum: int, frame: Any) -> None:
    if os.getpid() != _OWNER[0]:  # a forked child inherited the handler: behave as Python would by default
        if signum == signal.SIGTERM:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt
    ck = _ACTIVE
    if _PENDING or ck is None or not ck.looping:
        _PENDING.clear()
        raise KeyboardInterrupt(signum)
    _PENDING.append(signum)  # finish this iteration; due() then saves, save() raises
    signal.setitimer(signal.ITIMER_REAL, ck.grace())


def _on_alarm(signum: int, frame: Any) -> None:
    if _PENDING:  # the loop did not reach an iteration boundary in time (or has ended): stop now
        _raise_pending()


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Within this block SIGINT/SIGTERM stop a checkpointed loop after its current iteration (see the module docstring).

    A signal that is ignored or handled by someone else is left alone: a background job (``nohup CMD &``)
    ignores SIGINT, and its SIGTERM still saves. Outside the main thread nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    take = [s for s, ours in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)) if previous[s] == ours]
    if not take or previous[signal.SIGALRM] not in (signal.SIG_DFL, None):
        yield  # nothing of ours to handle, or somebody else's alarm handler: leave it alone
        return
    _OWNER[0] = os.getpid()
    for s in take:
        signal.signal(s, _on_signal)
    signal.signal(signal.SIGALRM, _on_alarm)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _PENDING.clear()
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
