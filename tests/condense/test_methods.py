
import pytest
import torch

from condense.checkpoint import Checkpointer
from condense.data import load_dataset
from condense.evaluate import evaluate_synset
from condense.methods import METHODS, get_method, init_synthetic
from condense.methods.coreset import CoresetConfig
from condense.selection import herding, kcenter_greedy
from condense.methods.dm import DMConfig, distill_dm, mean_embedding_loss
from condense.utils import UserError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_registry_and_unknown_method():
    assert {"random", "herding", "kcenter", "dm"} <= set(METHODS)
    with pytest.raises(UserError, match="unknown method"):
        get_method("nope")


def test_herding_matches_brute_force_greedy():
    torch.manual_seed(0)
    f = torch.randn(9, 3)
    mu = f.mean(0)
    chosen: list[int] = []
    for _ in range(4):  # explicit greedy: the candidate whose addition makes the mean closest to mu
        best = min((i for i in range(9) if i not in chosen), key=lambda i: float(((f[chosen + [i]].mean(0) - mu) ** 2).sum()))
        chosen.append(best)
    assert herding(f, 4).tolist() == chosen


def test_kcenter_covers_better_than_random():
    torch.manual_seed(0)
    f = torch.randn(200, 2)
    radius = lambda idx: float(torch.cdist(f, f[idx]).min(1).values.max())  # noqa: E731
    k = kcenter_greedy(f, 10)
    assert len(set(k.tolist())) == 10
    assert radius(k) < min(radius(torch.randperm(200)[:10]) for _ in range(5))


def test_init_synthetic_and_ipc_checks(digits):
    x, y = init_synthetic(digits, 3, "real", torch.Generator().manual_seed(0))
    assert x.shape == (30, 1, 8, 8) and y.tolist() == sum(([c] * 3 for c in range(10)), [])
    xn, _ = init_synthetic(digits, 2, "noise", torch.Generator().manual_seed(0))
    assert xn.shape == (20, 1, 8, 8)
    with pytest.raises(UserError, match=">= 1"):
        init_synthetic(digits, 0, "real")
    with pytest.raises(UserError, match="smallest class"):
        init_synthetic(digits, 123, "real")
    with pytest.raises(UserError, match="unknown init"):
        init_synthetic(digits, 1, "zeros")


@pytest.mark.parametrize("name", ["random", "herding", "kcenter"])
def test_coresets_select_real_images_of_the_right_class(digits, name):
    cfg = CoresetConfig(width=16, embed_epochs=1)
    s = get_method(name).distill(digits, 2, cfg, device=CPU, seed=0, progress=False)
    assert len(s) == 20 and torch.bincount(s.labels).tolist() == [2] * 10
    for img, lab in zip(s.images, s.labels):  # every image is a real training image of its label
        match = (digits.train_x == img).flatten(1).all(1)
        assert match.any() and int(digits.train_y[match][0]) == int(lab)


def test_dm_loss_is_zero_for_identical_sets_and_positive_otherwise():
    e = torch.randn(5, 4)
    assert float(mean_embedding_loss(e, e)) == 0.0
    assert float(mean_embedding_loss(e, e + 1)) == pytest.approx(4.0)


def test_dm_same_seed_same_images_and_images_change(digits):
    cfg = DMConfig(iterations=3, batch_real=16, width=16)
    a = distill_dm(digits, 1, cfg, device=CPU, seed=0, progress=False)
    b = distill_dm(digits, 1, cfg, device=CPU, seed=0, progress=False)
    init, _ = init_synthetic(digits, 1, "real", torch.Generator().manual_seed(0))
    assert torch.equal(a.images, b.images)
    assert not torch.allclose(a.images, init)
    assert a.meta["method"] == "dm" and a.meta["config"]["iterations"] == 3 and a.meta["wall_time"] > 0


def test_dm_resume_is_bit_for_bit(digits, tmp_path):
    cfg = DMConfig(iterations=4, batch_real=8, width=8)
    full = distill_dm(digits, 1, cfg, device=CPU, seed=1, progress=False)
    sig = {"ipc": 1}
    ck = Checkpointer(tmp_path / "c.pt", every=2, signature=sig)
    distill_dm(digits, 1, DMConfig(iterations=2, batch_real=8, width=8), device=CPU, seed=1, progress=False, checkpoint=ck)
    resumed = distill_dm(digits, 1, cfg, device=CPU, seed=1, progress=False, checkpoint=ck)
    assert torch.equal(full.images, resumed.images)
    with pytest.raises(UserError, match="different run"):
        distill_dm(digits, 1, cfg, device=CPU, seed=1, progress=False, checkpoint=Checkpointer(tmp_path / "c.pt", 2, {"ipc": 2}))


@pytest.mark.parametrize("model", ["convnet", "convnet_bn"])
def test_dm_step_matches_explicit_loss(digits, model):
    """One SGD step (lr 1, no momentum) moves the images by -grad of Eq. 4 summed over classes; a
    BatchNorm embedding normalises all classes in one batch (official BN branch), so its gradient
    differs from per-class passes."""
    from condense.data import ClassSampler
    from condense.methods.base import build_network
    from condense.utils import make_generator

    cfg = DMConfig(iterations=1, batch_real=8, width=8, model=model, dsa_strategy="none", momentum_img=0.0)
    out = distill_dm(digits, 2, cfg, device=CPU, seed=3, progress=False)
    torch.manual_seed(3)
    gen = make_generator(3)
    images, _ = init_synthetic(digits, 2, "real", gen)
    images.requires_grad_(True)
    sampler = ClassSampler(digits.train_y, digits.num_classes)
    net = build_network(model, digits, 8).train()
    k = digits.num_classes
    reals = [digits.train_x[sampler.sample(c, 8, gen)] for c in range(k)]
    joint_real = net.embed(torch.cat(reals)).detach().split(8)
    joint_syn = net.embed(images).split(2)
    joint = sum(mean_embedding_loss(r, s) for r, s in zip(joint_real, joint_syn))
    per_class = sum(mean_embedding_loss(net.embed(reals[c]).detach(), net.embed(images[2 * c : 2 * c + 2])) for c in range(k))
    g_joint, = torch.autograd.grad(joint, images)
    g_per_class, = torch.autograd.grad(per_class, images)
    expected = g_joint if model == "convnet_bn" else g_per_class
    torch.testing.assert_close(images.detach() - out.images, expected, atol=1e-5, rtol=1e-4)
    if model == "convnet":
        torch.testing.assert_close(g_joint, g_per_class, atol=1e-6, rtol=1e-5)  # instance norm: same thing
    else:
        assert not torch.allclose(g_joint, g_per_class, atol=1e-5)


def test_dm_rejects_non_finite_learning_rate(digits):
    with pytest.raises(UserError, match="lr_img"):
        distill_dm(digits, 1, DMConfig(iterations=1, lr_img=float("nan")), device=CPU, seed=0, progress=False)


@pytest.mark.slow
def test_dm_beats_random_real_on_digits_ipc1(digits):
    """End to end: DM from noise at IPC 1 must beat 1 random real image per class (same evaluation)."""
    eval_kw = dict(models=("convnet",), num_evals=2, epochs=150, dsa=False, progress=False, model_kwargs={"convnet": {"width": 32}})
    dm = distill_dm(digits, 1, DMConfig(iterations=150, batch_real=64, width=32, init="noise"), device=CPU, seed=0, progress=False)
    rnd = get_method("random").distill(digits, 1, CoresetConfig(), device=CPU, seed=0)
    acc_dm = evaluate_synset(dm, digits, **eval_kw)["convnet"].mean
    acc_rnd = evaluate_synset(rnd, digits, **eval_kw)["convnet"].mean
    assert acc_dm > acc_rnd + 0.05, (acc_dm, acc_rnd)
