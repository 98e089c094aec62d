"""MTT/AST presets: the published values, explicit values beat presets (CLI and Python API), one outer
iteration of a preset through the CLI on a CIFAR-shaped fixture, TESLA's --no-hessian."""
from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import condense.methods.mtt as mtt
from condense.cli import main as cli_main
from condense.data import load_dataset
from condense.methods.mtt import PRESETS, ASTConfig, MTTConfig, apply_preset, given_fields
from condense.synset import SyntheticSet
from condense.utils import UserError

# The author-provided / official-command values (DC-Bench methods/tm/readme.md, MTT issue #31, AST README/distill.sh).
PUBLISHED = {
    "cifar10-ipc1": dict(syn_steps=50, expert_epochs=2, max_start_epoch=2, lr_img=100.0, lr_lr=1e-7, lr_teacher=0.01),
    "cifar10-ipc10": dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=100.0, lr_lr=1e-5, lr_teacher=0.001),
    "cifar10-ipc50": dict(syn_steps=30, expert_epochs=2, max_start_epoch=40, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.001),
    "cifar100-ipc1": dict(syn_steps=20, expert_epochs=3, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01),
    "cifar100-ipc10": dict(syn_steps=20, expert_epochs=2, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01),
    "cifar100-ipc50": dict(syn_steps=80, expert_epochs=2, max_start_epoch=40, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01, batch_syn=125),
    "ast-cifar10-ipc10": dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01,
                              init="real", balance_loss=True, intermediate="uniform", weight_perturb=True, inner_momentum=0.9),
    "ast-cifar100-ipc1": dict(syn_steps=20, expert_epochs=3, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01,
                              init="representative", balance_loss=True, intermediate="uniform", weight_perturb=True),
    "ast-cifar100-ipc10": dict(syn_steps=20, expert_epochs=2, max_start_epoch=30, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01,
                               batch_syn=128, init="representative", balance_loss=False, intermediate="uniform", weight_perturb=True),
}  # fmt: skip
ZCA = {"cifar10-ipc1": True, "cifar10-ipc10": True, "cifar10-ipc50": False, "cifar100-ipc1": True, "cifar100-ipc10": False,
       "cifar100-ipc50": True, "ast-cifar10-ipc10": True, "ast-cifar100-ipc1": True, "ast-cifar100-ipc10": False}  # fmt: skip


def _fake(zca: bool) -> SimpleNamespace:
    return SimpleNamespace(zca=object() if zca else None)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_every_preset_gives_the_published_values(name):
    cls = ASTConfig if name.startswith("ast") else MTTConfig
    cfg = apply_preset(cls(preset=name), _fake(ZCA[name]))
    assert {k: getattr(cfg, k) for k in PUBLISHED[name]} == PUBLISHED[name]
    assert PRESETS[name]["source"] and PRESETS[name]["zca"] == ZCA[name]
    with pytest.raises(UserError, match="ZCA"):
        apply_preset(cls(preset=name), _fake(not ZCA[name]))


def test_explicit_values_beat_the_preset_even_when_equal_to_the_default():
    assert MTTConfig().syn_steps == 20 and MTTConfig().max_start_epoch == 25  # official argparse defaults
    cfg = MTTConfig(preset="cifar10-ipc1", syn_steps=20)
    cfg.lr_img = 1000.0  # assigned later: explicit too
    assert given_fields(cfg) == {"preset", "syn_steps", "lr_img"}
    eff = apply_preset(cfg, _fake(True))
    assert (eff.syn_steps, eff.lr_img, eff.max_start_epoch, eff.lr_lr) == (20, 1000.0, 2, 1e-7)
    assert given_fields(eff) == given_fields(cfg) and cfg.max_start_epoch == 25  # the input is not modified
    ast = apply_preset(ASTConfig(preset="ast-cifar100-ipc10", balance_loss=True), _fake(False))
    assert ast.balance_loss and ast.batch_syn == 128


def test_no_hessian_selectable_and_validated(monkeypatch):
    digits = load_dataset("digits")
    with pytest.raises(UserError, match="no-hessian"):
        mtt.distill_mtt(digits, 1, MTTConfig(hessian=False, train_experts=1), device=torch.device("cpu"), seed=0, progress=False)
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop")

    monkeypatch.setattr(mtt, "unroll_backward", spy)
    cfg = MTTConfig(hessian=False, unroll_mode="constant_memory", train_experts=1, train_expert_epochs=3, max_start_epoch=1,
                    expert_epochs=1, syn_steps=2, iterations=1, width=8)  # fmt: skip
    with pytest.raises(RuntimeError, match="stop"):
        mtt.distill_mtt(digits, 1, cfg, device=torch.device("cpu"), seed=0, progress=False)
    assert seen["hessian"] is False and seen["mode"] == "constant_memory"


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """Random 3x32x32 images in the CIFAR-10 pickle layout: 5 train batches of 20 (2 per class) + a test batch."""
    root = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as fh:
            pickle.dump({"data": rng.randint(0, 256, (20, 3072)).astype(np.uint8), "labels": list(range(10)) * 2}, fh)
    return root.parent


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,preset,ipc,flags,expect",
    [
        ("mtt", "cifar10-ipc1", 1, ["--syn-steps", "20"], dict(PUBLISHED["cifar10-ipc1"], syn_steps=20)),  # explicit == default, kept
        # IPC 1: a cheaper run of the same config. --lr-lr: on 100 random images a 2-epoch expert moves 2 SGD steps, so
        # the normalised matching loss is huge and the published lr_lr would drive the learned lr negative in one step
        ("ast", "ast-cifar10-ipc10", 1, ["--lr-lr", "1e-9"], dict(PUBLISHED["ast-cifar10-ipc10"], lr_lr=1e-9)),
    ],
)
def test_one_outer_iteration_of_a_preset_through_the_cli(cifar_root, tmp_path, capsys, method, preset, ipc, flags, expect):
    out = tmp_path / f"{preset}.pt"
    argv = ["distill", "--method", method, "--preset", preset, "--dataset", "cifar10", "--root", str(cifar_root), "--zca",
            "--ipc", str(ipc), "--iterations", "1", "--width", "8", "--train-experts", "1", "--out", str(out), "--no-progress", *flags]
    assert cli_main(argv) == 0
    s = SyntheticSet.load(out)
    config = s.meta["config"]
    assert {k: config[k] for k in expect} == expect and config["iterations"] == 1 and config["width"] == 8
    assert s.meta["dataset"]["zca"] and s.zca is not None and s.images.shape == (10 * ipc, 3, 32, 32)
    assert s.protocol == ("ast" if method == "ast" else "dc") and s.meta["dsa"]["align_corners"] is True
    assert "effective config" in capsys.readouterr().err
