"""Training on distilled / real sets, baselines at a byte budget, and the end-to-end claim."""
from __future__ import annotations

import math

import pytest
import torch

from condense.utils import UserError
from graphs.data.graphsets import graph_nbytes, graphs_nbytes
from graphs.data.motifs import make_motif_dataset
from graphs.mirage.baselines import class_counts, graph_descriptors, herding_subset, random_subset, select_within_budget
from graphs.mirage.distill import MirageConfig, mirage_distill
from graphs.mirage.train import RestartSummary, TrainConfig, score, train_restarts


@pytest.fixture(scope="module")
def setup():
    ds = make_motif_dataset(400, seed=0)
    train = ds.subset("train")
    distilled = mirage_distill(train, 2, MirageConfig(hops=2, support=(0.5,)), progress=False)
    return ds, train, distilled


def _run(ds, graphs, **cfg):
    config = TrainConfig(**{**dict(model="gin", hidden=32, layers=2, epochs=30, restarts=2, top=2, dropout=0.0), **cfg})
    return train_restarts(graphs, ds.subset("valid"), ds.subset("test"), dims=(ds.in_dim, ds.edge_dim),
                          num_classes=ds.num_classes, metric=ds.metric, config=config, seed=0, progress=False)


@pytest.mark.slow
def test_mirage_beats_random_subset_of_equal_bytes_on_motifs(setup):
    ds, train, distilled = setup
    subset = [train[i] for i in random_subset(train, distilled.nbytes, seed=0)]
    assert graphs_nbytes(subset) <= distilled.nbytes
    mirage, random = _run(ds, distilled.graphs), _run(ds, subset)
    assert mirage.all_mean_std[0] > 0.8  # ROC-AUC, chance is 0.5
    assert mirage.all_mean_std[0] > random.all_mean_std[0] + 0.1


def test_same_seed_same_scores_and_support_sampling(setup):
    ds, _, distilled = setup
    a = _run(ds, distilled.graphs, epochs=3, restarts=1, top=1, sampling="support")
    b = _run(ds, distilled.graphs, epochs=3, restarts=1, top=1, sampling="support")
    assert a.best_val == b.best_val and a.final_test == b.final_test


def test_summary_top_k_and_all():
    s = RestartSummary("accuracy", best_val=[0.1, 0.9, 0.5], test_at_best_val=[0.2, 0.6, 0.4], final_test=[0.0, 0.5, 1.0], top=2, train_time_s=0)
    assert s.top_mean_std == pytest.approx((0.5, 0.1))
    assert s.all_mean_std[0] == pytest.approx(0.4) and s.final_mean_std[0] == pytest.approx(0.5)


def test_score_metrics():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    y = torch.tensor([1, 0, 1, 0])  # class-1 probabilities rank 0.12 < 0.27 < 0.73 < 0.95
    assert score(logits, y, "accuracy") == pytest.approx(0.5)
    assert score(logits, y, "rocauc") == pytest.approx(0.5)
    assert score(logits, torch.tensor([0, 1, 1, 0]), "rocauc") == pytest.approx(1.0)


def test_baselines_respect_the_budget_and_classes(setup):
    _, train, _ = setup
    budget = 20 * graph_nbytes(train[0])
    for idx in (random_subset(train, budget, seed=1), herding_subset(train, budget)):
        chosen = [train[i] for i in idx]
        assert 0 < graphs_nbytes(chosen) <= budget
        assert {int(g.y) for g in chosen} == {0, 1}
    assert herding_subset(train, budget) == herding_subset(train, budget)
    assert random_subset(train, budget, seed=1) != random_subset(train, budget, seed=2)
    with pytest.raises(UserError):
        random_subset(train, 0)


def _imbalanced():
    """90 small class-0 graphs and 10 large class-1 graphs: class 1's share of a small budget is
    smaller than any class-1 graph, which used to drop class 1 from the 'equal bytes' sets."""
    from tests.graphs._generated import size_graph

    gen = torch.Generator().manual_seed(0)
    return [size_graph(int(torch.randint(4, 8, (1,), generator=gen)), 0, gen) for _ in range(90)] + \
        [size_graph(int(torch.randint(30, 40, (1,), generator=gen)), 1, gen) for _ in range(10)]


def test_equal_bytes_sets_keep_every_class_and_refuse_impossible_budgets():
    graphs = _imbalanced()
    big = min(graph_nbytes(g) for g in graphs if int(g.y) == 1)
    small = min(graph_nbytes(g) for g in graphs if int(g.y) == 0)
    budget = big + 6 * small  # class 1's proportional share (10 %) is far below one class-1 graph
    assert budget * 10 / 100 < big
    for idx in (random_subset(graphs, budget, seed=0), herding_subset(graphs, budget)):
        counts = class_counts(graphs, idx)
        assert counts.get(1, 0) >= 1 and counts.get(0, 0) >= 1
        assert graphs_nbytes([graphs[i] for i in idx]) <= budget
    with pytest.raises(UserError, match="one graph per class"):
        herding_subset(graphs, big + small - 1)
    assert class_counts(graphs) == {0: 90, 1: 10}


class _BruteHerding:
    """Reference herding step: for every fitting candidate, the distance of the mean of the picked
    set plus the candidate to the class mean, one candidate at a time."""

    def __init__(self, sizes, feats):
        self.sizes, self.feats, self.picked = sizes.tolist(), feats.double(), []

    def pick(self, limit):
        mu = self.feats.mean(0)
        best, best_d = None, math.inf
        for j in range(len(self.sizes)):
            if j in self.picked or self.sizes[j] > limit:
                continue
            d = float(((mu - torch.stack([self.feats[i] for i in self.picked + [j]]).mean(0)) ** 2).sum())
            if d < best_d:
                best, best_d = j, d
        if best is not None:
            self.picked.append(best)
        return best


def test_vectorised_herding_equals_brute_force_reference():
    graphs = _imbalanced()[:60] + _imbalanced()[90:]
    feats = graph_descriptors(graphs)
    budget = 0.4 * graphs_nbytes(graphs)
    reference = select_within_budget(graphs, budget, lambda idx, sizes: _BruteHerding(sizes, feats[idx]))
    assert herding_subset(graphs, budget) == reference
    assert len(reference) > 10


def test_descriptors_equal_per_graph_histograms(setup):
    from torch_geometric.utils import degree

    from graphs.mirage.labels import graph_labels

    _, train, _ = setup
    graphs = train[:25]
    nodes, edges = graph_labels(graphs)
    n_lab = int(torch.cat(nodes).max()) + 1
    rows = []
    for g, nl in zip(graphs, nodes):
        deg = degree(g.edge_index[1], g.num_nodes).long().clamp(max=6)
        rows.append(torch.cat([torch.bincount(nl, minlength=n_lab) / g.num_nodes, torch.bincount(deg, minlength=7) / g.num_nodes,
                               torch.log1p(torch.tensor([float(g.num_nodes)]))]).float())
    assert edges[0] is None
    torch.testing.assert_close(graph_descriptors(graphs), torch.stack(rows))


def test_train_config_validation(setup):
    ds, _, distilled = setup
    for bad in (dict(sampling="uniform"), dict(epochs=0), dict(lr=-1.0)):
        with pytest.raises(UserError):
            _run(ds, distilled.graphs, **bad)
    with pytest.raises(UserError):
        train_restarts([], ds.subset("valid"), ds.subset("test"), dims=(ds.in_dim, None), num_classes=2,
                       metric="rocauc", config=TrainConfig(), progress=False)


def test_selection_never_returns_the_untrained_network():
    """Evaluation labels are flipped, so training only hurts validation: the old 'evaluate before
    every epoch' loop would select epoch 0; selection must still pick an epoch >= 1."""
    from tests.graphs._generated import size_dataset

    ds = size_dataset(120, seed=0, flip_eval=True)
    config = TrainConfig(model="gin", hidden=16, layers=2, epochs=6, restarts=2, top=1, dropout=0.0, lr=0.01)
    s = train_restarts(ds.subset("train"), ds.subset("valid"), ds.subset("test"), dims=(ds.in_dim, None), num_classes=2,
                       metric=ds.metric, config=config, seed=6, progress=False)  # seeds 6, 7: untrained val AUC 1.0
    for r, curve in enumerate(s.curves):
        assert curve["val"][0] > max(curve["val"][1:])  # the untrained network is the best on validation
        assert 1 <= s.best_epoch[r] <= config.epochs
        assert s.best_val[r] == max(curve["val"][1:])
        assert s.test_at_best_val[r] == curve["test"][s.best_epoch[r]]
        assert s.untrained_test[r] == curve["test"][0] and s.final_test[r] == curve["test"][-1]
        assert len(curve["val"]) == config.epochs + 1


def test_scoring_test_only_where_reported_changes_no_reported_number(setup):
    """``test_curves=False`` (the experiment tables) skips test evaluations that no number uses."""
    ds, _, distilled = setup
    config = TrainConfig(model="gin", hidden=16, layers=2, epochs=8, restarts=2, top=1, dropout=0.3)
    kw = dict(dims=(ds.in_dim, ds.edge_dim), num_classes=2, metric=ds.metric, config=config, seed=0, progress=False)
    full = train_restarts(distilled.graphs, ds.subset("valid"), ds.subset("test"), **kw)
    lean = train_restarts(distilled.graphs, ds.subset("valid"), ds.subset("test"), test_curves=False, **kw)
    for key in ("best_val", "test_at_best_val", "final_test", "best_epoch", "untrained_test", "spearman_size"):
        assert getattr(lean, key) == getattr(full, key), key
    skipped = [math.isnan(t) for c in lean.curves for t in c["test"]]
    assert any(skipped) and not all(skipped)


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    from graphs.mirage.train import spearman

    a = torch.tensor([1.0, 2.0, 2.0, 5.0, 3.0, 3.0, 0.5])
    b = torch.tensor([7.0, 1.0, 4.0, 4.0, 2.0, 9.0, 9.0])
    assert spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic)
    assert math.isnan(spearman(torch.ones(4), torch.arange(4.0)))


def test_roc_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    from graphs.mirage.train import roc_auc

    gen = torch.Generator().manual_seed(0)
    for n in (2, 7, 50, 301):
        y = torch.randint(0, 2, (n,), generator=gen)
        y[0], y[-1] = 0, 1
        s = torch.randint(0, 5, (n,), generator=gen).float() / 4  # many ties
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y.numpy(), s.numpy()), abs=1e-12)
        s = torch.rand(n, generator=gen)
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y.numpy(), s.numpy()), abs=1e-12)
    assert roc_auc(torch.tensor([0, 0, 1]), torch.tensor([0.1, 0.9, 0.2])) == 0.5
    assert math.isnan(roc_auc(torch.ones(3, dtype=torch.long), torch.rand(3)))
