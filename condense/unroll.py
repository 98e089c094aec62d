r"""Differentiable inner training ("unrolling") shared by the bilevel methods.

Starting from parameters :math:`\theta_0` (a ``dict`` of tensors), run :math:`N` steps of SGD or
heavy-ball momentum on batches :math:`B_0, \dots, B_{N-1}`:

.. math::
    g_i = \nabla_\theta \ell(\theta_i; B_i), \qquad
    b_{i+1} = \mu\, b_i + g_i \;(b_0 = 0), \qquad
    \theta_{i+1} = \theta_i - \alpha\, b_{i+1}

(:math:`\mu = 0` is plain SGD; otherwise the update is exactly ``torch.optim.SGD(momentum=mu)``,
whose first buffer equals the first gradient). An outer loss :math:`L` of the iterates recorded at
chosen steps (always including :math:`\theta_N`) is then differentiated with respect to everything
the batches, the inner learning rate :math:`\alpha` and :math:`\theta_0` depend on.

Nothing here knows about images: ``loss_fn(params, batch) -> scalar`` and ``batches(i) -> batch``
are arbitrary callables (use :func:`functional_loss` for an ``nn.Module`` and pass any buffers,
e.g. BatchNorm statistics, explicitly inside the batch or the closure).

Modes (:func:`unroll_backward`):

* ``full`` - every step keeps its graph (``create_graph``); exact; memory grows with :math:`N`.
* ``truncated`` - the first :math:`N-k` steps run without a graph; the gradient is exact through the
  last ``truncate = k`` steps only (truncated back-propagation, Shaban et al., AISTATS 2019).
* ``constant_memory`` - TESLA (Cui et al., ICML 2023, Sec. 4.1): the forward pass keeps no graph
  but the last step's (the first one the backward pass needs, so it is not recomputed);
  the backward pass walks the steps in reverse, recomputing one step's graph at a time and pushing
  the adjoint :math:`\lambda_i = \partial L / \partial(\theta_i, b_i)` through it as a
  vector-Jacobian product. The result equals ``full`` exactly. States are stored every
  ``checkpoint_every`` steps and recomputed inside a segment (Griewank's checkpointing). The default
  (``None``) chooses from a memory budget of one step's graph: when the :math:`N` stored states fit
  in the bytes autograd saves for one forward pass of ``loss_fn`` (measured once with
  ``saved_tensors_hooks``), every state is stored (``checkpoint_every = 1``, as TESLA's official
  ``distill.py`` does, and no state is recomputed); otherwise :math:`\lceil\sqrt N\rceil`, i.e.
  :math:`O(\sqrt N)` copies at the price of one more no-graph step per step. Either way the peak
  is bounded independently of :math:`N`: about one step's graph plus at most the budget.

  Deviation note: TESLA's paper (Eq. 6) calls the procedure exact, but its official code
  (``distill.py``) treats the later iterates as constants, i.e. drops the Hessian-vector products
  :math:`-\alpha H_j \lambda_{j+1}` of the adjoint recursion. ``hessian=False`` reproduces that
  cheaper approximation (SGD only); the default ``hessian=True`` is the exact gradient.

Sharded inner gradients (``sharded=True``, under ``torch.distributed``): ``loss_fn`` returns this
rank's term of a loss that is a sum over ranks (e.g. its share of a mini-batch, divided by the whole
batch size). Each step enters :math:`\theta_i` into the rank-local gradient with
:func:`condense.distributed.replicate` and sums the local gradients (and losses) with
:func:`condense.distributed.sum_shards` - one all-reduce of the parameter vector per step forward,
one per step backward - so every rank follows the same :math:`\theta_i` while holding the graph of
its own share only. Gradients reaching the batch tensors are this rank's part (sum them over ranks);
those reaching ``lr`` and :math:`\theta_0` are complete on every rank. Backend ``higher`` takes the
same path: its loss sees ``replicate(θ_i)``, whose backward (the differentiable shard sum) makes the
gradient ``higher`` takes with ``create_graph`` the summed one; ``higher``'s ``grad_callback`` alone
(summing the gradients after the fact) would miss the other ranks' Hessian-vector products.

Backends: ``"func"`` computes :math:`g_i` with :func:`torch.func.grad`; ``"higher"`` steps a
``higher`` differentiable ``SGD`` (``full`` and ``truncated`` only) and exists to cross-check the
update rule - both give the same outer gradients.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value

from .distributed import current_context, replicate, sum_shards
from .utils import UserError

__all__ = [
    "InnerSGD",
    "Unrolled",
    "MODES",
    "BACKENDS",
    "auto_checkpoint_every",
    "functional_loss",
    "unroll",
    "unroll_backward",
]

MODES = ("full", "truncated", "constant_memory")
BACKENDS = ("func", "higher")

Params = dict[str, torch.Tensor]
LossFn = Callable[[Params, Any], torch.Tensor]
BatchFn = Callable[[int], Any]
OuterLossFn = Callable[[dict[int, Params]], torch.Tensor]
State = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class InnerSGD:
    """Inner optimiser: SGD, with heavy-ball ``momentum`` (torch semantics, no dampening) if > 0."""

    momentum: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.momentum, (int, float)) and 0.0 <= self.momentum < 1.0):
            raise UserError(f"inner momentum must lie in [0, 1), got {self.momentum!r}")


@dataclass
class Unrolled:
    """Result of an unroll: final parameters, the recorded iterates and the inner losses."""

    params: Params
    recorded: dict[int, Params]
    inner_losses: list[float]
    outer_loss: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def functional_loss(model: nn.Module, criterion: Callable[..., torch.Tensor] = F.cross_entropy) -> LossFn:
    """``loss_fn(params, (x, y)) = criterion(model_params(x), y)`` via :func:`torch.func.functional_call`."""

    def loss_fn(params: Params, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return criterion(functional_call(model, params, (x,)), y)

    return loss_fn


# ----------------------------------------------------------------------------- validation
def _check(params: Params, lr: torch.Tensor | float, steps: int, mode: str, truncate: int | None, backend: str,
           record: Iterable[int]) -> tuple[torch.Tensor, list[int]]:  # fmt: skip
    if not isinstance(params, dict) or not params:
        raise UserError("params must be a non-empty dict of tensors")
    for k, v in params.items():
        if not (isinstance(v, torch.Tensor) and v.is_floating_point()):
            raise UserError(f"parameter {k!r} must be a floating-point tensor")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"the number of inner steps must be an integer >= 1, got {steps!r}")
    if mode not in MODES:
        raise UserError(f"unknown unroll mode {mode!r}; choose from {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise UserError(f"unknown unroll backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if mode == "truncated" and (truncate is None or not 1 <= truncate <= steps):
        raise UserError(f"truncated mode needs 1 <= truncate <= steps ({steps}), got {truncate!r}")
    if mode == "constant_memory" and backend != "func":
        raise UserError("constant_memory mode needs backend='func' (higher keeps a graph per step)")
    rec = sorted(set(int(s) for s in record) | {steps})
    if rec[0] < 0 or rec[-1] > steps:
        raise UserError(f"recorded steps must lie in [0, {steps}], got {rec}")
    if not isinstance(lr, torch.Tensor):
        lr = torch.tensor(float(lr))
    if lr.numel() != 1 or not lr.is_floating_point():
        raise UserError("the inner learning rate must be a float or a one-element floating tensor")
    return lr.reshape(()), rec


# ----------------------------------------------------------------------------- one step (func backend)
def _func_step(loss_fn: LossFn, names: list[str], state: State, batch: Any, lr: torch.Tensor, momentum: float,
               sharded: bool = False) -> tuple[State, torch.Tensor]:  # fmt: skip
    """One update of the state ``(θ..., b...)``; differentiable w.r.t. state, lr and batch.

    ``sharded``: the gradient of this rank's loss term, summed over ranks (module docstring).
    """
    n = len(names)
    theta = replicate(state[:n]) if sharded else state[:n]
    grads, loss = grad_and_value(loss_fn)(dict(zip(names, theta)), batch)
    g = tuple(grads[k] for k in names)
    if sharded:
        *summed, loss = sum_shards([*g, loss.detach().reshape(1)])
        g, loss = tuple(summed), loss.reshape(())
    bufs = tuple(momentum * b + gi for b, gi in zip(state[n:], g)) if momentum else ()
    new = tuple(p - lr * u for p, u in zip(state[:n], bufs or g))
    return new + bufs, loss.detach()


def _initial_state(params: Params, momentum: float) -> State:
    ps = tuple(params.values())
    return ps + (tuple(torch.zeros_like(p) for p in ps) if momentum else ())


# ----------------------------------------------------------------------------- forward unroll
def unroll(
    loss_fn: LossFn,
    params: Params,
    lr: torch.Tensor | float,
    steps: int,
    batches: BatchFn,
    *,
    optimizer: InnerSGD = InnerSGD(),
    mode: str = "full",
    truncate: int | None = None,
    record: Iterable[int] = (),
    backend: str = "func",
) -> Unrolled:
    """Run ``steps`` differentiable inner steps (modes ``full`` / ``truncated``).

    Returns the final parameters and the iterates at the ``record`` steps, all part of the autograd
    graph, so any outer loss built from them can simply be ``.backward()``-ed. For
    ``constant_memory`` use :func:`unroll_backward`.
    """
    lr, rec = _check(params, lr, steps, mode, truncate, backend, record)
    if mode == "constant_memory":
        raise UserError("constant_memory mode only exists inside unroll_backward (it needs the outer loss)")
    recorded, losses = _forward(loss_fn, params, lr, steps, batches, optimizer, mode, truncate, rec, backend)
    return Unrolled(params=recorded[steps], recorded=recorded, inner_losses=_floats(losses))


def _forward(loss_fn: LossFn, params: Params, lr: torch.Tensor, steps: int, batches: BatchFn, optimizer: InnerSGD, mode: str,
             truncate: int | None, rec: list[int], backend: str, sharded: bool = False
             ) -> tuple[dict[int, Params], list[torch.Tensor]]:  # fmt: skip
    first_graph_step = steps - truncate if mode == "truncated" else 0
    if backend == "higher":
        return _unroll_higher(loss_fn, params, lr, steps, batches, optimizer.momentum, first_graph_step, set(rec), sharded)
    return _unroll_func(loss_fn, params, lr, steps, batches, optimizer.momentum, first_graph_step, set(rec), sharded)


def _floats(values: list[torch.Tensor]) -> list[float]:
    """Scalars to floats with one host synchronisation (not one per value)."""
    return torch.stack(values).tolist() if values else []


def _unroll_func(loss_fn: LossFn, params: Params, lr: torch.Tensor, steps: int, batches: BatchFn, momentum: float,
                 first_graph_step: int, rec: set[int], sharded: bool = False
                 ) -> tuple[dict[int, Params], list[torch.Tensor]]:  # fmt: skip
    names = list(params)
    state = _initial_state(params, momentum)
    recorded: dict[int, Params] = {}
    losses = []
    for i in range(steps):
        if i == first_graph_step and i > 0:
            state = tuple(t.detach() for t in state)
        if i in rec:
            recorded[i] = dict(zip(names, state[: len(names)]))
        with torch.set_grad_enabled(i >= first_graph_step and torch.is_grad_enabled()):
            state, loss = _func_step(loss_fn, names, state, batches(i), lr, momentum, sharded)
        losses.append(loss)
    recorded[steps] = dict(zip(names, state[: len(names)]))
    return recorded, losses


def _unroll_higher(loss_fn: LossFn, params: Params, lr: torch.Tensor, steps: int, batches: BatchFn, momentum: float,
                   first_graph_step: int, rec: set[int], sharded: bool = False
                   ) -> tuple[dict[int, Params], list[torch.Tensor]]:  # fmt: skip
    """The same unroll stepped by ``higher.optim.DifferentiableSGD`` (a cross-check of the update rule).

    ``sharded``: the loss is evaluated at :func:`~condense.distributed.replicate` of the iterate, so the
    gradient ``higher`` takes (``create_graph``) with respect to the iterate is the sum of the ranks'
    gradients (replicate's backward is the differentiable shard sum) and the outer backward sums the
    ranks' Hessian-vector products, as :func:`_func_step`; the inner losses are summed over ranks.
    """
    import higher

    names = list(params)
    dummies = [torch.zeros_like(p, requires_grad=True) for p in params.values()]

    def diff_opt(track: bool, buffers: Sequence[torch.Tensor] | None = None):
        opt = torch.optim.SGD(dummies, lr=1.0, momentum=momentum)
        for d, b in zip(dummies, buffers or ()):
            opt.state[d]["momentum_buffer"] = b.detach()
        return higher.optim.get_diff_optim(opt, dummies, override={"lr": [lr]}, track_higher_grads=track)

    current = list(params.values())
    opt = diff_opt(track=first_graph_step == 0)
    recorded: dict[int, Params] = {}
    losses = []
    for i in range(steps):
        if i == first_graph_step and i > 0:
            current = [p.detach().requires_grad_() for p in current]
            bufs = [opt.state[0][j]["momentum_buffer"] for j in range(len(current))] if momentum else None
            opt = diff_opt(track=True, buffers=bufs)
        if i in rec:
            recorded[i] = dict(zip(names, current))
        if not all(p.requires_grad for p in current):
            current = [p if p.requires_grad else p.detach().requires_grad_() for p in current]
        loss = loss_fn(dict(zip(names, replicate(current) if sharded else current)), batches(i))
        current = opt.step(loss, params=current)
        losses.append(loss.detach())
    recorded[steps] = dict(zip(names, current))
    if sharded:  # the reported loss is the whole batch's, as the func backend's (one all-reduce for all steps)
        losses = list(sum_shards([torch.stack(losses)])[0].unbind())
    return recorded, losses


# ----------------------------------------------------------------------------- outer gradient
def unroll_backward(
    outer_loss: OuterLossFn,
    loss_fn: LossFn,
    params: Params,
    lr: torch.Tensor | float,
    steps: int,
    batches: BatchFn,
    *,
    optimizer: InnerSGD = InnerSGD(),
    mode: str = "full",
    truncate: int | None = None,
    record: Iterable[int] = (),
    backend: str = "func",
    inputs: Sequence[torch.Tensor] | None = None,
    checkpoint_every: int | None = None,
    hessian: bool = True,
    sharded: bool = False,
) -> Unrolled:
    """Unroll, evaluate ``outer_loss(recorded)`` and accumulate its gradient into ``.grad``.

    Like ``loss.backward(inputs=inputs)``: gradients are accumulated into ``inputs`` (default:
    every leaf that requires grad - the tensors the batches are built from, ``lr``, ``params``).
    ``recorded`` maps each step in ``record`` and ``steps`` to the iterate at that step.

    In ``constant_memory`` mode ``batches(i)`` is called twice per step (forward and backward), so it
    must be deterministic (pre-sample indices and augmentation parameters) and build each batch
    afresh from leaf tensors. ``sharded``: see the module docstring (every rank must call this alike).
    """
    lr, rec = _check(params, lr, steps, mode, truncate, backend, record)
    sharded = sharded and current_context().active
    if mode != "constant_memory":
        recorded, losses = _forward(loss_fn, params, lr, steps, batches, optimizer, mode, truncate, rec, backend, sharded)
        loss = outer_loss(recorded)
        _backward([loss], None, inputs)
        *inner, outer = _floats([*losses, loss.detach()])
        return Unrolled(params=recorded[steps], recorded=recorded, inner_losses=inner, outer_loss=outer)
    if not hessian and optimizer.momentum:
        raise UserError("hessian=False (TESLA's approximation) is only defined for plain SGD (momentum 0)")
    k = checkpoint_every
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise UserError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    if k is None:
        k = auto_checkpoint_every(loss_fn, params, batches, steps, optimizer.momentum)
        if sharded:  # every rank must recompute the same steps (each one is a collective)
            k = _max_over_ranks(k, next(iter(params.values())).device)
    return _constant_memory(outer_loss, loss_fn, params, lr, steps, batches, optimizer.momentum, rec, inputs, k, hessian, sharded)


def _max_over_ranks(k: int, device: torch.device) -> int:
    t = torch.tensor([k], dtype=torch.long, device=device)  # NCCL reduces CUDA tensors only
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t)


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def auto_checkpoint_every(loss_fn: LossFn, params: Params, batches: BatchFn, steps: int, momentum: float = 0.0) -> int:
    """``checkpoint_every`` for ``constant_memory``: 1 (store all states) if they fit in one step's graph.

    The budget is the number of bytes autograd saves for one ordinary forward pass of ``loss_fn`` on
    batch 0 (counted with :func:`torch.autograd.graph.saved_tensors_hooks`) - a lower bound on the
    graph of one differentiable step, which also holds the backward's intermediates. The state of
    one step is the parameters (and momentum buffers). Over budget: ⌈√N⌉.
    """
    state_bytes = sum(_bytes(p) for p in params.values()) * (2 if momentum else 1)
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += _bytes(t)
        return t

    leaves = {k: _leaf(v) for k, v in params.items()}
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn(leaves, batches(0))
    return 1 if steps * state_bytes <= saved else math.ceil(math.sqrt(steps))


def _backward(roots: Sequence[torch.Tensor], grads: Sequence[torch.Tensor] | None,
              inputs: Sequence[torch.Tensor] | None) -> None:  # fmt: skip
    """``torch.autograd.backward`` restricted to roots that carry a graph."""
    keep = [i for i, r in enumerate(roots) if r.requires_grad]
    if not keep:
        return
    sel_inputs = None if inputs is None else [t for t in inputs if t.requires_grad]
    if sel_inputs == []:
        return
    torch.autograd.backward([roots[i] for i in keep], None if grads is None else [grads[i] for i in keep], inputs=sel_inputs)


def _leaf(t: torch.Tensor, requires_grad: bool = True) -> torch.Tensor:
    return t.detach().requires_grad_(requires_grad)


def _constant_memory(outer_loss: OuterLossFn, loss_fn: LossFn, params: Params, lr: torch.Tensor, steps: int,
                     batches: BatchFn, momentum: float, rec: list[int], inputs: Sequence[torch.Tensor] | None,
                     every: int, hessian: bool, sharded: bool = False) -> Unrolled:  # fmt: skip
    """Reverse-mode through the unroll, one recomputed step graph at a time (see module docstring)."""
    names, n = list(params), len(params)
    lr_leaf = _leaf(lr, lr.requires_grad)

    def step(state: State, i: int, graph: bool) -> tuple[State, torch.Tensor]:
        with torch.set_grad_enabled(graph):
            return _func_step(loss_fn, names, state, batches(i), lr_leaf, momentum, sharded)

    # forward: no graphs except the last step's, which the backward pass needs first; keep segment
    # checkpoints and the recorded iterates
    state = tuple(t.detach() for t in _initial_state(params, momentum))
    checkpoints = _StateStore(state, math.ceil(steps / every))
    recorded: dict[int, Params] = {}
    losses = state[0].new_empty(steps)  # one buffer: no per-step scalar allocation between the big ones
    last: tuple[State, State] | None = None
    for i in range(steps):
        if i % every == 0:
            checkpoints.put(i // every, state)
        if i in rec:
            recorded[i] = dict(zip(names, state[:n]))
        if i == steps - 1:
            leaves = tuple(_leaf(t, hessian) for t in state)
            new, loss = step(leaves, i, graph=True)
            last, state = (leaves, new), tuple(t.detach() for t in new)
        else:
            state, loss = step(state, i, graph=False)
        losses[i] = loss
    recorded[steps] = dict(zip(names, state[:n]))

    # seeds: dL/dθ_s for every recorded step s (plus direct dependencies of L on user tensors)
    rec_leaves = {s: {k: _leaf(v) for k, v in p.items()} for s, p in recorded.items()}
    loss_value = outer_loss(rec_leaves)
    seed_inputs = None if inputs is None else [*inputs, *(v for p in rec_leaves.values() for v in p.values())]
    _backward([loss_value], None, seed_inputs)
    seeds = {s: tuple(_grad_or_zero(p[k]) for k in names) for s, p in rec_leaves.items()}

    adjoint = seeds[steps] + tuple(torch.zeros_like(t) for t in state[n:])
    for start in reversed(range(0, steps, every)):
        end = min(start + every, steps)
        segment = [checkpoints.get(start // every)]
        for i in range(start, end - 1 - (end == steps)):  # the last step's state is not needed (its graph is kept)
            segment.append(step(segment[-1], i, graph=False)[0])
        for i in reversed(range(start, end)):
            if i == steps - 1:
                assert last is not None
                (leaves, new), last = last, None
            else:
                leaves = tuple(_leaf(t, hessian) for t in segment.pop())
                new, _ = step(leaves, i, graph=True)
            step_inputs = None if inputs is None else [*inputs, lr_leaf, *(leaves if hessian else ())]
            _backward(list(new), list(adjoint), step_inputs)
            if hessian:
                adjoint = tuple(_grad_or_zero(t) for t in leaves)
            if i in seeds:
                adjoint = tuple(a + s for a, s in zip(adjoint[:n], seeds[i])) + adjoint[n:]

    # hand the adjoints of θ_0 and α to whatever graph produced them
    roots = [*params.values(), lr]
    _backward(roots, [*adjoint[:n], _grad_or_zero(lr_leaf)], inputs)
    *inner, outer = torch.cat([losses, loss_value.detach().reshape(1).to(losses.dtype)]).tolist()  # one host sync
    return Unrolled(params=recorded[steps], recorded=recorded, inner_losses=inner, outer_loss=outer,
                    extra={"checkpoint_every": every})  # fmt: skip


class _StateStore:
    """``slots`` copies of a state in one buffer allocated up front (one per dtype and device).

    Storing each state as its own tensors, allocated while a step's large temporaries are alive,
    scatters small long-lived blocks among the freed ones; once the allocator keeps freed memory
    for reuse (:mod:`condense.threads`) that fragmentation grew constant_memory's resident peak by
    ~60 MB per step of ConvNet-128. One buffer keeps the peak flat in N. ``get`` returns views.
    """

    def __init__(self, like: State, slots: int) -> None:
        self.shapes = [t.shape for t in like]
        self.keys = [(t.dtype, t.device) for t in like]
        sizes: dict[tuple[torch.dtype, torch.device], int] = {}
        self.offsets = []
        for t, key in zip(like, self.keys):
            self.offsets.append(sizes.get(key, 0))
            sizes[key] = sizes.get(key, 0) + t.numel()
        self.buffers = {key: torch.empty(slots, size, dtype=key[0], device=key[1]) for key, size in sizes.items()}

    def put(self, slot: int, state: State) -> None:
        for t, key, off in zip(state, self.keys, self.offsets):
            self.buffers[key][slot, off : off + t.numel()].copy_(t.reshape(-1))

    def get(self, slot: int) -> State:
        return tuple(self.buffers[key][slot, off : off + shape.numel()].view(shape)
                     for key, off, shape in zip(self.keys, self.offsets, self.shapes))  # fmt: skip


def _grad_or_zero(t: torch.Tensor) -> torch.Tensor:
    return t.grad if t.grad is not None else torch.zeros_like(t)
