"""Checkpoint / resume for long optimisation loops, bit-for-bit.

A checkpoint stores the loop's tensors and optimiser states plus every random-number-generator
state the loop uses (torch's global CPU/CUDA RNGs and any explicit generators), so that a resumed
run produces exactly the same result as an unbroken one. All randomness of the methods goes
through torch RNGs for this reason. The ``signature`` (method, dataset, ipc, config) must match on
resume, otherwise a :class:`UserError` explains the mismatch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .utils import UserError, atomic_save, safe_load

__all__ = ["Checkpointer", "rng_state", "set_rng_state"]

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
    """Save every ``every`` iterations to ``path`` (atomically); load on resume."""

    def __init__(self, path: str | Path, every: int = 100, signature: dict[str, Any] | None = None) -> None:
        if every < 1:
            raise UserError(f"checkpoint interval must be >= 1, got {every}")
        self.path, self.every, self.signature = Path(path), int(every), dict(signature or {})

    def due(self, iteration: int) -> bool:
        return iteration % self.every == 0

    def save(self, iteration: int, state: dict[str, Any]) -> None:
        atomic_save({"format": FORMAT, "iteration": int(iteration), "signature": self.signature, "state": state}, self.path)

    def load(self) -> tuple[int, dict[str, Any]] | None:
        """``(iteration, state)`` of the last checkpoint, or ``None`` when there is none yet."""
        if not self.path.exists():
            return None
        obj = safe_load(self.path, expected_format=FORMAT, what="checkpoint")
        saved = obj.get("signature", {})
        diffs = [k for k in set(saved) | set(self.signature) if saved.get(k) != self.signature.get(k)]
        if diffs:
            k = sorted(diffs)[0]
            raise UserError(
                f"checkpoint {self.path} belongs to a different run: {k} is {saved.get(k)!r} there but {self.signature.get(k)!r} now"
            )
        return int(obj["iteration"]), obj["state"]
