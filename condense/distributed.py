"""Distillation and expert training on ``torch.distributed``: one process per device, any number of machines.

Under ``torchrun`` (or any launcher that sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``) a run joins
the process group with the ``gloo`` (CPU) or ``nccl`` (GPU) backend; without it every helper here
is the identity and the code path is the one-process one.

Sharding patterns the methods use:

* **split classes, sum image gradients** (DM, DataDAM, DC, DSA): every rank holds the whole
  synthetic set and draws every random number (real-batch indices, DSA parameters) of every class,
  so all generators stay in step; it computes the terms of its own classes (:meth:`DistContext.block`)
  and :meth:`DistContext.reduce_grads` sums the image gradients, after which every rank takes the
  same optimiser step. Classes own disjoint image slices, so that sum adds zeros: bit-exact.
* **split a batch, sum its gradient** (MTT, AST): :func:`replicate` enters a replicated tensor into
  a rank-local computation (backward: all-reduce), :func:`sum_shards` sums the rank-local results
  into a replicated one (backward: identity), as Megatron-LM's ``f``/``g`` operators (Shoeybi et al.
  2019, Sec. 3). Every rank follows the same trajectory and back-propagates its own share only.
* **cross-rank BatchNorm** (:func:`cross_rank_batchnorm`): batch statistics over every rank's
  images, differentiable (all-reduced sums whose backward all-reduces the gradients), as one process
  computes them over all classes at once.

:func:`check_agreement` compares a hash of the run's settings across ranks before any work;
:func:`rank_failure_guard` turns a peer's death (a failed collective) into one line.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

from .utils import UserError, atomic_write_bytes

__all__ = [
    "DistContext",
    "distributed_context",
    "current_context",
    "launch_context",
    "is_main_process",
    "replicate",
    "sum_shards",
    "CrossRankBatchNorm",
    "cross_rank_batchnorm",
    "check_agreement",
    "require_shares",
    "rank_failure_guard",
    "join_run",
    "share_files",
    "broadcast_object",
    "gather_object",
    "on_main",
    "kept_on_main",
    "split_evaluation",
    "check_shared_directory",
]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> list[int]:
        """Indices ``rank, rank + world, ...`` of ``n`` jobs handled by this process."""
        return list(range(self.rank, n, self.world_size))

    def block(self, n: int) -> range:
        """This rank's contiguous block of ``n`` units (``torch.tensor_split`` sizes: the first ``n % world`` get one more)."""
        q, r = divmod(n, self.world_size)
        start = self.rank * q + min(self.rank, r)
        return range(start, start + q + (self.rank < r))

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def reduce_grads(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum ``.grad`` of ``tensors`` over ranks, in place (one all-reduce of the concatenation)."""
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in tensors]
        if not self.active:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        for t, part in zip(tensors, flat.split([g.numel() for g in grads])):
            t.grad = part.view_as(t)

    def gather_units(self, values: dict[int, torch.Tensor], n: int) -> torch.Tensor:
        """``(n,)`` tensor of per-unit scalars, each computed on the rank that owns it (others add zeros: exact)."""
        if not self.active:
            return torch.stack([values[i] for i in range(n)])
        like = next(iter(values.values()))
        vec = torch.zeros(n, dtype=like.dtype, device=like.device)
        for i, v in values.items():
            vec[i] = v
        dist.all_reduce(vec)
        return vec


def distributed_context(device: torch.device | None = None) -> DistContext:
    """Join the process group described by ``torchrun``'s environment (``RANK``/``WORLD_SIZE``), if any.

    A group created here is destroyed at interpreter exit: a gloo group left to the C++ static
    destructors aborts the process now and then ("terminate called without an active exception").
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_available():
        raise UserError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    atexit.register(_destroy_process_group)
    return DistContext(dist.get_rank(), dist.get_world_size())


def launch_context(device: torch.device) -> tuple[DistContext, torch.device]:
    """A command's start under ``torchrun``: the device of this rank (``cuda`` -> ``cuda:LOCAL_RANK``,
    refused when the node has fewer GPUs than local ranks) and the joined group (NCCL on GPUs, gloo on CPU)."""
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        local_rank, local_world = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if local_world > torch.cuda.device_count():
            raise UserError(f"{local_world} ranks on this node but only {torch.cuda.device_count()} GPU(s); "
                            "start at most one rank per GPU (--nproc-per-node)")  # fmt: skip
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return distributed_context(device), device


def current_context() -> DistContext:
    """The joined process group, or the one-process context; never joins one."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    return DistContext()


def is_main_process() -> bool:
    """True on rank 0 and without a process group (who writes files and progress)."""
    return current_context().is_main


def _destroy_process_group() -> None:
    if dist.is_initialized():
        with contextlib.suppress(RuntimeError):  # a peer that died already cannot meet the barrier
            dist.barrier()  # no rank tears its connections down while a peer still uses them
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- differentiable collectives
def _all_reduced(x: torch.Tensor) -> torch.Tensor:
    """A summed-over-ranks copy of ``x`` (the input is left as it is)."""
    out = x.contiguous().clone()
    dist.all_reduce(out)
    return out


class _Replicate(torch.autograd.Function):
    """Identity forward; backward sums the gradient over ranks (Megatron's ``f``).

    The backward is itself :class:`_SumShards` (Megatron's ``g``), so a gradient taken with
    ``create_graph=True`` through it (``higher``'s step) is the sum over ranks and stays
    differentiable; an ordinary backward computes the same all-reduce.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _SumShards.apply(grad)


class _SumShards(torch.autograd.Function):
    """Forward sums over ranks; backward is the identity, the result being used alike on every rank (Megatron's ``g``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _all_reduced(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


class _SumOverRanks(torch.autograd.Function):
    """Forward and backward both sum over ranks: each rank's loss is its own term of the total."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _all_reduced(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _all_reduced(grad)


def replicate(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Enter tensors that every rank holds alike into a rank-local computation (one all-reduce in backward)."""
    flat = _Replicate.apply(torch.cat([t.reshape(-1) for t in tensors]))
    return [p.view_as(t) for p, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def sum_shards(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Sum rank-local tensors over ranks (one all-reduce of their concatenation); differentiable."""
    flat = _SumShards.apply(torch.cat([t.reshape(-1) for t in tensors]))
    return [p.view_as(t) for p, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


# ----------------------------------------------------------------------------- cross-rank BatchNorm
class CrossRankBatchNorm(nn.Module):
    """A ``BatchNorm{1,2,3}d`` whose training-mode statistics span the batches of every rank.

    Two-pass like PyTorch's own kernel: the mean from all-reduced sums, then the biased variance
    from all-reduced squared deviations; both all-reduces are differentiable and their backward
    sums the gradients of every rank's loss (each rank's loss is its own term of the total). Running statistics get the unbiased
    variance, as ``nn.BatchNorm``. Parameters and buffers are the wrapped layer's.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        if not bn.training:
            return bn(x)
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() // x.shape[1]], device=x.device)
        dist.all_reduce(count)
        n = int(count)
        mean = _SumOverRanks.apply(x.sum(dims)) / n
        shape = [1, -1] + [1] * (x.dim() - 2)
        centred = x - mean.view(shape)
        var = _SumOverRanks.apply((centred * centred).sum(dims)) / n
        if bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                m = bn.momentum if bn.momentum is not None else 0.1
                bn.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                bn.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
                bn.num_batches_tracked.add_(1)
        out = centred * torch.rsqrt(var + bn.eps).view(shape)
        if bn.affine:
            out = out * bn.weight.view(shape) + bn.bias.view(shape)
        return out


def cross_rank_batchnorm(net: nn.Module) -> nn.Module:
    """``net`` with every BatchNorm layer wrapped in :class:`CrossRankBatchNorm` (in place; returned)."""
    for name, child in net.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(net, name, CrossRankBatchNorm(child))
        else:
            cross_rank_batchnorm(child)
    return net


# ----------------------------------------------------------------------------- refusals
def check_agreement(ctx: DistContext, settings: dict[str, Any]) -> None:
    """Refuse to start unless every rank has the same ``settings`` (compared as a hash)."""
    if not ctx.active:
        return
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    hashes = gather_object(ctx, digest)
    differ = [r for r, h in enumerate(hashes) if h != hashes[0]]
    if differ:
        raise UserError(f"the ranks were started with different settings (rank {differ[0]} differs from rank 0); "
                        "launch every rank with the same flags")  # fmt: skip


def require_shares(ctx: DistContext, units: int, what: str) -> None:
    """Refuse a world larger than the number of shareable ``units`` (each rank needs at least one)."""
    if ctx.world_size > units:
        raise UserError(f"{ctx.world_size} ranks but only {units} {what} to split between them; use at most {units} ranks")


def _dead_peers(ctx: DistContext) -> list[int]:
    """Ranks that no longer answer (asked through the rendezvous store, which outlives the failed group)."""
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set(f"condense/alive/{ctx.rank}", "1")
        store.wait([f"condense/alive/{r}" for r in range(ctx.world_size)], _ALIVE_WAIT)
        return []
    except Exception:  # noqa: BLE001 - a missing key after the wait (or a dead store) is the answer
        pass
    dead = []
    with contextlib.suppress(Exception):
        store = dist.distributed_c10d._get_default_store()
        dead = [r for r in range(ctx.world_size) if not store.check([f"condense/alive/{r}"])]
    return dead


_ALIVE_WAIT = datetime.timedelta(seconds=5)  # how long survivors wait for each other to check in


@contextlib.contextmanager
def rank_failure_guard(ctx: DistContext) -> Iterator[None]:
    """Turn a failed collective (a peer rank died or was killed) into a :class:`UserError` naming it."""
    try:
        yield
    except UserError:
        raise
    except (RuntimeError, dist.DistError) as exc:
        if not ctx.active or not _is_collective_failure(exc):
            raise
        dead = _dead_peers(ctx)
        who = f"rank {', '.join(map(str, dead))}" if dead else "another rank"
        raise UserError(f"rank {ctx.rank}: {who} stopped during the run ({_reason(exc)}); stopping too, no set written") from None


def _reason(exc: BaseException) -> str:
    """The backend's words without its source location: ``[.../pair.cc:537] Read error ...: Connection reset by peer.`` -> the last."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". ")[0].split(": ")[-1][:120]


def _is_collective_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(k in text for k in ("gloo", "nccl", "connection", "timed out", "peer"))


def join_run(device: torch.device, method: str, dataset: Any, ipc: int, seed: int, config: Any, units: int, what: str) -> DistContext:
    """Start of a distributed method: join ``torchrun``'s group (if any), check that every rank runs the
    same method, data, IPC, seed and config, and that each rank gets at least one of the ``units``
    (``what``: their name)."""
    ctx = distributed_context(device)
    settings = {"method": method, "dataset": dataset.describe(), "ipc": ipc, "seed": seed, "config": dataclasses.asdict(config)}
    check_agreement(ctx, settings)
    require_shares(ctx, units, what)
    return ctx


def share_files(ctx: DistContext, files: Sequence[tuple[str | os.PathLike, int]]) -> None:
    """Give every rank every ``(path, owner)`` file through the process group (no shared file system needed).

    Per file, the owner broadcasts its length and then its bytes as a ``uint8`` tensor (on this rank's
    CUDA device under NCCL); every other rank writes them to its own ``path`` atomically. Every rank
    calls this with the same files in the same order (each with its own paths).
    """
    if not ctx.active:
        return
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    for path, owner in files:
        mine = ctx.rank == owner
        data = bytearray(Path(path).read_bytes() if mine else b"")
        size = torch.tensor([len(data)], dtype=torch.int64, device=device)
        dist.broadcast(size, src=owner)
        buf = torch.empty(int(size), dtype=torch.uint8, device=device)
        if mine and data:
            buf.copy_(torch.frombuffer(data, dtype=torch.uint8))
        dist.broadcast(buf, src=owner)
        if not mine:
            atomic_write_bytes(buf.cpu().numpy().tobytes(), path, what=f"file from rank {owner}")


# ----------------------------------------------------------------------------- commands of many steps (experiments)
T = TypeVar("T")


def broadcast_object(ctx: DistContext, obj: Any = None) -> Any:
    """Rank 0's ``obj`` on every rank (the others' argument is ignored); ``obj`` itself without a group."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_object(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank; ``[obj]`` without a group."""
    if not ctx.active:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def on_main(ctx: DistContext, work: Callable[[], T]) -> T:
    """``work()`` run by rank 0 alone (it reads files rank 0 owns), its result on every rank; a
    :class:`UserError` it raises is raised on every rank."""
    if not ctx.active:
        return work()
    outcome: tuple[bool, Any] | None = None
    if ctx.is_main:
        try:
            outcome = (True, work())
        except UserError as exc:
            outcome = (False, str(exc))
    ok, value = broadcast_object(ctx, outcome)
    if not ok:
        raise UserError(value)
    return value


def kept_on_main(ctx: DistContext, keep: Callable[[Callable[[], T]], tuple[T, bool]], compute: Callable[[], T]) -> tuple[T, bool]:
    """A result kept in a file that rank 0 alone reads and writes: ``keep(compute)`` returns ``(result, kept)``
    (:func:`condense.checkpoint.kept_result` with its path and key bound). Under a group rank 0 runs ``keep`` and
    every rank gets its decision: the kept result, or ``compute()`` run by every rank together (rank 0 keeps it)."""
    if not ctx.active:
        return keep(compute)
    if not ctx.is_main:
        decision, value = broadcast_object(ctx)
        if decision == "error":
            raise UserError(value)
        return (value, True) if decision == "kept" else (compute(), False)
    started = []

    def together() -> T:
        started.append(True)
        broadcast_object(ctx, ("compute", None))
        return compute()

    try:
        result, kept = keep(together)
    except UserError as exc:
        if not started:
            broadcast_object(ctx, ("error", str(exc)))
        raise
    if kept:
        broadcast_object(ctx, ("kept", result))
    return result, kept


def split_evaluation(ctx: DistContext, num_evals: int, evaluate: Callable[[list[int]], dict[str, Any]]) -> dict[str, Any]:
    """An evaluation of ``num_evals`` networks per architecture, the networks split over the ranks.

    ``evaluate(eval_ids)`` (:func:`condense.evaluate.evaluate_images` given ``eval_ids``) trains this rank's
    share (:meth:`DistContext.share`); its ``{model: Summary}`` come back on every rank with ``accs`` and
    ``max_accs`` gathered in network order, the lists of one process (network ``i`` is seeded by ``i``
    whichever rank trains it); ``seconds``: the slowest rank's."""
    local = evaluate(ctx.share(num_evals))
    if not ctx.active:
        return local
    gathered = gather_object(ctx, {m: (s.accs, s.max_accs, s.seconds) for m, s in local.items()})
    owner = {i: (r, k) for r in range(ctx.world_size) for k, i in enumerate(DistContext(r, ctx.world_size).share(num_evals))}

    def in_order(model: str, field: int) -> list[float]:
        return [gathered[owner[i][0]][model][field][owner[i][1]] for i in range(num_evals)]

    return {m: dataclasses.replace(s, accs=in_order(m, 0), max_accs=in_order(m, 1), seconds=max(g[m][2] for g in gathered))
            for m, s in local.items()}  # fmt: skip


def check_shared_directory(ctx: DistContext, directory: str | os.PathLike, flag: str) -> None:
    """Refuse, on every rank with one line, unless every rank sees the files rank 0 writes into ``directory``
    (rank 0 creates it and writes a marker file with a fresh token; every rank reads it back)."""
    if not ctx.active:
        return
    marker = Path(directory) / f".condense-shared-{broadcast_object(ctx, os.urandom(8).hex())}"
    if ctx.is_main:
        atomic_write_bytes(marker.name.encode(), marker, what="marker file")  # creates the directory
    ctx.barrier()
    try:
        seen = marker.read_bytes() == marker.name.encode()
    except OSError:
        seen = False
    views = gather_object(ctx, seen)
    if ctx.is_main:
        marker.unlink(missing_ok=True)
    blind = [r for r, ok in enumerate(views) if not ok]
    if blind:
        raise UserError(f"{flag} {directory}: rank {blind[0]} cannot see the files rank 0 writes there; "
                        f"on several machines give {flag} a directory on storage every machine mounts")  # fmt: skip
