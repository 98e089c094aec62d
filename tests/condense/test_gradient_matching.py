import math

import pytest
import torch
import torch.nn.functional as F

from condense.augment import DSA
from condense.checkpoint import Checkpointer
from condense.data import load_dataset
from condense.evaluate import evaluate_synset
from condense.methods import get_method, init_synthetic
from condense.methods.coreset import CoresetConfig
from condense.methods.gradient_matching import (
    DCConfig, DSAConfig, distill_dc, distill_dsa, freeze_batchnorm, get_loops, gradient_distance, match_loss,
)  # fmt: skip
from condense.nets import get_network
from condense.utils import UserError

CPU = torch.device("cpu")
TINY = dict(iterations=2, batch_real=8, batch_train=8, width=8)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# ------------------------------------------------------------------------- the layer-wise distance
def test_distance_on_hand_computed_vectors():
    # conv-shaped (out=2, in=1, 1x2): row 1 orthogonal -> 1 - 0; row 2 parallel -> 1 - 1
    a = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])
    b = torch.tensor([[[[0.0, 1.0]]], [[[2.0, 2.0]]]])
    assert float(gradient_distance(a, b)) == pytest.approx(1.0, abs=1e-6)
    # linear (out=1, in=2): opposite rows -> 1 - (-1) = 2 (up to the official 1e-6 guard)
    assert float(gradient_distance(torch.tensor([[3.0, 4.0]]), torch.tensor([[-3.0, -4.0]]))) == pytest.approx(2.0, abs=1e-6)
    # 1-D gradients (bias, norm affine) contribute nothing
    assert float(gradient_distance(torch.tensor([1.0, 2.0]), torch.tensor([-5.0, 0.0]))) == 0.0


def test_distance_matches_explicit_per_output_channel_loop():
    torch.manual_seed(0)
    a, b = torch.randn(5, 3, 3, 3), torch.randn(5, 3, 3, 3)
    expected = sum(1 - F.cosine_similarity(a[i].flatten(), b[i].flatten(), dim=0, eps=0) for i in range(5))
    assert float(gradient_distance(a, b)) == pytest.approx(float(expected), rel=1e-5)
    # invariant to a positive rescaling of any output row; changes when a row flips sign
    c = b.clone()
    c[2] *= 7.0
    assert float(gradient_distance(a, c)) == pytest.approx(float(gradient_distance(a, b)), rel=1e-5)
    c[3] *= -1
    assert float(gradient_distance(a, c)) != pytest.approx(float(gradient_distance(a, b)), rel=1e-3)
    with pytest.raises(ValueError, match="shapes differ"):
        gradient_distance(a, b[:2])


def test_match_loss_metrics():
    gr = [torch.tensor([[1.0, 0.0]]), torch.tensor([1.0])]
    gs = [torch.tensor([[0.0, 2.0]]), torch.tensor([3.0])]
    assert float(match_loss(gr, gs, "ours")) == pytest.approx(1.0, abs=1e-6)  # bias ignored
    assert float(match_loss(gr, gs, "mse")) == pytest.approx(1 + 4 + 4)  # (0-1)^2 + (2-0)^2 + (3-1)^2
    cos = 3.0 / (math.sqrt(2) * math.sqrt(13))  # <(1,0,1), (0,2,3)> / (|.| |.|)
    assert float(match_loss(gr, gs, "cos")) == pytest.approx(1 - cos, abs=1e-6)
    with pytest.raises(UserError, match="dis_metric"):
        match_loss(gr, gs, "l1")


def test_loops_table_and_overrides():
    assert [get_loops(i) for i in (1, 10, 20, 30, 40, 50)] == [(1, 1), (10, 50), (20, 25), (30, 20), (40, 15), (50, 10)]
    assert get_loops(7, 3, 2) == (3, 2)
    with pytest.raises(UserError, match="no official"):
        get_loops(7)
    with pytest.raises(UserError, match="both"):
        get_loops(10, 5, 0)


def test_freeze_batchnorm_updates_then_fixes_running_statistics():
    torch.manual_seed(0)
    net = get_network("convnet_bn", 1, 10, 8, width=4)
    before = net.blocks[0][1].running_mean.clone()
    assert freeze_batchnorm(net, torch.randn(20, 1, 8, 8) + 3)
    bn = net.blocks[0][1]
    assert not torch.equal(bn.running_mean, before) and not bn.training
    frozen = bn.running_mean.clone()
    net(torch.randn(4, 1, 8, 8))  # eval-mode BN: statistics stay fixed
    assert torch.equal(bn.running_mean, frozen)
    assert not freeze_batchnorm(get_network("convnet", 1, 10, 8, width=4), torch.randn(2, 1, 8, 8))


def test_siamese_parameters_are_identical_for_both_batches():
    """The real batch and the synthetic batch of a class get the same transformation (every op group)."""
    torch.manual_seed(0)
    real = torch.randn(6, 1, 8, 8)
    gen = torch.Generator().manual_seed(1)
    for strategy in ("color", "crop", "cutout", "flip", "scale", "rotate"):
        for _ in range(3):
            a, b = DSA(strategy).siamese(real, real[:2].clone(), generator=gen)
            assert torch.allclose(a[:2], b, atol=1e-6), strategy


# ------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("distill,cfg", [(distill_dc, DCConfig(**TINY)), (distill_dsa, DSAConfig(**TINY))])
def test_dc_dsa_run_deterministically_and_change_images(digits, distill, cfg):
    a = distill(digits, 1, cfg, device=CPU, seed=0, progress=False)
    b = distill(digits, 1, cfg, device=CPU, seed=0, progress=False)
    init, _ = init_synthetic(digits, 1, cfg.init, torch.Generator().manual_seed(0))
    assert torch.equal(a.images, b.images) and not torch.allclose(a.images, init)
    assert a.meta["outer_loop"] == 1 and a.meta["train_dsa"] == (cfg.dsa_strategy != "none")


def test_dsa_with_outer_and_inner_loops_and_batchnorm(digits):
    cfg = DSAConfig(iterations=1, batch_real=8, batch_train=4, width=8, outer_loop=2, inner_loop=1, model="convnet_bn")
    s = distill_dsa(digits, 2, cfg, device=CPU, seed=0, progress=False)
    assert s.images.shape == (20, 1, 8, 8) and torch.isfinite(s.images).all() and s.meta["inner_loop"] == 1


class _CrashAfter(Checkpointer):
    """Keeps only the checkpoint written after ``stop`` steps (a run killed right after it)."""

    def __init__(self, path, stop: int) -> None:
        super().__init__(path, every=1, signature={"test": 1})
        self.stop = stop

    def save(self, iteration, state):
        if iteration == self.stop:
            super().save(iteration, state)


def test_resume_in_the_middle_of_a_network_is_bit_for_bit(digits, tmp_path):
    """Step 3 of 4 is inside the second network (outer_loop 2): its trained weights must be restored."""
    cfg = DSAConfig(iterations=2, batch_real=8, batch_train=8, width=8, outer_loop=2, inner_loop=2, model="convnet_bn")
    full = distill_dsa(digits, 1, cfg, device=CPU, seed=3, progress=False)
    distill_dsa(digits, 1, cfg, device=CPU, seed=3, progress=False, checkpoint=_CrashAfter(tmp_path / "c.pt", 3))
    resumed = distill_dsa(digits, 1, cfg, device=CPU, seed=3, progress=False, checkpoint=Checkpointer(tmp_path / "c.pt", 1, {"test": 1}))
    assert torch.equal(full.images, resumed.images)


def test_bad_configs_are_user_errors(digits):
    with pytest.raises(UserError, match="dis_metric"):
        distill_dc(digits, 1, DCConfig(iterations=1, dis_metric="l1"), device=CPU, seed=0, progress=False)
    with pytest.raises(UserError, match="no official"):
        distill_dc(digits, 3, DCConfig(iterations=1), device=CPU, seed=0, progress=False)
    with pytest.raises(UserError, match="lr_img"):
        distill_dsa(digits, 1, DSAConfig(iterations=1, lr_img=0.0), device=CPU, seed=0, progress=False)


@pytest.mark.slow
def test_dc_beats_random_real_on_digits_ipc1(digits):
    """DC from noise at IPC 1 beats one random real image per class (same evaluation)."""
    eval_kw = dict(models=("convnet",), num_evals=2, epochs=100, dsa=False, progress=False, model_kwargs={"convnet": {"width": 16}})
    dc = distill_dc(digits, 1, DCConfig(iterations=60, batch_real=32, width=16), device=CPU, seed=0, progress=False)
    rnd = get_method("random").distill(digits, 1, CoresetConfig(), device=CPU, seed=0)
    acc_dc = evaluate_synset(dc, digits, **eval_kw)["convnet"].mean
    acc_rnd = evaluate_synset(rnd, digits, **eval_kw)["convnet"].mean
    assert acc_dc > acc_rnd + 0.05, (acc_dc, acc_rnd)
