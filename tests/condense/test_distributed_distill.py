"""Distillation on torch.distributed: k gloo ranks (spawned here) give one process's result.

One spawned 2-rank job runs every case; the parent computes the 1-process references. float64 so
that the only difference left is summation order: DM without BatchNorm, DC and DSA (classes own
disjoint image slices) are compared bit for bit, the rest to ``RTOL`` (the loss history, float64)
and one float32 rounding (the stored images).
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from condense.data import load_dataset
from condense.distributed import DistContext, require_shares
from condense.methods import get_method
from condense.methods.mtt import ASTConfig, MTTConfig
from condense.utils import UserError, safe_load

RTOL = 1e-9  # float64, summation order only
WIDTH = 8
SMALL = dict(iterations=2, batch_real=8, width=WIDTH)
GM = dict(iterations=2, batch_real=8, width=WIDTH, outer_loop=2, inner_loop=1)
TM = dict(iterations=2, syn_steps=4, expert_epochs=1, max_start_epoch=2, batch_syn=6, width=WIDTH, lr_img=10.0, lr_lr=1e-6,
          train_experts=1, train_expert_epochs=3)  # fmt: skip

# name -> (method, config kwargs, exact)
CASES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "dm": ("dm", SMALL, True),
    "dm_bn": ("dm", {**SMALL, "model": "convnet_bn"}, False),
    "datadam": ("datadam", SMALL, False),
    "datadam_bn": ("datadam", {**SMALL, "norm": "batchnorm"}, False),
    "dc": ("dc", GM, True),
    "dsa_bn": ("dsa", {**GM, "model": "convnet_bn"}, True),
    "mtt_full": ("mtt", {**TM, "unroll_mode": "full"}, False),
    "mtt_truncated": ("mtt", {**TM, "unroll_mode": "truncated", "truncate": 2}, False),
    "mtt_constant": ("mtt", {**TM, "unroll_mode": "constant_memory"}, False),
    "ast_full": ("ast", {**TM, "unroll_mode": "full", "init": "real"}, False),
    "ast_constant": ("ast", {**TM, "unroll_mode": "constant_memory", "init": "real"}, False),
    "ast_truncated": ("ast", {**TM, "unroll_mode": "truncated", "truncate": 3, "init": "real"}, False),
    "mtt_higher_full": ("mtt", {**TM, "unroll_mode": "full", "backend": "higher"}, False),
    "mtt_higher_truncated": ("mtt", {**TM, "unroll_mode": "truncated", "truncate": 2, "backend": "higher"}, False),
    "ast_higher_truncated": ("ast", {**TM, "unroll_mode": "truncated", "truncate": 3, "init": "real", "backend": "higher"}, False),
    "mtt_train_experts2": ("mtt", {**TM, "train_experts": 2}, False),
}
IPC = 2
# refusals, run in the same spawned job: name -> (method, config kwargs per rank, expected message)
REFUSALS: dict[str, tuple[str, Any, str]] = {
    "refuse_batch": ("mtt", lambda rank: {**TM, "batch_syn": 1}, "2 ranks but only 1 synthetic images per student step"),
    "refuse_flags": ("dm", lambda rank: {**SMALL, "iterations": 2 + rank}, "different settings (rank 1 differs from rank 0)"),
}


def _dataset():
    ds = load_dataset("digits", None)
    ds.train_x, ds.test_x = ds.train_x.double(), ds.test_x.double()
    return ds


def _run(name: str, ds, rank: int = 0) -> dict[str, Any]:
    method, cfg = CASES[name][:2] if name in CASES else (REFUSALS[name][0], REFUSALS[name][1](rank))
    spec = get_method(method)
    with _expert_log() as experts:
        s = spec.distill(ds, IPC, spec.config_cls(**cfg), device="cpu", seed=3, progress=False)
    return {"images": s.images, "lr": s.lr, "history": s.meta["loss_history"], **experts}


@contextlib.contextmanager
def _expert_log() -> Iterator[dict[str, list]]:
    """Record the seeds of the experts this process trains (``trained``) and the (seed, trajectory) of
    every expert file MTT/AST read (``experts``), by wrapping the real functions."""
    import condense.experts as experts_mod
    import condense.methods.mtt as mtt_mod

    log: dict[str, list] = {"trained": [], "experts": []}
    train_one, buffer_cls = experts_mod.train_expert, mtt_mod.ExpertBuffer

    def train_expert(*args: Any, **kwargs: Any) -> dict[str, Any]:
        log["trained"].append(kwargs["seed"])
        return train_one(*args, **kwargs)

    def buffer(directory: str, *args: Any, **kwargs: Any) -> Any:
        for f in sorted(Path(directory).glob("expert_*.pt")):
            payload = safe_load(f, what="expert trajectory")
            log["experts"].append((f.name, payload["seed"], payload["trajectory"]))
        return buffer_cls(directory, *args, **kwargs)

    experts_mod.train_expert, mtt_mod.ExpertBuffer = train_expert, buffer
    try:
        yield log
    finally:
        experts_mod.train_expert, mtt_mod.ExpertBuffer = train_one, buffer_cls


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, names: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    # a gradient taken through an all-reduce with no autograd formula (higher's create_graph step) must fail
    warnings.filterwarnings("error", message="c10d::allreduce_: an autograd kernel was not registered")
    ds = _dataset()
    results = {}
    for name in names:
        try:
            results[name] = _run(name, ds, rank)
        except UserError as exc:
            results[name] = {"error": str(exc)}
    torch.save(results, f"{out}.{rank}")


def _spawn(world: int, names: list[str], tmp: Path) -> list[dict[str, Any]]:
    out = tmp / f"dist_{world}.pt"
    job = torch.multiprocessing.spawn(_worker, args=(world, _free_port(), str(out), names), nprocs=world, join=False)
    deadline = time.monotonic() + 900  # minutes on a loaded 2-core machine; a hang must not block the suite
    while not job.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in job.processes:
                proc.kill()
            pytest.fail(f"the {world}-rank job did not finish in 900 s")
    return [torch.load(f"{out}.{r}", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def two_rank(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every rank's results of one spawned 2-rank job (all cases, then the refusals)."""
    return _spawn(2, [*CASES, *REFUSALS], tmp_path_factory.mktemp("dist"))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_equal_one_process(two_rank: list[dict[str, Any]], name: str) -> None:
    torch.set_default_dtype(torch.float64)
    try:
        ref = _run(name, _dataset())
    finally:
        torch.set_default_dtype(torch.float32)
    got = two_rank[0][name]
    assert "error" not in got, got
    assert torch.equal(two_rank[1][name]["images"], got["images"])  # every rank ends with the same set
    assert len(got["history"]) == len(ref["history"]) == CASES[name][1]["iterations"] * CASES[name][1].get("outer_loop", 1)
    if CASES[name][2]:
        assert torch.equal(got["images"], ref["images"])
        assert got["history"] == ref["history"]
    else:  # sets are stored in float32: one float32 ulp at most; the float64 loss history to RTOL
        torch.testing.assert_close(got["images"], ref["images"], rtol=2e-7, atol=1e-7)
        torch.testing.assert_close(torch.tensor(got["history"]), torch.tensor(ref["history"]), rtol=RTOL, atol=0)
    if ref["lr"] is not None:
        assert got["lr"] == pytest.approx(ref["lr"], rel=RTOL)
    if "train_experts" in CASES[name][1]:  # each rank trained its share; every rank read the one-process set
        k, base = CASES[name][1]["train_experts"], 3 + 1_000_000
        assert ref["trained"] == [base + i for i in range(k)]
        assert [r[name]["trained"] for r in two_rank] == [[base + i for i in range(r, k, 2)] for r in range(2)]
        names = [(f"expert_{i:05d}.pt", base + i) for i in range(k)]
        for rank_results in two_rank:
            seen = rank_results[name]["experts"]
            assert [e[:2] for e in seen] == [e[:2] for e in ref["experts"]] == names
            for (*_, traj), (*_, ref_traj), (*_, traj0) in zip(seen, ref["experts"], got["experts"]):
                assert all(torch.equal(traj[p], traj0[p]) for p in traj)  # the same bytes on every rank
                torch.testing.assert_close(traj, ref_traj, rtol=RTOL, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusals_reach_every_rank(two_rank: list[dict[str, Any]], name: str) -> None:
    for rank_results in two_rank:
        assert REFUSALS[name][2] in rank_results[name].get("error", ""), rank_results[name]


def test_more_ranks_than_units_refused() -> None:
    with pytest.raises(UserError, match="11 ranks but only 10 classes"):
        require_shares(DistContext(3, 11), 10, "classes")
    require_shares(DistContext(0, 10), 10, "classes")


def test_block_split_and_single_process_helpers() -> None:
    blocks = [DistContext(r, 3).block(10) for r in range(3)]
    assert [list(b) for b in blocks] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    ctx = DistContext()
    assert ctx.block(5) == range(5) and ctx.is_main and not ctx.active
    v = {0: torch.tensor(1.5), 1: torch.tensor(2.5)}
    assert ctx.gather_units(v, 2).tolist() == [1.5, 2.5]


# ----------------------------------------------------------------------------- the CLI under a 2-rank launch
DM_ARGS = ["--method", "dm", "--dataset", "digits", "--ipc", "2", "--iterations", "150", "--batch-real", "32", "--width", "16",
           "--seed", "5", "--no-progress", "--checkpoint-every", "1"]  # fmt: skip
REPO = Path(__file__).resolve().parents[2]


def _launch(world: int, args: list[str], port: int) -> list[subprocess.Popen]:
    procs = []
    for rank in range(world):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                   WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1")  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-m", "condense", "distill", *args], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
    return procs


def _iteration(path: Path) -> int:
    from condense.utils import safe_load

    try:
        return int(safe_load(path, what="checkpoint")["iteration"])
    except (UserError, OSError, KeyError):
        return 0


@pytest.mark.slow
def test_cli_dying_rank_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """Rank 1 is killed mid-run: rank 0 stops with one line naming it and writes no set; ``--resume`` on
    2 ranks then finishes from rank 0's checkpoint and equals an uninterrupted one-process run bit for bit."""
    import signal

    from condense.synset import SyntheticSet

    out, ckpt = tmp_path / "dm.pt", tmp_path / "dm.ckpt"
    args = [*DM_ARGS, "--out", str(out), "--checkpoint", str(ckpt)]
    procs = _launch(2, args, _free_port())
    deadline = time.monotonic() + 120
    while _iteration(ckpt) < 3 and time.monotonic() < deadline and procs[0].poll() is None:
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    _, err0 = procs[0].communicate(timeout=120)
    procs[1].communicate(timeout=30)
    stopped_at = _iteration(ckpt)
    assert procs[0].returncode == 2, err0
    assert 3 <= stopped_at < 150
    lines = [ln for ln in err0.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "rank 1 stopped" in lines[0], err0
    assert not out.exists()

    procs = _launch(2, [*args, "--resume"], _free_port())
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    resumed = SyntheticSet.load(out)

    spec = get_method("dm")
    ref = spec.distill(load_dataset("digits", None), 2, spec.config_cls(iterations=150, batch_real=32, width=16), seed=5, progress=False)
    assert torch.equal(resumed.images, ref.images)
    assert resumed.meta["loss_history"] == ref.meta["loss_history"]


def test_more_local_ranks_than_gpus_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from condense.distributed import launch_context

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="2 ranks on this node but only 1 GPU"):
        launch_context(torch.device("cuda"))
