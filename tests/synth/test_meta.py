"""Fast-DFKD meta-generator: exact second-order meta-gradient vs finite differences, BN buffers untouched, end to end."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from condense.nets import get_network
from condense.utils import UserError
from synth.generators import Generator
from synth.losses import BNStatistics
from synth.meta import LATENT, MetaConfig, meta_gradient, train_meta_generator
from synth.teachers import Model


def _toy(k: int):
    """A double-precision toy generator/teacher pair with the Fast-DFKD inner objective (BN + CE)."""
    torch.manual_seed(0)
    gen = Generator(3, 1, 4, ngf=2, head="tanh_bn").double()
    teacher = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).double().eval()
    teacher[1].running_mean.normal_()
    teacher[1].running_var.uniform_(0.5, 2.0)
    stats = BNStatistics(teacher)
    names = [n for n, _ in gen.named_parameters()]
    no_buffers = {n: None for n, _ in gen.named_buffers()}

    def objective(params, batch):
        x = functional_call(gen, {**{n: params[n] for n in names}, **no_buffers}, (params[LATENT],))
        with stats.collect() as terms:
            t = teacher(x * batch["scale"])
        return torch.stack(terms).sum() + F.cross_entropy(t, batch["y"]), x

    theta0 = {**{n: p.detach().clone() for n, p in gen.named_parameters()}, LATENT: torch.randn(5, 3, dtype=torch.double)}
    batches = [{"scale": 1.0 + 0.1 * i, "y": torch.tensor([0, 1, 2, 0, 1])} for i in range(k)]
    cfg = MetaConfig(meta="exact", k=k, lr_g=0.1, lr_z=0.1)
    return objective, theta0, batches, cfg


def _meta_objective(objective, theta, batches, lr):
    """M(θ) = Σ_i L(θ_i) by an independent plain SGD loop."""
    p = {k: v.clone().requires_grad_() for k, v in theta.items()}
    total = 0.0
    for b in batches:
        loss, _ = objective(p, b)
        total += loss.item()
        grads = torch.autograd.grad(loss, list(p.values()))
        p = {k: (v - lr * g).detach().requires_grad_() for (k, v), g in zip(p.items(), grads)}
    return total


def test_exact_meta_gradient_matches_finite_differences():
    objective, theta0, batches, cfg = _toy(k=3)
    grads, _, _ = meta_gradient(objective, theta0, batches, cfg)
    gen_rng = torch.Generator().manual_seed(1)
    eps = 1e-6
    for name in ("fc.weight", "block1.0.weight", "to_image.bias"):
        flat = theta0[name].view(-1)
        for j in torch.randint(flat.numel(), (3,), generator=gen_rng).tolist():
            plus, minus = dict(theta0), dict(theta0)
            plus[name], minus[name] = theta0[name].clone(), theta0[name].clone()
            plus[name].view(-1)[j] += eps
            minus[name].view(-1)[j] -= eps
            fd = (_meta_objective(objective, plus, batches, cfg.lr_g) - _meta_objective(objective, minus, batches, cfg.lr_g)) / (2 * eps)
            assert grads[name].view(-1)[j].item() == pytest.approx(fd, rel=1e-4, abs=1e-8)


def test_fomaml_is_first_order_approximation():
    objective, theta0, batches, cfg = _toy(k=3)
    exact, _, _ = meta_gradient(objective, theta0, batches, cfg)
    fo, _, _ = meta_gradient(objective, theta0, batches, MetaConfig(meta="fomaml", k=3, lr_g=0.1, lr_z=0.1))
    assert not torch.allclose(exact["fc.weight"], fo["fc.weight"], rtol=1e-3)
    cos = F.cosine_similarity(torch.cat([exact[n].flatten() for n in exact]), torch.cat([fo[n].flatten() for n in fo]), dim=0)
    assert cos > 0.5  # same direction, different value
    objective, theta0, batches, cfg = _toy(k=1)  # one inner step: M = L(θ0), both are exact
    exact, x_e, l_e = meta_gradient(objective, theta0, batches, cfg)
    fo, x_f, l_f = meta_gradient(objective, theta0, batches, MetaConfig(meta="fomaml", k=1, lr_g=0.1, lr_z=0.1))
    assert all(torch.allclose(exact[n], fo[n]) for n in exact) and l_e == pytest.approx(l_f) and torch.equal(x_e, x_f)
    assert all(torch.equal(theta0[n], _toy(k=1)[1][n]) for n in exact)  # inputs untouched


def _tiny(**kw):
    base = dict(k=2, rounds=4, warmup=1, batch_size=16, nz=8, ngf=4, lr_g=0.05, lr_z=0.05, crop_pad=1, flip=False,
                kd_steps=2, kd_batch_size=16, lr_s=2e-3, student_optimizer="adam", temperature=4.0)
    return MetaConfig(**{**base, **kw})


@pytest.mark.parametrize("mode", ["exact", "fomaml", "reptile"])
def test_bn_buffers_untouched(teacher, digits, mode):
    t_buffers = {k: v.clone() for k, v in teacher.net.named_buffers()}
    res = train_meta_generator(teacher, get_network("lenet5_half", 1, 10, 8), _tiny(meta=mode), pixel_stats=(digits.mean, digits.std), progress=False)
    for name, buf in res.generator.named_buffers():
        if name.endswith("running_mean"):
            assert torch.equal(buf, torch.zeros_like(buf)), name
        elif name.endswith("running_var"):
            assert torch.equal(buf, torch.ones_like(buf)), name
        elif name.endswith("num_batches_tracked"):
            assert buf.item() == 0
    assert all(torch.equal(v, t_buffers[k]) for k, v in teacher.net.named_buffers())
    assert len(res.pool) == 4 * 16


def test_config_errors():
    with pytest.raises(UserError):
        _tiny(meta="exact", inner_optimizer="adam").validate()
    with pytest.raises(UserError):
        _tiny(meta="maml2").validate()
    with pytest.raises(UserError):
        _tiny(temperature=0.0).validate()


def test_meta_student_learns_from_synthetic_pool(teacher, digits):
    """20 rounds: far above chance (the noise-input comparison at this tiny budget is close; see experiments.synth)."""
    from condense.evaluate import accuracy

    cfg = _tiny(meta="fomaml", rounds=20, warmup=2, batch_size=64, nz=32, ngf=8, kd_steps=30, kd_batch_size=64, lr_s=5e-3, lr_g=0.2, lr_meta=0.02)
    torch.manual_seed(0)
    res = train_meta_generator(teacher, get_network("lenet5_half", 1, 10, 8), cfg, pixel_stats=(digits.mean, digits.std), seed=0, progress=False)
    assert accuracy(res.student, digits.test_x, digits.test_y, device="cpu") > 0.3
    assert res.pool.images.shape == (20 * 64, 1, 8, 8)
