"""Exactness of the unroll engine: hand-written loop, finite differences, backends, memory modes."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from condense.unroll import InnerSGD, functional_loss, unroll, unroll_backward
from condense.utils import UserError

N_STEPS, BATCH = 5, 6


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny ops: OpenMP with 2 threads on a shared 2-core machine is up to 100x slower than 1 thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_problem(dtype=torch.float64, seed=0, device="cpu"):
    """A 2-layer tanh regression net, data X (requires grad), lr and θ0 (require grad), on ``device``."""
    g = torch.Generator().manual_seed(seed)

    def leaf(t):
        return t.to(device).requires_grad_()

    params = {
        "w1": leaf(torch.randn(3, 4, generator=g, dtype=dtype) * 0.5),
        "b1": leaf(torch.randn(4, generator=g, dtype=dtype) * 0.1),
        "w2": leaf(torch.randn(4, 2, generator=g, dtype=dtype) * 0.5),
    }
    x = leaf(torch.randn(12, 3, generator=g, dtype=dtype))
    y = torch.randn(12, 2, generator=g, dtype=dtype).to(device)
    lr = leaf(torch.tensor(0.3, dtype=dtype))
    target = {k: (torch.randn(v.shape, generator=g, dtype=dtype) * 0.5).to(device) for k, v in params.items()}
    idx = [torch.randperm(12, generator=g)[:BATCH] for _ in range(N_STEPS)]
    return params, x, y, lr, target, idx


def loss_fn(p, batch):
    x, y = batch
    return ((torch.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] - y) ** 2).mean()


def make_batches(x, y, idx):
    return lambda i: (x[idx[i]], y[idx[i]])


def sq_dist(p, q):
    return sum(((p[k] - q[k]) ** 2).sum() for k in p)


def make_outer(target, params, weights=None):
    """MTT-style normalised distance at the final step, optionally also at intermediate steps."""
    denominator = sq_dist({k: v.detach().clone() for k, v in params.items()}, target)

    def outer(rec):
        out = 0.0
        for s, p in rec.items():
            w = (weights or {}).get(s, 1.0 if s == max(rec) else 0.0)
            if w:
                out = out + w * sq_dist(p, target) / denominator
        return out
    return outer


def grads_of(tensors):
    out = [t.grad.clone() if t.grad is not None else torch.zeros_like(t) for t in tensors]
    for t in tensors:
        t.grad = None
    return out


def hand_written(params, x, y, lr, target, idx, momentum=0.0, first_graph=0, record=()):
    """The explicit loop every bilevel paper writes: autograd.grad(create_graph=True) + manual update."""
    theta = dict(params)
    buf = {k: torch.zeros_like(v) for k, v in theta.items()}
    recorded = {}
    for i in range(N_STEPS):
        if i == first_graph and i > 0:
            theta = {k: v.detach().requires_grad_() for k, v in theta.items()}
            buf = {k: v.detach() for k, v in buf.items()}
        if i in record:
            recorded[i] = theta
        loss = loss_fn(theta, (x[idx[i]], y[idx[i]]))
        g = torch.autograd.grad(loss, list(theta.values()), create_graph=i >= first_graph)
        new = {}
        for (k, v), gk in zip(theta.items(), g):
            buf[k] = momentum * buf[k] + gk
            new[k] = v - lr * (buf[k] if momentum else gk)
        theta = new
    recorded[N_STEPS] = theta
    return recorded


def leaves(params, x, lr):
    return [x, lr, *params.values()]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_func_backend_matches_hand_written_loop(momentum, device):
    params, x, y, lr, target, idx = tiny_problem(device=device)
    outer = make_outer(target, params, {2: 0.5, N_STEPS: 1.0})
    rec = hand_written(params, x, y, lr, target, idx, momentum, record=(2,))
    outer(rec).backward()
    expected = grads_of(leaves(params, x, lr))
    res = unroll_backward(outer, loss_fn, params, lr, N_STEPS, make_batches(x, y, idx), optimizer=InnerSGD(momentum), record=[2])
    got = grads_of(leaves(params, x, lr))
    for e, g in zip(expected, got):
        assert e.abs().sum() > 0
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    assert len(res.inner_losses) == N_STEPS and res.outer_loss > 0


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_outer_gradient_matches_finite_differences(momentum):
    params, x, y, lr, target, idx = tiny_problem()
    names, outer = list(params), make_outer(target, params)

    def f(x_, lr_, *theta):
        res = unroll(loss_fn, dict(zip(names, theta)), lr_, N_STEPS, make_batches(x_, y, idx), optimizer=InnerSGD(momentum))
        return outer(res.recorded)

    assert torch.autograd.gradcheck(f, (x, lr, *params.values()), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("mode,truncate", [("full", None), ("truncated", 2)])
def test_backends_agree(momentum, mode, truncate):
    params, x, y, lr, target, idx = tiny_problem(dtype=torch.float32)
    outer = make_outer(target, params)
    got = {}
    for backend in ("func", "higher"):
        res = unroll_backward(outer, loss_fn, params, lr, N_STEPS, make_batches(x, y, idx), optimizer=InnerSGD(momentum),
                              mode=mode, truncate=truncate, backend=backend)  # fmt: skip
        got[backend] = (res.outer_loss, grads_of(leaves(params, x, lr)))
    assert got["func"][0] == pytest.approx(got["higher"][0], rel=1e-5)
    for a, b in zip(got["func"][1], got["higher"][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_truncated_is_exact_through_last_k_steps(momentum):
    params, x, y, lr, target, idx = tiny_problem()
    outer = make_outer(target, params)
    outer(hand_written(params, x, y, lr, target, idx, momentum, first_graph=N_STEPS - 2)).backward()
    expected = grads_of(leaves(params, x, lr))
    unroll_backward(outer, loss_fn, params, lr, N_STEPS, make_batches(x, y, idx), optimizer=InnerSGD(momentum),
                    mode="truncated", truncate=2)  # fmt: skip
    got = grads_of(leaves(params, x, lr))
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    assert all(g.abs().sum() == 0 for g in got[2:]), "θ0 must receive no gradient through a truncated unroll"
    # images used only in the detached steps receive nothing either, the full unroll differs
    unroll_backward(outer, loss_fn, params, lr, N_STEPS, make_batches(x, y, idx), optimizer=InnerSGD(momentum))
    assert not torch.allclose(grads_of([x])[0], got[0])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("every", [None, 1, 2, 3, N_STEPS])
def test_constant_memory_equals_full(momentum, every, device):
    params, x, y, lr, target, idx = tiny_problem(device=device)
    outer = make_outer(target, params, {0: 0.1, 3: 0.5, N_STEPS: 1.0})
    kw = dict(optimizer=InnerSGD(momentum), record=[0, 3])
    full = unroll_backward(outer, loss_fn, params, lr, N_STEPS, make_batches(x, y, idx), **kw)
    expected = grads_of(leaves(params, x, lr))
    cm = unroll_backward(outer, loss_fn, params, lr, N_STEPS, make_batches(x, y, idx), mode="constant_memory",
                         checkpoint_every=every, **kw)  # fmt: skip
    got = grads_of(leaves(params, x, lr))
    assert cm.outer_loss == pytest.approx(full.outer_loss, rel=1e-12)
    assert cm.inner_losses == pytest.approx(full.inner_losses, rel=1e-12)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12)


def test_constant_memory_with_inputs_and_non_leaf_lr_and_params():
    """Gradients reach leaves behind non-leaf lr (exp(log_lr)) and θ0 (a perturbation), restricted to inputs."""
    params, x, y, lr, target, idx = tiny_problem()
    log_lr = torch.log(lr.detach()).requires_grad_()
    scale = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    other = torch.ones(1, requires_grad=True)

    def run(mode):
        p = {k: v.detach() * scale for k, v in params.items()}
        unroll_backward(make_outer(target, params), loss_fn, p, log_lr.exp(), N_STEPS, make_batches(x, y, idx),
                        mode=mode, inputs=[x, log_lr, scale, other])  # fmt: skip
        return grads_of([x, log_lr, scale, other])

    full, cm = run("full"), run("constant_memory")
    for e, g in zip(full, cm):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12)
    assert full[2].abs() > 0 and full[3].abs().sum() == 0
    assert all(v.grad is None for v in params.values()), "tensors outside inputs must not receive .grad"


def test_hessian_free_variant_is_teslas_formula():
    """hessian=False: dL/dX_i = -α λ_Nᵀ ∂g_i/∂X_i with the iterates held constant (TESLA's official code)."""
    params, x, y, lr, target, idx = tiny_problem()
    outer = make_outer(target, params)
    res = unroll_backward(outer, loss_fn, params, lr, N_STEPS, make_batches(x, y, idx), mode="constant_memory", hessian=False)
    got = grads_of(leaves(params, x, lr))
    # explicit formula
    with torch.no_grad():
        theta = [{k: v.detach() for k, v in params.items()}]
        for i in range(N_STEPS):
            th = {k: v.requires_grad_() for k, v in theta[-1].items()}
            with torch.enable_grad():
                g = torch.autograd.grad(loss_fn(th, (x[idx[i]].detach(), y[idx[i]])), list(th.values()))
            theta.append({k: (v - lr * gk).detach() for (k, v), gk in zip(th.items(), g)})
    final = {k: v.requires_grad_() for k, v in theta[-1].items()}
    lam = torch.autograd.grad(outer({N_STEPS: final}), list(final.values()))
    gx = torch.zeros_like(x)
    glr = torch.zeros_like(lr)
    for i in range(N_STEPS):
        xi = x.detach().requires_grad_()
        lr_i = lr.detach().requires_grad_()
        th = {k: v.detach().requires_grad_() for k, v in theta[i].items()}
        g = torch.autograd.grad(loss_fn(th, (xi[idx[i]], y[idx[i]])), list(th.values()), create_graph=True)
        step = sum((-lr_i * gk * lk).sum() for gk, lk in zip(g, lam))
        dx, dlr = torch.autograd.grad(step, [xi, lr_i])
        gx += dx
        glr += dlr
    torch.testing.assert_close(got[0], gx, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got[1], glr, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got[2:], list(lam), rtol=1e-9, atol=1e-12)
    assert res.outer_loss > 0


def test_functional_loss_with_module_and_determinism():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    x = torch.randn(9, 1, 6, 6, requires_grad=True)
    y = torch.arange(9) % 3
    lr = torch.tensor(0.05, requires_grad=True)
    target = {k: v + 0.1 for k, v in params.items()}

    def run():
        res = unroll_backward(lambda r: sq_dist(r[4], target), functional_loss(net), params, lr, 4, lambda i: (x[i:i + 5], y[i:i + 5]),
                              optimizer=InnerSGD(0.5), mode="constant_memory")  # fmt: skip
        return res.outer_loss, grads_of([x, lr])

    (l1, g1), (l2, g2) = run(), run()
    assert l1 == l2 and all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert g1[0].abs().sum() > 0


def test_learning_rate_as_float_and_no_grad_unroll():
    params, x, y, _, target, idx = tiny_problem()
    with torch.no_grad():
        res = unroll(loss_fn, params, 0.3, N_STEPS, make_batches(x, y, idx), record=[1])
    assert not res.params["w1"].requires_grad and set(res.recorded) == {1, N_STEPS}
    assert res.inner_losses[-1] < res.inner_losses[0]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(steps=0), "inner steps"),
        (dict(mode="bogus"), "unknown unroll mode"),
        (dict(backend="jax"), "unknown unroll backend"),
        (dict(mode="truncated"), "truncate"),
        (dict(mode="truncated", truncate=9), "truncate"),
        (dict(mode="constant_memory", backend="higher"), "backend='func'"),
        (dict(record=[7]), "recorded steps"),
        (dict(mode="constant_memory", optimizer=InnerSGD(0.9), hessian=False), "plain SGD"),
        (dict(mode="constant_memory", checkpoint_every=0), "checkpoint_every"),
        (dict(params={}), "non-empty"),
        (dict(lr=torch.ones(2)), "learning rate"),
    ],
)
def test_bad_input_is_a_user_error(kwargs, match):
    params, x, y, lr, target, idx = tiny_problem()
    base = dict(params=params, lr=lr, steps=N_STEPS)
    base.update(kwargs)
    p, l, s = base.pop("params"), base.pop("lr"), base.pop("steps")
    with pytest.raises(UserError, match=match):
        unroll_backward(make_outer(target, params), loss_fn, p, l, s, make_batches(x, y, idx), **base)


def test_inner_momentum_validated():
    with pytest.raises(UserError, match="momentum"):
        InnerSGD(1.5)


def test_checkpoint_every_is_chosen_from_one_steps_graph():
    """Store every state when N parameter copies fit in one forward graph; sqrt(N) checkpoints otherwise."""
    from condense.unroll import auto_checkpoint_every

    params, x, y, lr, target, idx = tiny_problem()
    batches = make_batches(x, y, idx)
    # 24 float64 parameters (192 bytes); the forward graph saves x[idx] (6x3), w1, the tanh output (6x4), w2, ...
    assert auto_checkpoint_every(loss_fn, params, batches, 2) == 1
    assert auto_checkpoint_every(loss_fn, params, batches, 10_000) == 100
    # momentum doubles the state: the threshold halves
    n_plain = max(n for n in range(1, 200) if auto_checkpoint_every(loss_fn, params, batches, n) == 1)
    n_mom = max(n for n in range(1, 200) if auto_checkpoint_every(loss_fn, params, batches, n, momentum=0.9) == 1)
    assert n_mom == n_plain // 2
    assert x.grad is None and all(p.grad is None for p in params.values()), "the probe must not accumulate gradients"
    res = unroll_backward(make_outer(target, params), loss_fn, params, lr, N_STEPS, batches, mode="constant_memory")
    assert res.extra["checkpoint_every"] == auto_checkpoint_every(loss_fn, params, batches, N_STEPS) == 3
