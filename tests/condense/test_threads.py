"""Thread policy: set before torch by every entry point, overridable by the user's environment."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINTS = sorted(
    [p for p in REPO.glob("*/__main__.py")] + [p for p in REPO.glob("*/*/__main__.py")]
    + [p for p in (REPO / "experiments").glob("*.py") if '__name__ == "__main__"' in p.read_text()]
)  # fmt: skip


from condense.threads import choose_threads

POLICY = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "CONDENSE_AUTO_THREADS")


def _policy(env_extra: dict[str, str], names=("OMP_WAIT_POLICY", "KMP_BLOCKTIME"), then: str = "torch") -> str:
    env = {k: v for k, v in os.environ.items() if k not in POLICY}
    env.update(env_extra, PYTHONPATH=str(REPO))
    code = f"import condense.threads, os, {then}; print(*(os.environ.get(k) for k in {tuple(names)!r}))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_passive_by_default_and_the_users_setting_wins():
    assert _policy({}) == "PASSIVE 0"
    assert _policy({"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": "200"}) == "ACTIVE 200"


def test_allocator_thresholds_by_default_and_the_users_setting_wins():
    names = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    assert _policy({}, names, "sys") == f"{2**30} {2**30}"
    assert _policy({"MALLOC_MMAP_THRESHOLD_": "65536"}, names, "sys") == f"65536 {2**30}"
    assert _policy({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, names, "sys") == "None None"


def test_the_users_thread_count_wins():
    names = ("OMP_NUM_THREADS", "CONDENSE_AUTO_THREADS")
    assert _policy({"OMP_NUM_THREADS": "3"}, names, "sys") == "3 None"


def test_thread_count_follows_the_free_cores():
    assert choose_threads(2, 2) is None  # idle: torch's default, untouched
    assert choose_threads(2, 5) is None
    assert choose_threads(2, None) is None  # /proc/loadavg unreadable
    assert choose_threads(2, 1) == 1
    assert choose_threads(8, 3) == 3
    assert choose_threads(2, -4) == 1  # oversubscribed: never below one thread


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=lambda p: str(p.relative_to(REPO)))
def test_entry_point_imports_the_policy_before_anything_else(path):
    tree = ast.parse(path.read_text())
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and getattr(n, "module", None) != "__future__"]
    first = imports[0]
    assert isinstance(first, ast.Import) and first.names[0].name == "condense.threads", (
        f"{path.name}: the first import must be `import condense.threads` (before torch is loaded)"
    )


def test_bench_threads_compares_with_the_behaviour_before_the_policy(monkeypatch):
    from experiments import bench_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv("CONDENSE_AUTO_THREADS", "7")
    env = bench_threads.clean_env()
    assert "OMP_NUM_THREADS" not in env and "CONDENSE_AUTO_THREADS" not in env  # the entry point decides
    before = bench_threads.before_policy_env()
    assert before["OMP_WAIT_POLICY"] == "" and int(before["OMP_NUM_THREADS"]) >= 1 and "malloc" in before["GLIBC_TUNABLES"]
    row = {"command": "x", "idle": 10.0, "busy": 12.0, "busy, torch default": 20.0,
           "idle load": 0.1, "busy load": 1.0, "busy, torch default load": 1.0}  # fmt: skip
    assert "| 10.0 | 12.0 | 1.20 | 20.0 | 2.00 |" in bench_threads.to_markdown([row], 1)


def test_bench_threads_late_busy_processes_start_after_the_command(monkeypatch, tmp_path):
    from experiments import bench_threads

    started = []
    real = subprocess.Popen

    def popen(args, **kw):
        started.append(args[-1])
        return real(args, **kw)

    monkeypatch.setattr(bench_threads.subprocess, "Popen", popen)
    env = bench_threads.clean_env()
    # the command ends before the delay: no spinner ever starts, and the wait did not take the delay
    assert bench_threads.timed_run("platform", env, 2, str(tmp_path), delay=30) < 30
    assert started == ["platform"]
    started.clear()
    bench_threads.timed_run("timeit -n 1 -r 1 'import time; time.sleep(1.0)'", env, 1, str(tmp_path), delay=0.2)
    assert started == ["import time; time.sleep(1.0)", bench_threads.SPIN]  # the command first, then the spinner
    with pytest.raises(bench_threads.UserError, match="No module named"):
        bench_threads.timed_run("no_such_module_here", env, 0, str(tmp_path))
    row = {"command": "x", "idle": 10.0, "busy": 12.0, "busy, torch default": 20.0, "late": 3.0,
           "idle, torch default": 8.0, "late busy": 15.0, "late busy, torch default": 30.0,
           **{f"{k} load": 0.1 for k in ("idle", "busy", "busy, torch default")}}  # fmt: skip
    text = bench_threads.to_markdown([row], 1)
    assert "started 3 s after" in text and "| 10.0 | 8.0 | 0.80 | 15.0 | 1.50 | 30.0 | 3.00 |" in text
