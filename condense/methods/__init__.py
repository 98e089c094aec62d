"""Image distillation methods. Each module registers ``(config dataclass, distill function)``.

``distill(dataset, ipc, config, *, device, seed, progress, checkpoint) -> SyntheticSet``.
"""
from .base import METHODS, MethodSpec, get_method, init_synthetic, register_method, run_loop  # noqa: F401
from . import coreset, dm, mtt  # noqa: F401  (registration side effects)
from . import datadam, gradient_matching  # noqa: F401

__all__ = ["METHODS", "MethodSpec", "get_method", "init_synthetic", "register_method", "run_loop"]
