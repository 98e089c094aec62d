"""Memory before work: estimate what a run's size flags will allocate and refuse, with the figure and
the machine's memory, what cannot fit - instead of a ``MemoryError`` traceback or a silent kill by
the kernel's OOM killer hours later.

The estimates are deliberate *lower bounds* (the tensors a run cannot avoid holding: the data, the
synthetic set with its gradient and optimiser state, one batch of activations of the network the
size flags ask for), so a refusal is always right and a run that passes may still need more.
:func:`available_memory` is what the kernel would hand out now: ``MemAvailable`` of
``/proc/meminfo``, capped by a cgroup (container) limit, falling back to physical memory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .utils import UserError

__all__ = ["available_memory", "physical_memory", "check_memory", "format_bytes", "image_batch_bytes", "convnet_bytes", "distill_bytes", "generator_bytes", "graph_bytes"]

FLOAT = 4  # bytes per float32


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup v2 (``memory.max``) or v1 (``memory.limit_in_bytes``) limit, if any."""
    for limit, usage in (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            text = Path("/sys/fs/cgroup", limit).read_text().strip()
            if text == "max" or int(text) >= 1 << 60:
                continue
            return max(0, int(text) - int(Path("/sys/fs/cgroup", usage).read_text()))
        except (OSError, ValueError):
            continue
    return None


def physical_memory() -> int:
    """Physical memory in bytes (``1 << 62`` where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def available_memory() -> int:
    """Bytes this process can allocate now: ``MemAvailable``, capped by the cgroup limit; else physical memory."""
    figures = [v for v in (_meminfo("MemAvailable"), _cgroup_room()) if v is not None]
    return min(figures) if figures else physical_memory()


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1024:.1f} KiB"


def check_memory(need: int, what: str, hint: str = "") -> None:
    """Refuse (one :class:`UserError` line) when ``need`` bytes exceed :func:`available_memory`.

    ``what`` names the allocation and the flags behind it; ``hint`` says which flags to lower.
    """
    avail = available_memory()
    if need > avail:
        raise UserError(f"{what} needs at least {format_bytes(need)}, but this machine has {format_bytes(avail)} available "
                        f"({format_bytes(physical_memory())} installed){'; ' + hint if hint else ''}")  # fmt: skip


def image_batch_bytes(n: int, channels: int, height: int, width: int) -> int:
    """``n`` float32 images."""
    return int(n) * int(channels) * int(height) * int(width) * FLOAT


def convnet_bytes(batch: int, channels: int, height: int, width: int, net_width: int, depth: int = 3) -> int:
    """A ConvNet-family forward + backward on ``batch`` images: weights (with gradient and optimiser
    state, x3) and the activations autograd keeps (conv output, norm, activation: x3 per block at
    full and then halved resolution; pooling halves each side per block)."""
    weights = 3 * FLOAT * (channels * net_width * 9 + (depth - 1) * net_width * net_width * 9)
    acts, h, w = 0, int(height), int(width)
    for _ in range(depth):
        acts += 3 * FLOAT * int(batch) * int(net_width) * h * w
        h, w = max(1, h // 2), max(1, w // 2)
    return weights + acts


def distill_bytes(num_classes: int, channels: int, image_size: tuple[int, int], ipc: int, config: Any) -> int:
    """Lower bound for one image-distillation run. Methods that learn pixels with a ConvNet (their
    config has a ``width``): the synthetic set (pixels, gradient, optimiser state, checkpoint copy:
    x4) plus one ConvNet pass over the larger of the method's batches (``batch_real`` real images of
    one class; ``batch_syn`` or, as the matching losses sum over every class before one backward,
    the whole synthetic set). Selection methods: the selected images. Training-set storage is
    checked when the data is loaded."""
    h, w = image_size
    n_syn = int(num_classes) * int(ipc)
    if not hasattr(config, "width"):
        return image_batch_bytes(n_syn, channels, h, w)
    syn = 4 * image_batch_bytes(n_syn, channels, h, w)
    if not str(getattr(config, "model", "convnet")).lower().startswith("convnet"):
        return syn  # other architectures: no activation model here, the set alone
    batch = max(int(getattr(config, "batch_real", 0) or 0), int(getattr(config, "batch_syn", 0) or 0) or n_syn)
    depth = int(getattr(config, "depth", 3) or 3)
    return syn + convnet_bytes(batch, channels, h, w, int(config.width), depth)


def generator_bytes(batch: int, nz: int, ngf: int, channels: int, height: int, width: int) -> int:
    """The DCGAN-style generator of the data-free methods (``synth.generators``) on ``batch`` latents:
    weights (Linear ``nz -> 2 ngf x H/4 x W/4`` and three 3x3 convs; with gradient and Adam state, x4)
    and the activations autograd keeps (x3 per block at H/4, H/2 and H)."""
    h4, w4 = max(1, height // 4), max(1, width // 4)
    weights = 4 * FLOAT * (nz * 2 * ngf * h4 * w4 + 9 * (4 * ngf * ngf + 2 * ngf * ngf + ngf * channels))
    acts = 3 * FLOAT * batch * (2 * ngf * h4 * w4 + 2 * ngf * 4 * h4 * w4 + ngf * height * width + channels * height * width)
    return weights + acts


def graph_bytes(nodes: int, features: int, degree: float, hidden: int, layers: int) -> int:
    """A full-graph node-classification run: features (and one normalised copy), ``edge_index`` in
    both directions (int64) and, per layer, the ``nodes x hidden`` activations autograd keeps (x3)."""
    edges = int(nodes * max(degree, 0.0))
    return 2 * FLOAT * nodes * features + 2 * 2 * 8 * edges + 3 * FLOAT * nodes * max(hidden, features) * max(layers, 1)
