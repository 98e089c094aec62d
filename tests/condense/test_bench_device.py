"""The prepared GPU check: its CPU smoke mode runs every code path, and its audit can fail."""
from __future__ import annotations

import dataclasses
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


def test_audit_names_the_library_line_of_each_read_and_sync_debug_is_cuda_only():
    from condense.augment import DSA

    audit = DeviceAudit(torch.device("cpu"))
    with audit:
        DSA("color_crop_cutout_flip_scale_rotate").sample(1, (8, 8), torch.Generator().manual_seed(0))
    (site,) = audit.read_sites  # DSA's single-mode group draw: int(torch.randint(...))
    assert site.startswith("condense/augment.py:") and site.endswith(" __int__")
    with bench_device._sync_debug(torch.device("cpu"), True) as sites:
        torch.ones(2).sum().item()
    assert sites == {}  # the sync debug mode exists only on CUDA; off CUDA nothing is counted


@pytest.mark.parametrize("method, overrides", [("dc", {}), ("datadam", {"class_by_class": True, "dsa_strategy": "none"})])
def test_per_class_losses_cost_one_host_read_per_step(method, overrides, device):
    """DC and DataDAM class-by-class read their step's loss once (a stacked .tolist()), not once per class."""
    dataset = bench_device.random_dataset(1, 8, per_class=6)
    sizes = dataclasses.replace(bench_device.SIZES["smoke"], image=(1, 8, 8), per_class=6)
    run = bench_device._distill_runner(method, dataset, sizes, device, 0, **overrides)
    audits = [DeviceAudit(device), DeviceAudit(device)]
    for k, audit in enumerate(audits, start=1):
        with audit:
            run(k)
    assert audits[1].scalar_reads - audits[0].scalar_reads == 1 and audits[1].off_device() == {}
    (site,) = audits[1].read_sites - audits[0].read_sites
    assert site.endswith(" tolist")


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
    assert "by call site" in text and all("sync_debug_sites" not in r for r in report["methods"])  # CUDA only
    assert all(site.split(":")[0].startswith(("condense/", "graphs/", "synth/")) or site.startswith("?")
               for r in report["methods"] for site in r["scalar_read_sites"])  # fmt: skip


def test_bad_device_is_one_error_line(capsys):
    assert bench_device.main(["--device", "tpu", "--smoke"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_gpu_check_script_parses_and_names_existing_tests():
    """The prepared GPU command cannot rot silently: valid bash, and every test file it runs exists."""
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = root / "experiments" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    tests = re.findall(r"tests/\S+\.py", script.read_text())
    assert tests and all((root / t).is_file() for t in tests)
    assert "experiments.bench_device" in script.read_text()
