"""The prepared GPU check: its CPU smoke mode runs every code path, and its audit can fail."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from experiments import bench_device
from experiments.bench_device import DeviceAudit


def test_audit_flags_heavy_calls_off_the_device_and_counts_scalar_reads():
    x, w = torch.randn(4, 3), torch.randn(2, 3)
    audit = DeviceAudit(torch.device("cuda"))  # a CUDA run: every CPU linear is a silent fallback
    with audit:
        y = F.linear(x, w)
        float(y.sum())
    assert audit.off_device() == {"linear@cpu": 1}
    assert audit.scalar_reads == 0  # the read was of a CPU tensor: no device sync
    cpu = DeviceAudit(torch.device("cpu"))
    with cpu:
        y = F.linear(x, w)
        y.sum().item(), y.tolist()
    assert cpu.off_device() == {} and cpu.scalar_reads == 2 and sum(cpu.calls.values()) == 1


@pytest.mark.slow
def test_smoke_run_writes_the_report(tmp_path, capsys, device):
    out = tmp_path / "bench_device.md"
    assert bench_device.main(["--device", str(device), "--smoke", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["ok"] and report["smoke"] and report["off_device"] == {}
    names = [r["method"] for r in report["methods"]]
    assert names == ["DM", "DataDAM", "DC", "DSA", "MTT", "AST", "DAFL", "meta generator", "Mirage training", "GLNN", "FF-G2M"]
    # seconds may be 0 at toy size on a loaded machine (t(1 + n) - t(1) is clipped at 0); the calls are deterministic
    assert all(r["seconds"] >= 0 and r["heavy_calls"] > 0 for r in report["methods"])
    assert {(r["N"], r["mode"]) for r in report["unroll"]} == {(n, m) for n in (2, 3) for m in ("full", "constant_memory")}
    assert [r["ok"] for r in report["correctness"]] == [True] * 4
    assert report["inference"]["nodes"] == 2000 and report["evaluation"]["epochs"] == 2
    text = out.read_text()
    assert "| DataDAM |" in text and "Correctness" in text and capsys.readouterr().out.startswith("# Device check")


def test_bad_device_is_one_error_line(capsys):
    assert bench_device.main(["--device", "tpu", "--smoke"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
