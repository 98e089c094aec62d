import pytest
import torch
import torch.nn.functional as F

from condense.augment import DSA
from condense.data import ClassSampler, load_dataset
from condense.evaluate import evaluate_synset
from condense.methods import get_method
from condense.methods.coreset import CoresetConfig
from condense.methods.datadam import (
    DataDAMConfig, attention_features, class_mean_distance, datadam_loss, distill_datadam, spatial_attention,
)  # fmt: skip
from condense.nets import get_network
from condense.utils import UserError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# ------------------------------------------------------------------------- attention maps
def test_attention_hand_computed_and_normalised():
    # one image, two channels, 1x2 positions: channel sums of |A|^p are (1+2^p, 0+3^p)
    a = torch.tensor([[[[1.0, 0.0]], [[-2.0, 3.0]]]])
    for p, raw in ((1, [3.0, 3.0]), (4, [17.0, 81.0])):
        expected = torch.tensor(raw) / torch.tensor(raw).norm()
        assert torch.allclose(spatial_attention(a, p)[0], expected)
    torch.manual_seed(0)
    x = torch.randn(5, 6, 4, 3)
    att = spatial_attention(x, 4)
    assert att.shape == (5, 12) and torch.allclose(att.norm(dim=1), torch.ones(5)) and (att >= 0).all()
    assert not torch.allclose(spatial_attention(x, 1), att, atol=1e-3)  # p = 1 (official) vs p = 4 (paper)
    with pytest.raises(ValueError, match="B, C, H, W"):
        spatial_attention(x.flatten(2), 4)


def test_attention_gradient_matches_finite_differences():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: spatial_attention(t, 4.0), (x,))


def test_attention_features_end_with_the_embedding_and_gradient_reaches_images():
    torch.manual_seed(0)
    net = get_network("convnet", 1, 10, 8, width=8)
    x = torch.randn(4, 1, 8, 8, requires_grad=True)
    feats = attention_features(net, x, 4.0)
    assert len(feats) == 3 and [tuple(f.shape) for f in feats[:2]] == [(4, 144), (4, 36)]
    assert torch.allclose(feats[-1], net.embed(x))
    sam, mmd = datadam_loss(attention_features(net, torch.randn(8, 1, 8, 8), 4.0), feats, 1)
    (sam + 0.01 * mmd).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_class_mean_distance_matches_explicit_loop():
    torch.manual_seed(0)
    real, syn = torch.randn(3 * 5, 4), torch.randn(3 * 2, 4)
    expected = sum(((real[5 * c : 5 * c + 5].mean(0) - syn[2 * c : 2 * c + 2].mean(0)) ** 2).sum() for c in range(3))
    assert float(class_mean_distance(real, syn, 3)) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("norm", ["instancenorm", "batchnorm"])
def test_loss_is_zero_for_the_real_batch_itself_and_positive_otherwise(digits, norm):
    """S_c := the real batch of c, both under the same Siamese augmentation -> L_SAM = L_MMD = 0."""
    torch.manual_seed(0)
    net = get_network("convnet", 1, 10, 8, width=8, norm=norm).train().requires_grad_(False)
    sampler, gen = ClassSampler(digits.train_y, 10), torch.Generator().manual_seed(0)
    reals, syns, others = [], [], []
    for c in range(10):
        real = digits.train_x[sampler.sample(c, 6, gen)]
        r, s, o = DSA().siamese(real, real.clone(), digits.train_x[sampler.sample(c, 6, gen)], generator=gen)
        reals.append(r), syns.append(s), others.append(o)
    real = torch.cat(reals)
    sam, mmd = datadam_loss(attention_features(net, real, 4.0), attention_features(net, torch.cat(syns), 4.0), 10)
    assert float(sam) == 0.0 and float(mmd) == 0.0
    sam, mmd = datadam_loss(attention_features(net, real, 4.0), attention_features(net, torch.cat(others), 4.0), 10)
    assert float(sam) > 0 and float(mmd) > 0


# ------------------------------------------------------------------------- the method
def test_class_by_class_gives_the_joint_gradient_for_instance_norm(digits, device):
    cfg = DataDAMConfig(iterations=2, batch_real=8, width=8)
    joint = distill_datadam(digits, 2, cfg, device=device, seed=0, progress=False)
    per_class = distill_datadam(digits, 2, DataDAMConfig(iterations=2, batch_real=8, width=8, class_by_class=True), device=device, seed=0, progress=False)
    assert torch.allclose(joint.images.cpu(), per_class.images.cpu(), atol=1e-4)
    again = distill_datadam(digits, 2, cfg, device=device, seed=0, progress=False)
    if device.type == "cpu":
        assert torch.equal(joint.images, again.images)
    else:  # CUDA's grid-sample backward (DSA) accumulates with atomics: run-to-run equal to rounding only
        assert torch.allclose(joint.images.cpu(), again.images.cpu(), atol=1e-5)
    assert joint.meta["method"] == "datadam" and joint.meta["lr_img"] == 1.0 and joint.meta["train_dsa"]


def test_official_variant_runs_and_lr_rule(digits):
    cfg = DataDAMConfig(iterations=1, batch_real=8, width=8, power=1.0, norm="batchnorm", init="noise")
    s = distill_datadam(digits, 51, cfg, device=CPU, seed=0, progress=False)
    assert s.images.shape == (510, 1, 8, 8) and s.meta["lr_img"] == 10.0 and torch.isfinite(s.images).all()


@pytest.mark.parametrize(
    "kw,match",
    [({"norm": "layernorm"}, "norm"), ({"power": 0.0}, "power"), ({"model": "mlp"}, "ConvNet"), ({"lr_img": -1.0}, "lr_img")],
)
def test_bad_configs_are_user_errors(digits, kw, match):
    with pytest.raises(UserError, match=match):
        distill_datadam(digits, 1, DataDAMConfig(iterations=1, width=8, **kw), device=CPU, seed=0, progress=False)


@pytest.mark.slow
def test_datadam_beats_random_real_on_digits_ipc1(digits):
    """DataDAM from noise at IPC 1 beats one random real image per class (same evaluation).

    Official p = 1: with the paper's p = 4 a run this short is still far from converged on digits
    (see experiments/results/matching.md)."""
    eval_kw = dict(models=("convnet",), num_evals=2, epochs=100, dsa=False, progress=False, protocol="dc", model_kwargs={"convnet": {"width": 16}})
    cfg = DataDAMConfig(iterations=80, batch_real=32, width=16, init="noise", power=1.0)
    dam = distill_datadam(digits, 1, cfg, device=CPU, seed=0, progress=False)
    rnd = get_method("random").distill(digits, 1, CoresetConfig(), device=CPU, seed=0)
    acc_dam = evaluate_synset(dam, digits, **eval_kw)["convnet"].mean
    acc_rnd = evaluate_synset(rnd, digits, **eval_kw)["convnet"].mean
    assert acc_dam > acc_rnd + 0.05, (acc_dam, acc_rnd)


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0, 4.0, 2.5])
def test_attention_equals_the_plain_formula_value_and_gradient(power):
    """The hand-written backward (integer p >= 2) and the abs-free even powers change nothing:
    value bit-identical to ``|A|.pow(p).sum(1)`` normalised (float64), gradient to 1e-12."""
    torch.manual_seed(0)
    x = torch.randn(6, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 12, dtype=torch.float64)
    ref = F.normalize(x.abs().pow(power).sum(1).flatten(1), p=2.0, dim=1)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), x)
    got = spatial_attention(x, power)
    (g_got,) = torch.autograd.grad((got * w).sum(), x)
    torch.testing.assert_close(got, ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-12, atol=1e-14)
