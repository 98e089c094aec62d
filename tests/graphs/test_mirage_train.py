"""Training on distilled / real sets, baselines at a byte budget, and the end-to-end claim."""
from __future__ import annotations

import math

import pytest
import torch

from condense.utils import UserError
from graphs.data.graphsets import graph_nbytes, graphs_nbytes
from graphs.data.motifs import make_motif_dataset
from graphs.mirage.baselines import graph_descriptors, herding_subset, random_subset
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


def test_herding_first_pick_is_closest_to_the_class_mean(setup):
    _, train, _ = setup
    cls0 = [i for i, g in enumerate(train) if int(g.y) == 0]
    feats = graph_descriptors([train[i] for i in cls0])
    first = int(((feats - feats.mean(0)) ** 2).sum(1).argmin())
    budget = graph_nbytes(train[cls0[first]]) * len(train) / len(cls0)  # room for exactly one class-0 graph
    picked0 = [i for i in herding_subset(train, math.ceil(budget)) if int(train[i].y) == 0]
    assert picked0 == [cls0[first]]


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


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    from graphs.mirage.train import spearman

    a = torch.tensor([1.0, 2.0, 2.0, 5.0, 3.0, 3.0, 0.5])
    b = torch.tensor([7.0, 1.0, 4.0, 4.0, 2.0, 9.0, 9.0])
    assert spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic)
    assert math.isnan(spearman(torch.ones(4), torch.arange(4.0)))
