"""MTT / AST: the switches, representative init, matching on held-out experts, resume, bad input, CLI."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from condense.checkpoint import Checkpointer
from condense.cli import main as cli_main
from condense.data import load_dataset
from condense.experts import ExpertBuffer, train_experts
from condense.methods.ast_init import representative_indices
from condense.methods.base import build_network, init_synthetic
from condense.methods.mtt import (
    ASTConfig, MTTConfig, _matching_targets, apply_preset, balance_weight, distill_mtt, perturb_weights,
)  # fmt: skip
from condense.synset import SyntheticSet
from condense.unroll import InnerSGD, functional_loss, unroll
from condense.utils import UserError, make_generator

from .test_experts import FAST, _one_thread, digits  # noqa: F401  (shared fixtures: one thread, the digits dataset)

WIDTH = 8
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def experts(digits, tmp_path_factory):
    """Two training experts and one held-out expert (4 epochs, ConvNet-8, no DSA)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    train_dir, held_out = tmp_path_factory.mktemp("train_experts"), tmp_path_factory.mktemp("held_out")
    kw = dict(epochs=4, recipe=FAST, model_kwargs={"width": WIDTH}, progress=False)
    train_experts(digits, train_dir, num_experts=2, seed=5, **kw)
    train_experts(digits, held_out, num_experts=1, seed=99, **kw)
    torch.set_num_threads(before)
    return train_dir, held_out


def small(cls=MTTConfig, **kw):
    """Test scale. AST's kernel perturbation is scaled by width / 128 (at alpha = 1 it swamps a ConvNet-8's 2-epoch move)."""
    base = dict(iterations=2, syn_steps=6, expert_epochs=2, max_start_epoch=3, lr_img=10.0, lr_lr=1e-7, width=WIDTH,
                dsa_strategy="none", perturb_alpha=WIDTH / 128)  # fmt: skip
    if cls is ASTConfig:
        base["lr_teacher"] = 0.003
    return cls(**{**base, **kw})


def test_balance_weight_formula():
    assert balance_weight(10, 20) == pytest.approx(math.log(8, 5))
    assert balance_weight(15, 20) == pytest.approx(math.log(13, 5))
    assert balance_weight(0, 20) == pytest.approx(1 / math.log(18, 5))
    assert balance_weight(0, 20) < 1 < balance_weight(19, 20)


def test_perturbation_only_touches_conv_kernels_with_unit_relative_norm():
    gen = make_generator(0)
    params = {"conv.weight": torch.randn(4, 3, 3, 3) + 2.0, "conv.bias": torch.randn(4), "fc.weight": torch.randn(5, 4)}
    out = perturb_weights(params, 0.5, gen)
    assert torch.equal(out["conv.bias"], params["conv.bias"]) and torch.equal(out["fc.weight"], params["fc.weight"])
    rel = (out["conv.weight"] - params["conv.weight"]) / params["conv.weight"]
    assert float(rel.norm()) == pytest.approx(0.5, rel=1e-5)


def test_matching_targets():
    assert _matching_targets(small(syn_steps=20, expert_epochs=3)) == {20: (3, 1.0)}
    assert _matching_targets(small(syn_steps=20, expert_epochs=3, intermediate="uniform")) == {20: (3, 1.0), 6: (1, 1.0), 12: (2, 1.0)}
    lin = _matching_targets(small(syn_steps=20, expert_epochs=3, intermediate="linear"))
    assert lin[6] == (1, pytest.approx(1 / 3)) and lin[12] == (2, pytest.approx(2 / 3))
    assert _matching_targets(small(syn_steps=2, expert_epochs=3, intermediate="uniform")) == {2: (3, 1.0)}


def test_representative_init_at_ipc_1_is_nearest_to_class_mean_logits(digits, experts):
    buf = ExpertBuffer(experts[0], digits, model_kwargs={"width": WIDTH})
    params = {k: v[-1] for k, v in buf.trajectory(0).items()}
    net = build_network("convnet", digits, WIDTH)
    idx = representative_indices(digits, 1, net, params)
    assert len(idx) == 10 and digits.train_y[idx].tolist() == list(range(10))
    with torch.no_grad():
        for c in range(10):
            members = torch.nonzero(digits.train_y == c).flatten()
            logits = torch.func.functional_call(net, params, (digits.train_x[members],))
            assert int(idx[c]) == int(members[((logits - logits.mean(0)) ** 2).sum(1).argmin()])
    idx3 = representative_indices(digits, 3, net, params)
    assert len(set(idx3.tolist())) == 30 and digits.train_y[idx3].tolist() == sorted(list(range(10)) * 3)
    assert len(representative_indices(digits, 10, net, params, clusters="official")) == 100
    with pytest.raises(UserError, match="divisible by 10"):
        representative_indices(digits, 1, net, params, clusters="official")


def held_out_matching_loss(digits, held_out, images, labels, lr, momentum):
    """MTT's loss on a held-out expert, averaged over start epochs 0..2 (no augmentation)."""
    buf = ExpertBuffer(held_out, digits, model_kwargs={"width": WIDTH})
    traj, net, total = buf.trajectory(0), build_network("convnet", digits, WIDTH), 0.0
    for s in range(3):
        theta0 = {k: v[s] for k, v in traj.items()}
        with torch.no_grad():
            res = unroll(functional_loss(net, F.cross_entropy), theta0, lr, 6, lambda i: (images, labels), optimizer=InnerSGD(momentum))
        total += sum(((res.params[k] - traj[k][s + 2]) ** 2).sum() for k in traj) / sum(((theta0[k] - traj[k][s + 2]) ** 2).sum() for k in traj)
    return float(total) / 3


def test_mtt_set_matches_held_out_expert_better_than_random_real(digits, experts):
    """MTT's objective on an expert it never saw: the distilled set (with its learned lr) beats random real images."""
    cfg = small(experts=str(experts[0]), iterations=25)
    synset = distill_mtt(digits, 2, cfg, device=CPU, seed=0, progress=False)
    real_x, real_y = init_synthetic(digits, 2, "real", make_generator(0))
    baseline = held_out_matching_loss(digits, experts[1], real_x, real_y, cfg.lr_teacher, cfg.inner_momentum)
    distilled = held_out_matching_loss(digits, experts[1], synset.images, synset.labels, synset.lr, cfg.inner_momentum)
    assert distilled < 0.95 * baseline, (distilled, baseline)
    assert synset.meta["method"] == "mtt" and synset.meta["model_kwargs"] == {"width": WIDTH}


def test_constant_memory_mode_gives_the_full_mode_images(digits, experts):
    runs = {m: distill_mtt(digits, 1, small(ASTConfig, experts=str(experts[0]), unroll_mode=m, iterations=1, init="real",
                                            inner_momentum=0.0), device=CPU, seed=3, progress=False) for m in ("full", "constant_memory")}  # fmt: skip
    torch.testing.assert_close(runs["constant_memory"].images, runs["full"].images, rtol=1e-4, atol=1e-5)
    assert runs["constant_memory"].lr == pytest.approx(runs["full"].lr, rel=1e-5)


def test_resume_is_bit_for_bit(digits, experts, tmp_path):
    cfg = small(ASTConfig, experts=str(experts[0]), dsa_strategy="color_crop_cutout_flip_scale_rotate", iterations=4)
    unbroken = distill_mtt(digits, 1, cfg, device=CPU, seed=1, progress=False)
    ckpt = Checkpointer(tmp_path / "run.ckpt", every=2)
    distill_mtt(digits, 1, replace(cfg, iterations=2), device=CPU, seed=1, progress=False, checkpoint=ckpt)
    resumed = distill_mtt(digits, 1, cfg, device=CPU, seed=1, progress=False, checkpoint=ckpt)
    assert torch.equal(resumed.images, unbroken.images) and resumed.lr == unbroken.lr
    with pytest.raises(UserError, match="shape"):
        distill_mtt(digits, 2, cfg, device=CPU, seed=1, progress=False, checkpoint=ckpt)


def test_bad_input(digits, experts, tmp_path):
    with pytest.raises(UserError, match="no expert trajectories"):
        distill_mtt(digits, 1, small(), device=CPU, seed=0, progress=False)
    with pytest.raises(UserError, match="no expert files"):
        distill_mtt(digits, 1, small(experts=str(tmp_path)), device=CPU, seed=0, progress=False)
    with pytest.raises(UserError, match="exceeds the 4 epochs"):
        distill_mtt(digits, 1, small(experts=str(experts[0]), max_start_epoch=4, expert_epochs=3), device=CPU, seed=0, progress=False)
    with pytest.raises(UserError, match="does not match"):
        distill_mtt(digits, 1, small(experts=str(experts[0]), width=16), device=CPU, seed=0, progress=False)
    with pytest.raises(UserError, match="image_size"):
        distill_mtt(load_dataset("digits", resize=12), 1, small(experts=str(experts[0])), device=CPU, seed=0, progress=False)
    with pytest.raises(UserError, match="intermediate"):
        distill_mtt(digits, 1, small(experts=str(experts[0]), intermediate="cubic"), device=CPU, seed=0, progress=False)
    with pytest.raises(UserError, match="with ZCA"):
        apply_preset(MTTConfig(preset="cifar10-ipc10"), digits)
    assert apply_preset(MTTConfig(preset="digits-cpu", syn_steps=7), digits).syn_steps == 7
    assert apply_preset(MTTConfig(preset="digits-cpu"), digits).syn_steps == 10


def test_cli_distill_resume_and_ipc_mismatch(experts, tmp_path, capsys):
    out = tmp_path / "ast.pt"
    argv = ["distill", "--method", "ast", "--ipc", "1", "--out", str(out), "--experts", str(experts[0]), "--iterations", "2",
            "--syn-steps", "4", "--expert-epochs", "2", "--max-start-epoch", "3", "--width", str(WIDTH), "--lr-img", "10",
            "--checkpoint-every", "1", "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 0
    synset = SyntheticSet.load(out)
    assert synset.meta["method"] == "ast" and len(synset) == 10 and synset.lr is not None
    assert cli_main([*argv, "--resume"]) == 0
    assert torch.equal(SyntheticSet.load(out).images, synset.images)
    bad = [a if a != "1" else "2" for a in argv[:5]] + argv[5:]
    capsys.readouterr()
    assert cli_main([*bad, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "ipc" in err and "Traceback" not in err
