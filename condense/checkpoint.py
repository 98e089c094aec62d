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
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .utils import UserError, atomic_save, safe_load

__all__ = ["Checkpointer", "rng_state", "set_rng_state", "interrupt_message", "forget_progress"]

FORMAT = "condense.Checkpoint/1"


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
    """Save every ``every`` iterations to ``path`` (atomically); load on resume.

    ``resume=False`` starts fresh even when ``path`` holds a checkpoint of the same run (it is
    replaced at the first save); ``resume_hint`` is what the interrupt message tells the user to do.
    """

    def __init__(self, path: str | Path, every: int = 100, signature: dict[str, Any] | None = None, *,
                 resume: bool = True, resume_hint: str = "rerun the same command to resume") -> None:  # fmt: skip
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UserError(f"checkpoint interval must be an integer >= 1, got {every!r}")
        self.path, self.every, self.signature = Path(path), int(every), dict(signature or {})
        self.resume, self.resume_hint = bool(resume), resume_hint
        self.iteration: int | None = None  # the iteration running now (updated by due())
        self.saved: int | None = None  # the iteration of the last checkpoint written or loaded

    def due(self, iteration: int) -> bool:
        global _ACTIVE
        _ACTIVE, self.iteration = self, int(iteration) - 1
        return iteration % self.every == 0

    def save(self, iteration: int, state: dict[str, Any]) -> None:
        global _ACTIVE
        atomic_save({"format": FORMAT, "iteration": int(iteration), "signature": self.signature, "state": state}, self.path)
        _ACTIVE, self.saved = self, int(iteration)

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

    def load(self) -> tuple[int, dict[str, Any]] | None:
        """``(iteration, state)`` of the last checkpoint, or ``None`` when there is none yet (or ``resume=False``)."""
        global _ACTIVE
        _ACTIVE = self
        if not self.resume or not self.path.exists():
            return None
        obj = self._read()
        self._require_same_run(obj)
        self.saved = int(obj["iteration"])
        return self.saved, obj["state"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_ACTIVE: Checkpointer | None = None


def forget_progress() -> None:
    """Start of a command: no checkpointer of an earlier in-process command is reported on Ctrl-C."""
    global _ACTIVE
    _ACTIVE = None


def interrupt_message() -> str:
    """The one line a command prints on Ctrl-C: where it stopped and how to continue."""
    ck = _ACTIVE
    if ck is None:
        return "interrupted before any checkpointed iteration (nothing to resume)"
    at = f" at iteration {ck.iteration}" if ck.iteration is not None else ""
    if ck.saved is None:
        return f"interrupted{at}; no checkpoint written yet (one is saved every {ck.every} iterations to {ck.path})"
    return f"interrupted{at}; the last checkpoint is {ck.path} (iteration {ck.saved}) - {ck.resume_hint}"
