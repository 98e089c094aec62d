"""``K`` networks of one architecture trained as one batched functional model.

The networks' parameters and buffers are stacked along a new leading dimension
(:func:`torch.func.stack_module_state`) and one :func:`torch.func.vmap` of
:func:`torch.func.functional_call` runs all of them at once: a convolution becomes one grouped
convolution, a linear layer one batched matrix product. Every network keeps its own data: its own
batch order and augmentation draws (the caller feeds a ``(K, B, ...)`` input), its own BatchNorm
statistics (the vmapped batch norm normalises each network's batch and updates each network's
running statistics) and its own SGD state (SGD is elementwise, so one optimiser over the stacked
tensors is ``K`` optimisers). Training ``K`` networks this way equals training them one by one up to
float rounding (``tests/condense/test_evaluate_batched.py`` checks this in float64 per architecture).

:func:`batch_problem` says why an architecture cannot be batched (e.g. an operation without a
vmap rule); callers then fall back to the sequential loop.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state, vmap

__all__ = ["NetworkStack", "batch_problem"]


class NetworkStack:
    """``K`` networks of identical structure as one stacked functional model."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        if not nets:
            raise ValueError("NetworkStack needs at least one network")
        self.nets = list(nets)
        self.params, self.buffers = stack_module_state(self.nets)
        self.base = copy.deepcopy(self.nets[0]).to("meta")

    def __len__(self) -> int:
        return len(self.nets)

    def parameters(self) -> list[torch.Tensor]:
        """The stacked parameters (leaf tensors of shape ``(K, ...)``), for one optimiser."""
        return list(self.params.values())

    def __call__(self, x: torch.Tensor, *, training: bool, shared_input: bool = False) -> torch.Tensor:
        """Outputs ``(K, B, ...)`` for inputs ``(K, B, ...)`` (``shared_input``: one ``(B, ...)`` batch for all)."""
        self.base.train(training)

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (xb,))

        return vmap(one, in_dims=(0, 0, None if shared_input else 0), randomness="error")(self.params, self.buffers, x)

    def snapshot(self, k: int) -> dict[str, torch.Tensor]:
        """A copy of network ``k``'s parameters and buffers (to freeze a network that diverged)."""
        return {name: t[k].detach().clone() for name, t in {**self.params, **self.buffers}.items()}

    def write_back(self, frozen: dict[int, dict[str, torch.Tensor]] | None = None) -> list[nn.Module]:
        """Copy every network's slice (or its ``frozen`` snapshot) into the original modules; return them."""
        frozen = frozen or {}
        with torch.no_grad():
            for k, net in enumerate(self.nets):
                state = frozen.get(k) or {name: t[k] for name, t in {**self.params, **self.buffers}.items()}
                for name, t in list(net.named_parameters()) + list(net.named_buffers()):
                    t.copy_(state[name])
        return self.nets


def batch_problem(net: nn.Module, example: torch.Tensor) -> str | None:
    """``None`` if two copies of ``net`` run forward and backward under :class:`NetworkStack` on
    ``example`` (one small input batch); otherwise the reason, in one line."""
    probe = [copy.deepcopy(net) for _ in range(2)]
    try:
        stack = NetworkStack(probe)
        out = stack(torch.stack([example, example]), training=True)
        out.float().sum().backward()
        with torch.inference_mode():
            stack(example, training=False, shared_input=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: train this architecture sequentially
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
    return None
