"""Busy-machine robustness: a default command's wall time idle and beside busy processes.

Each command runs (in a fresh process, torch's default thread count: ``OMP_NUM_THREADS`` and the
wait-policy variables are removed from its environment, so the entry point's
:mod:`condense.threads` policy applies) three ways, in this order:

* ``idle`` - alone;
* ``busy`` - beside ``--busy`` single-threaded busy-loop processes (pure Python spinning);
* ``busy, torch default`` - the same, as before the policy existed (:func:`before_policy_env`:
  torch's thread count, libgomp's spin-then-sleep waiting, glibc's default allocator).

With the policy the command sees the busy processes at start and runs with the cores left free
(here: one thread beside one busy process on two cores).

Reported: seconds and the ratios to ``idle`` (target: busy <= 1.5x idle). Other jobs may share the machine, so
its 1-minute load average before each run is printed too.

``--late S`` adds the case the passive wait policy is for: the busy processes start ``S`` seconds
*after* the command, so the command saw an idle machine and kept torch's thread count. Three more
runs: ``idle, torch default wait`` (what passive waiting costs on an idle machine), ``late busy``
and ``late busy, torch default wait`` (libgomp's spin-then-sleep waiting with a core taken away).

    python -m experiments.bench_threads                               # graphs.g2m and graphs.mirage defaults
    python -m experiments.bench_threads --commands "condense" --busy 2
    python -m experiments.bench_threads --commands graphs.mirage --late 3
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from condense.safeio import CLIParser, cli_main, output_flag
from condense.threads import physical_cores
from condense.utils import UserError, atomic_write_text

__all__ = ["clean_env", "before_policy_env", "timed_run", "bench", "to_markdown", "main"]

DEFAULT_COMMANDS = ("graphs.g2m", "graphs.mirage")
POLICY_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "CONDENSE_AUTO_THREADS",
               "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
SPIN = "while True: pass"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the thread variables (the entry point decides), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARS}
    env.update(extra)
    return env


def before_policy_env() -> dict[str, str]:
    """The behaviour before :mod:`condense.threads`: torch's thread count, libgomp's spin-then-sleep
    waiting (an empty ``OMP_WAIT_POLICY`` is ignored) and glibc's default allocator (any
    ``glibc.malloc`` tunable makes the policy leave the allocator alone; ``tcache_count=7`` is glibc's default)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    return clean_env(OMP_WAIT_POLICY="", OMP_NUM_THREADS=str(physical_cores(cpus)), GLIBC_TUNABLES="glibc.malloc.tcache_count=7")


def timed_run(module_and_args: str, env: dict[str, str], busy: int, cwd: str, delay: float = 0.0) -> float:
    """Wall seconds of ``python -m <module_and_args>`` with ``busy`` spinning processes beside it,
    started ``delay`` seconds after the command (before it when 0)."""
    def spin() -> list[subprocess.Popen]:
        return [subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.DEVNULL) for _ in range(busy)]

    spinners = spin() if delay <= 0 else []
    try:
        t0 = time.perf_counter()
        with tempfile.TemporaryFile(mode="w+") as err:
            proc = subprocess.Popen([sys.executable, "-m", *shlex.split(module_and_args)], env=env, cwd=cwd,
                                    stdout=subprocess.DEVNULL, stderr=err, text=True)  # fmt: skip
            if delay > 0:
                try:
                    proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    spinners = spin()
            code = proc.wait()
            secs = time.perf_counter() - t0
            err.seek(0)
            tail = err.read()[-300:].strip()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    if code != 0:
        raise UserError(f"`python -m {module_and_args}` failed ({code}): {tail}")
    return secs


LATE = ("idle, torch default", "late busy", "late busy, torch default")


def bench(commands: Sequence[str], busy: int, log=print, late: float = 0.0) -> list[dict]:
    """One row per command: the three runs of the module docstring, the ``LATE`` three when ``late > 0``."""
    rows = []
    for cmd in commands:
        row: dict = {"command": cmd, "late": late}
        runs = [("idle", clean_env(), 0, 0.0), ("busy", clean_env(), busy, 0.0), ("busy, torch default", before_policy_env(), busy, 0.0)]
        if late > 0:
            runs += [(LATE[0], before_policy_env(), 0, 0.0), (LATE[1], clean_env(), busy, late), (LATE[2], before_policy_env(), busy, late)]
        with tempfile.TemporaryDirectory(prefix="bench-threads-") as cwd:  # the commands' default outputs land here
            for label, env, n, delay in runs:
                load = os.getloadavg()[0]
                row[label] = timed_run(cmd, env, n, cwd, delay)
                row[f"{label} load"] = load
                log(f"{cmd}: {label} {row[label]:.1f} s (load average before: {load:.1f})")
        rows.append(row)
    return rows


def to_markdown(rows: list[dict], busy: int) -> str:
    lines = [
        f"| command | idle s | beside {busy} busy s | ratio | beside {busy} busy, torch default wait s | ratio | load avg before (idle / busy / default) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        i, b, d = r["idle"], r["busy"], r["busy, torch default"]
        loads = " / ".join(f"{r[k + ' load']:.1f}" for k in ("idle", "busy", "busy, torch default"))
        lines.append(f"| `python -m {r['command']}` | {i:.1f} | {b:.1f} | {b / i:.2f} | {d:.1f} | {d / i:.2f} | {loads} |")
    late = [r for r in rows if LATE[0] in r]
    if late:
        lines += [
            "",
            f"Busy processes started {late[0]['late']:g} s after the command (it saw an idle machine and kept torch's thread count):",
            "",
            f"| command | idle, passive wait s | idle, torch default wait s | ratio | beside {busy} late busy, passive s | ratio | "
            f"beside {busy} late busy, torch default wait s | ratio |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in late:
            i, di, lb, ld = r["idle"], r[LATE[0]], r[LATE[1]], r[LATE[2]]
            lines.append(f"| `python -m {r['command']}` | {i:.1f} | {di:.1f} | {di / i:.2f} | {lb:.1f} | {lb / i:.2f} | {ld:.1f} | {ld / i:.2f} |")
    return "\n".join(lines)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = CLIParser(prog="python -m experiments.bench_threads", description=__doc__.splitlines()[0])
    p.add_argument("--commands", nargs="+", default=list(DEFAULT_COMMANDS), help="modules (with arguments) run as python -m ...")
    p.add_argument("--busy", type=int, default=1, help="busy single-threaded processes beside the command (default 1)")
    p.add_argument("--late", type=float, default=0.0,
                   help="also run with the busy processes started LATE seconds after the command (default 0: off)")
    p.add_argument("--out", default=None, help="also write the markdown table here", **output_flag())
    args = p.parse_args(argv)
    try:
        if args.busy < 1:
            raise UserError(f"--busy must be >= 1, got {args.busy}")
        if args.late < 0:
            raise UserError(f"--late must be >= 0 seconds, got {args.late}")
        t0 = time.perf_counter()
        rows = bench(args.commands, args.busy, log=lambda m: print(m, file=sys.stderr, flush=True), late=args.late)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = to_markdown(rows, args.busy) + f"\n\n{os.cpu_count()} CPUs, wall time {time.perf_counter() - t0:.0f} s\n"
    print(text)
    if args.out:
        atomic_write_text(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
