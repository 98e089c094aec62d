"""Process policy of the command-line entry points (threads, OpenMP waiting, allocator); import it before ``torch``.

Three settings, each applied only where the user's environment does not already choose (the
user's value always wins), for this process and the processes it starts:

* **Waiting** - torch's CPU wheel runs its intra-op pool on GNU OpenMP, whose default
  ``OMP_WAIT_POLICY`` lets idle workers spin before they sleep. When the cores are oversubscribed
  the spinning workers steal the time slices the working thread needs: the default ``python -m
  graphs.g2m`` took 22 s on an idle 2-core machine, 46 s beside one busy single-threaded process and
  6.5 minutes beside two; with ``OMP_WAIT_POLICY=PASSIVE`` it took 23 s beside one.
  The price is paid on an idle machine by workloads of many tiny ops, where a sleeping worker's
  wake-up is a large share of each op: one ConvNet-64 evaluation (100 8x8 digits, 301 passes with
  DSA, 2 threads; 4 alternating runs on an idle 2-core machine, 2026-12-01) took a median 10.7 s
  passive, 10.0 s with libgomp's default spin-then-sleep and 8.1 s spinning (``ACTIVE``) -- but when
  a busy process started 3 s into the run (the command had seen an idle machine and kept 2 threads)
  it took 14-17 s passive, 33-37 s spin-then-sleep and 30-32 s spinning, and 51 s with a short
  spin (``GOMP_SPINCOUNT=30000``). Passive waiting stays the default; a user on a dedicated machine
  can set ``OMP_WAIT_POLICY=ACTIVE`` (``experiments.bench_threads --late`` measures both).
* **Thread count** - torch's default is one thread per physical core. A parallel region ends when
  its slowest thread does, so a thread sharing a core with another job halves the speed of every
  region (``graphs.g2m`` beside one busy process: 2.0x its idle time with passive waiting). At
  start, :func:`free_cpus` counts the other runnable tasks (``/proc/loadavg``, median of a few
  samples, i.e. what is running *now*, not the lagging 1-minute average) and when fewer cores than
  torch's default are free, ``OMP_NUM_THREADS`` is set to the free count (at least 1). An idle
  machine keeps torch's default exactly. Results are reproducible for a given thread count; a
  different count can change floating-point reduction order in the last bits, so set
  ``OMP_NUM_THREADS`` yourself for bit-identical reruns across machine loads.
* **Allocator** - glibc serves every allocation above its mmap threshold (at most 32 MB when
  adapted dynamically) with a fresh ``mmap`` and returns it on ``free``, so a tensor of 40 MB (one
  ConvNet-128 activation of 100 images of 28x28) is page-faulted in, zero-filled by the kernel,
  every time it is allocated: the unroll benchmark spent ~40 % of its CPU time in the kernel. The
  policy raises the mmap and trim thresholds to 1 GiB (``MALLOC_MMAP_THRESHOLD_`` /
  ``MALLOC_TRIM_THRESHOLD_``, and ``mallopt`` for this already started process), so freed memory
  is reused. Memory cost: a process keeps up to 1 GiB of freed heap for reuse instead of returning
  it at once (its peak is unchanged); allocations of 1 GiB or more are still mapped and unmapped.

libgomp reads its variables once, when torch loads it, so the import must come before ``import
torch``; every ``__main__`` of the project and every ``experiments`` module does that on its first line.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import signal
import statistics
import sys
import threading
import time

__all__ = ["DEFAULTS", "ALLOCATOR", "AUTO_MARK", "apply", "choose_threads", "free_cpus", "physical_cores"]

DEFAULTS: dict[str, str] = {
    "OMP_WAIT_POLICY": "PASSIVE",  # GNU / LLVM OpenMP: sleep instead of spinning while waiting for work
    "KMP_BLOCKTIME": "0",  # Intel OpenMP (MKL builds): the same, in that runtime's terms
}
_GIB = str(2**30)
ALLOCATOR: dict[str, tuple[int, str]] = {  # variable -> (mallopt parameter, value)
    "MALLOC_MMAP_THRESHOLD_": (-3, _GIB),  # M_MMAP_THRESHOLD
    "MALLOC_TRIM_THRESHOLD_": (-1, _GIB),  # M_TRIM_THRESHOLD
}
AUTO_MARK = "CONDENSE_AUTO_THREADS"  # records an OMP_NUM_THREADS this module chose (a child re-chooses it)


def physical_cores(cpus: set[int]) -> int:
    """Physical cores among ``cpus`` (hyper-thread siblings counted once; ``len(cpus)`` if unknown)."""
    cores = set()
    for c in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list") as fh:
                cores.add(fh.read().strip())
        except OSError:
            return len(cpus)
    return max(1, len(cores))


def free_cpus(cpus: int, samples: int = 5, interval: float = 0.01) -> int | None:
    """``cpus`` minus the other runnable tasks now (median over ``samples`` reads of /proc/loadavg)."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as fh:
                running = int(fh.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        counts.append(running - 1)  # the reading process itself is running
        if i + 1 < samples:
            time.sleep(interval)
    return cpus - int(statistics.median(counts))


def choose_threads(default: int, free: int | None) -> int | None:
    """The thread count to impose, or ``None`` to keep torch's ``default`` (enough cores are free)."""
    if free is None or free >= default:
        return None
    return max(1, free)


def _mallopt(settings: dict[str, str]) -> None:
    """Apply allocator variables to this (already started) process; glibc only, else nothing."""
    if not settings or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        for name, value in settings.items():
            libc.mallopt(ALLOCATOR[name][0], ctypes.c_int(int(value)))
    except (OSError, AttributeError):
        return


def apply() -> dict[str, str]:
    """Set the unset variables of the policy (see the module docstring); return the ones this call set."""
    applied = {k: v for k, v in DEFAULTS.items() if k not in os.environ}
    if "malloc" not in os.environ.get("GLIBC_TUNABLES", ""):
        applied.update({k: v for k, (_, v) in ALLOCATOR.items() if k not in os.environ})
    user_threads = "OMP_NUM_THREADS" in os.environ and os.environ.get(AUTO_MARK) != os.environ["OMP_NUM_THREADS"]
    if not user_threads and hasattr(os, "sched_getaffinity"):
        cpus = os.sched_getaffinity(0)
        n = choose_threads(physical_cores(cpus), free_cpus(len(cpus)))
        if n is not None:
            applied.update({"OMP_NUM_THREADS": str(n), AUTO_MARK: str(n)})
        elif AUTO_MARK in os.environ:  # a parent chose for a busier machine; this process re-chose the default
            os.environ.pop("OMP_NUM_THREADS", None)
            os.environ.pop(AUTO_MARK, None)
    os.environ.update(applied)
    _mallopt({k: v for k, v in applied.items() if k in ALLOCATOR})
    return applied


#: packages whose ``python -m`` entry points this module guards while they start
_ENTRY_PACKAGES = ("condense", "synth", "graphs", "experiments")


def _interrupted_while_starting(signum: int, frame: object) -> None:
    os.write(2, b"interrupted while starting; nothing was done\n")
    raise SystemExit(130)


def guard_startup() -> None:
    """Ctrl-C while an entry point imports torch & co. is one line and exit status 130, not a traceback.

    Installed only when the running ``__main__`` is one of the project's entry points and SIGINT has
    its default handler (never in a user's program that imports the project, never over an ignored
    SIGINT); :func:`end_startup` (called by :func:`condense.safeio.cli_main`) hands Ctrl-C back.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None or spec.name.split(".")[0] not in _ENTRY_PACKAGES or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_while_starting)


def end_startup() -> None:
    """Restore Python's Ctrl-C (``KeyboardInterrupt``) once the command runs."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


guard_startup()
apply()
