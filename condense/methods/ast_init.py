"""AST's representative initialisation (Shen et al. 2023, Sec. 3.2, official ``get_repre_images``).

Per class, the real images are embedded by a trained expert (its logits), k-means clusters the
logits, and the real image nearest to each cluster centre initialises one synthetic image.

``clusters="ipc"`` (default, the paper's description) uses ``k = ipc`` clusters and one image per
centre, so it works at every IPC. ``clusters="official"`` reproduces the official code: 10 clusters
and the ``ipc // 10`` images nearest to each centre - which selects nothing below IPC 10, hence it
is only accepted for IPC divisible by 10.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call

from ..data import ClassSampler, ImageDataset
from ..utils import UserError

__all__ = ["representative_indices"]

OFFICIAL_CLUSTERS = 10


def representative_indices(
    dataset: ImageDataset,
    ipc: int,
    net: nn.Module,
    params: dict[str, torch.Tensor],
    *,
    clusters: str = "ipc",
    seed: int = 0,
    device: torch.device = torch.device("cpu"),
    batch_size: int = 1024,
) -> torch.Tensor:
    """Indices into ``dataset.train_x`` (class-major, ``ipc`` per class) of the representative images."""
    if clusters not in ("ipc", "official"):
        raise UserError(f"representative clusters must be 'ipc' or 'official', got {clusters!r}")
    if clusters == "official" and ipc % OFFICIAL_CLUSTERS:
        raise UserError(f"the official representative initialisation needs IPC divisible by 10 (got {ipc}); use clusters='ipc'")
    k, per_centre = (ipc, 1) if clusters == "ipc" else (OFFICIAL_CLUSTERS, ipc // OFFICIAL_CLUSTERS)
    sampler = ClassSampler(dataset.train_y, dataset.num_classes)
    params = {n: p.to(device) for n, p in params.items()}
    from sklearn.cluster import KMeans  # here, not at the top: scikit-learn's import costs ~3 s of every CLI start

    chosen = []
    for c in range(dataset.num_classes):
        idx = sampler.indices(c)
        if len(idx) < ipc:
            raise UserError(f"class {c} has {len(idx)} images, fewer than ipc={ipc}")
        with torch.no_grad():
            logits = torch.cat([functional_call(net, params, (dataset.train_x[idx[i : i + batch_size]].to(device),))
                                for i in range(0, len(idx), batch_size)]).cpu().double().numpy()  # fmt: skip
        centres = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(logits).cluster_centers_
        taken: list[int] = []
        for centre in centres:
            order = np.argsort(((logits - centre) ** 2).sum(1), kind="stable")
            used = set(taken)
            taken.extend([int(j) for j in order if int(j) not in used][:per_centre])  # distinct images per class
        chosen.append(idx[torch.tensor(taken)])
    return torch.cat(chosen)
