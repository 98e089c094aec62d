"""Thread policy of the command-line entry points; import it before ``torch``.

torch's CPU wheel runs its intra-op pool on GNU OpenMP, whose default ``OMP_WAIT_POLICY`` lets idle
workers spin before they sleep. When the cores are oversubscribed (other jobs on a shared machine)
the spinning workers steal the time slices the working thread needs: the default ``python -m
graphs.g2m`` took 22 s on an idle 2-core machine, 46 s beside one busy single-threaded process and
6.5 minutes beside two (issue 18); with ``OMP_WAIT_POLICY=PASSIVE`` it took 23 s beside one.

Importing this module sets, for this process and the processes it starts, every variable of
:data:`DEFAULTS` that the user's environment does not already set (the user's value always wins).
libgomp reads them once, when torch loads it, so the import must come before ``import torch``;
every ``__main__`` of the project and every ``experiments`` module does that on its first line.
The thread count is left at torch's default (one per physical core): a different count can change
floating-point reduction order, and with passive waiting the default already degrades gracefully
(``experiments.bench_threads`` measures it). Set ``OMP_NUM_THREADS`` to choose another.
"""
from __future__ import annotations

import os

__all__ = ["DEFAULTS", "apply"]

DEFAULTS: dict[str, str] = {
    "OMP_WAIT_POLICY": "PASSIVE",  # GNU / LLVM OpenMP: sleep instead of spinning while waiting for work
    "KMP_BLOCKTIME": "0",  # Intel OpenMP (MKL builds): the same, in that runtime's terms
}


def apply() -> dict[str, str]:
    """Set the unset variables of :data:`DEFAULTS`; return the ones this call set."""
    applied = {k: v for k, v in DEFAULTS.items() if k not in os.environ}
    os.environ.update(applied)
    return applied


apply()
