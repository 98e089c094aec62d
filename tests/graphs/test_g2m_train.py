"""Teacher/student training: no leakage of held-out nodes, determinism, distillation beats the MLP."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from condense.utils import UserError
from graphs.g2m.pipeline import load_task, make_task_split, run
from graphs.g2m.presets import ModelConfig, Preset, get_preset
from graphs.g2m.student import DistillationObjective, distill
from graphs.g2m.train import fit
from graphs.models.node import build_node_model

SMALL = dict(num_nodes=400, num_features=40, avg_degree=8.0, lam=2.0, mu=6.0)
FAST = Preset(ModelConfig(2, 32, 0.5, max_epochs=150, patience=30), ModelConfig(2, 32, 0.5, max_epochs=150, patience=30), lamb=0.2, tau=1.5, source="test")


@pytest.fixture(scope="module")
def task():
    return load_task("csbm", csbm_kwargs=SMALL)


@pytest.fixture(scope="module")
def transductive(task):
    data, labelled = task
    return run(data, make_task_split(data, labelled, "tran", seed=0), "gcn", FAST, seed=0)


def test_distillation_beats_vanilla_mlp_end_to_end(transductive):
    scores = {m: r.scores["tran"] for m, (_, r) in transductive.students.items()}
    assert transductive.teacher.scores["tran"] > scores["mlp"] + 0.15
    for method in ("glnn", "lfd", "ff-g2m"):
        assert scores[method] > scores["mlp"] + 0.15, scores


def test_same_seed_same_result(task, transductive):
    data, labelled = task
    again = run(data, make_task_split(data, labelled, "tran", seed=0), "gcn", FAST, ("ff-g2m",), seed=0)
    assert torch.equal(again.teacher.logits, transductive.teacher.logits)
    assert torch.equal(again.students["ff-g2m"][1].logits, transductive.students["ff-g2m"][1].logits)


def test_inductive_training_never_sees_held_out_nodes(task):
    data, labelled = task
    split = make_task_split(data, labelled, "ind", seed=0)
    assert len(split.test_ind) > 0
    tampered = data.clone()
    tampered.x = data.x.clone()
    tampered.x[split.test_ind] = torch.randn(len(split.test_ind), data.num_features) * 100
    held = split.test_ind
    # Rewire every held-out node to random observed nodes: only edges touching held-out nodes change.
    touching = torch.isin(data.edge_index, held).any(0)
    extra = torch.stack([held.repeat(3), split.observed[torch.randint(len(split.observed), (3 * len(held),))]])
    tampered.edge_index = torch.cat([data.edge_index[:, ~touching], extra, extra.flip(0)], 1)
    preset = replace(FAST, teacher=replace(FAST.teacher, max_epochs=40), student=replace(FAST.student, max_epochs=40))
    a = run(data, split, "sage", preset, ("ff-g2m", "glnn"), seed=1)
    b = run(tampered, split, "sage", preset, ("ff-g2m", "glnn"), seed=1)
    obs = split.observed
    assert torch.equal(a.teacher.logits[obs], b.teacher.logits[obs])
    for method in ("ff-g2m", "glnn"):
        sa, sb = a.students[method][0].state_dict(), b.students[method][0].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert a.students[method][1].scores["val"] == b.students[method][1].scores["val"]
    assert set(a.teacher.scores) == {"val", "tran", "ind", "prod"}
    r = split.rate
    s = a.students["ff-g2m"][1].scores
    assert s["prod"] == pytest.approx((1 - r) * s["tran"] + r * s["ind"])


def test_student_ignores_teacher_rows_of_held_out_nodes(task):
    data, labelled = task
    split = make_task_split(data, labelled, "ind", seed=0)
    teacher = torch.randn(data.num_nodes, 2)
    poisoned = teacher.clone()
    poisoned[split.test_ind] = 1e6
    results = []
    for t in (teacher, poisoned):
        torch.manual_seed(0)
        student = build_node_model("mlp", data.num_features, 2, hidden=16)
        results.append(distill(student, data, split, t, method="ff-g2m", lamb=0.2, tau=1.5, max_epochs=5).logits)
    assert torch.equal(*results)


def test_objective_lambda_one_is_ce_and_method_validation(task):
    data, labelled = task
    train = labelled[0]
    s, t = torch.randn(data.num_nodes, 2), torch.randn(data.num_nodes, 2)

    def objective(method, **kw):
        return DistillationObjective(method, t, data.y, train, data.edge_index, **kw)(s)

    ce = objective("mlp", lamb=0.3)
    for method in ("glnn", "lfd", "hfd", "ff-g2m"):
        assert objective(method, lamb=1.0) == pytest.approx(ce.item())
    full = objective("ff-g2m", lamb=0.0, tau=1.5)
    parts = sum(objective(m, lamb=0.0, tau=1.5) for m in ("lfd", "hfd"))
    assert full.item() == pytest.approx(parts.item(), rel=1e-6)
    with pytest.raises(UserError):
        DistillationObjective("kd", t, data.y, train, data.edge_index, lamb=0.5)
    with pytest.raises(UserError):
        distill(build_node_model("mlp", data.num_features, 2), data, make_task_split(data, labelled, "tran", seed=0), t, method="kd")
    with pytest.raises(UserError):
        distill(build_node_model("mlp", data.num_features, 2), data, make_task_split(data, labelled, "tran", seed=0), t[:5])


def test_fit_restores_best_validation_weights_and_stops_early():
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    vals = iter([0.1, 0.5, 0.3, 0.2, 0.9, 0.0, 0.0, 0.0, 0.0])
    snapshots = []

    def val_fn(_):
        snapshots.append(model.weight.detach().clone())
        return next(vals)

    result = fit(model, lambda: torch.ones(1, 1), lambda h: model(h).sum(), val_fn, lr=0.1, weight_decay=0.0, max_epochs=9, patience=3)
    assert (result.best_epoch, result.epochs) == (5, 8)
    assert torch.equal(model.weight, snapshots[4])


def test_presets_match_official_configs():
    cora = get_preset("cora", "gcn")
    assert (cora.student.num_layers, cora.student.hidden, cora.tau, cora.lamb) == (3, 512, 1.5, 0.4)
    assert (cora.student.dropout, cora.teacher.dropout) == (0.6, 0.5)  # official code: dropout_t -> MLP
    citeseer, pubmed = get_preset("citeseer", "gcn"), get_preset("pubmed", "gcn")
    assert (citeseer.student.num_layers, citeseer.student.hidden, citeseer.tau, citeseer.lamb) == (2, 256, 1.5, 0.1)
    assert (pubmed.student.num_layers, pubmed.student.hidden, pubmed.tau, pubmed.lamb) == (2, 1024, 1.5, 0.0)
    assert get_preset("cora", "gat").teacher.num_heads == 4
    glnn = get_preset("cora", "sage", "glnn")
    assert (glnn.lamb, glnn.student.hidden, glnn.student.weight_decay, glnn.student.max_epochs) == (0.0, 128, 0.005, 200)
    for bad in (("reddit", "gcn"), ("cora", "gin"), ("cora", "gcn", "cpf")):
        with pytest.raises(UserError):
            get_preset(*bad)


def test_inductive_observed_graph_follows_the_preset(monkeypatch, tmp_path):
    """FF-G2M presets observe train + val + test nodes only (its ``graph_split``); GLNN all nodes; --observed overrides."""
    import graphs.g2m.__main__ as cli

    assert get_preset("cora", "gcn").observed == "split" and get_preset("cora", "gcn", "glnn").observed == "all"
    seen = []

    def stop(*_, observed, **__):
        seen.append(observed)
        raise UserError("stop")

    monkeypatch.setattr(cli, "make_task_split", stop)
    monkeypatch.setattr(cli, "get_preset", lambda *a: replace(get_preset("csbm", "gcn"), observed="split"))
    for extra in ([], ["--observed", "all"]):
        assert cli.main(["--setting", "ind", "--no-progress", "--out", str(tmp_path / "s.pt"), *extra]) == 2
    assert seen == ["split", "all"]


def test_glnn_soft_labels_cover_every_observed_node(task):
    """GLNN (paper eq. 2; code ``idx_t`` / ``obs_idx_t``, all nodes on its CPF splits): KD on every observed
    node, including nodes in no split; ``observed="split"`` (the code's ``idx_obs``) drops those from the graph."""
    data, labelled = task
    outside = torch.ones(data.num_nodes, dtype=torch.bool)
    outside[torch.cat(labelled)] = False
    assert outside.sum() > 0
    teacher = torch.randn(data.num_nodes, 2, generator=torch.Generator().manual_seed(0))
    flipped = teacher.clone()
    flipped[outside] = flipped[outside].flip(1)  # another soft label on the nodes in no split only

    def student_logits(t, setting, observed="all"):
        torch.manual_seed(0)
        student = build_node_model("mlp", data.num_features, 2, hidden=16)
        split = make_task_split(data, labelled, setting, seed=0, observed=observed)
        return distill(student, data, split, t, method="glnn", lamb=0.0, max_epochs=3).logits

    assert not torch.equal(student_logits(teacher, "tran"), student_logits(flipped, "tran"))
    assert not torch.equal(student_logits(teacher, "ind"), student_logits(flipped, "ind"))
    assert torch.equal(student_logits(teacher, "ind", "split"), student_logits(flipped, "ind", "split"))
    assert all(get_preset(d, t, "glnn").observed == "all" for d in ("cora", "citeseer", "pubmed") for t in ("gcn", "sage", "gat"))
