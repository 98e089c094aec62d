"""Mirage: model-agnostic graph distillation for graph classification (Gupta et al., ICLR 2024).

Pipeline (paper Section 3, Algorithm 1): discretise features (:mod:`.labels`), decompose every
training graph into its nodes' L-hop computation trees and code them canonically
(:mod:`.trees` reference path, :mod:`.wl` fast path), mine per-class frequent tree sets with
FP-Growth (:mod:`.mining`), turn each frequent set into a training graph (:mod:`.distill`),
and train any GNN on it with root pooling (:mod:`.train`).
"""

__all__ = ["load_set"]


def __getattr__(name: str):
    """``graphs.mirage.load_set(path)``: the documented way to load a saved distilled set (imported lazily, so
    ``python -m graphs.mirage`` sets its thread policy before torch is imported)."""
    if name == "load_set":
        from graphs.mirage.distill import load_set

        return load_set
    raise AttributeError(f"module 'graphs.mirage' has no attribute {name!r}")
