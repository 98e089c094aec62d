"""Greedy subset selection on feature vectors, shared by the image coresets and graph baselines.

* Herding (Welling, ICML 2009): add the row whose inclusion brings the running mean of the selected
  rows closest to the mean of all rows.
* K-center greedy (Sener & Savarese, ICLR 2018): start from the row nearest the mean, then add the
  row farthest from its nearest selected centre.
"""
from __future__ import annotations

import torch

__all__ = ["herding", "kcenter_greedy"]


def herding(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``k`` rows chosen by herding: each step minimises ``||mu - mean(selected + x)||``."""
    mu = features.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(len(features), dtype=torch.bool)
    for t in range(1, k + 1):
        dist = ((mu - (running + features) / t) ** 2).sum(1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        running += features[i]
    return torch.tensor(chosen, dtype=torch.long)


def kcenter_greedy(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``k`` rows by k-center greedy, seeded with the row closest to the mean."""
    first = int(((features - features.mean(0)) ** 2).sum(1).argmin())
    chosen = [first]
    min_dist = ((features - features[first]) ** 2).sum(1)
    for _ in range(1, k):
        i = int(min_dist.argmax())
        chosen.append(i)
        min_dist = torch.minimum(min_dist, ((features - features[i]) ** 2).sum(1))
    return torch.tensor(chosen, dtype=torch.long)
