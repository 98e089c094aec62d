"""The batched engine (condense.batched) equals the sequential loop; protocol-true test passes; resume state."""
import pytest
import torch
import torch.nn as nn

import condense.evaluate as ev
from condense.augment import DIGITS_STRATEGY, DSA
from condense.data import load_dataset
from condense.evaluate import evaluate_images, finished_networks, fit, fit_batched, train_and_test
from condense.nets import NETWORKS, get_network
from condense.utils import UserError, make_generator


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _nets(name: str, k: int, **kw) -> list[nn.Module]:
    out = []
    for i in range(k):
        torch.manual_seed(i)
        out.append(get_network(name, 1, 10, 8, **kw).double())
    return out


def _state(net: nn.Module) -> list[torch.Tensor]:
    return [t for t in list(net.parameters()) + list(net.buffers()) if t.is_floating_point()]


@pytest.mark.parametrize("name, kw", [("convnet", {"width": 8}), ("convnet_bn", {"width": 8}), ("mlp", {}), ("lenet", {}),
                                      ("lenet5", {"norm": "batchnorm"})])  # fmt: skip
def test_batched_training_equals_sequential_in_float64(digits, name, kw):
    """Per family (instance norm, per-network BatchNorm statistics, MLP, LeNet): each network's own seed,
    initialisation, batch order and DSA draws; two batches per pass, the lr decay inside the run."""
    x, y = digits.train_x[:24].double(), digits.train_y[:24]
    common = dict(epochs=3, batch_size=16, augment=DSA(DIGITS_STRATEGY))
    seq = _nets(name, 3, **kw)
    for i, net in enumerate(seq):
        fit(net, x, y, generator=make_generator(i), **common)
    bat = _nets(name, 3, **kw)
    fit_batched(bat, x, y, generators=[make_generator(i) for i in range(3)], **common)
    for a, b in zip(seq, bat):
        for ta, tb in zip(_state(a), _state(b)):
            assert torch.allclose(ta, tb, rtol=0, atol=1e-12)
    moved = _nets(name, 1, **kw)[0]
    assert any(not torch.equal(t0, t1) for t0, t1 in zip(_state(moved), _state(bat[0])))  # the networks did train


def test_batched_soft_labels_and_diverged_network_match_sequential(digits):
    x = digits.train_x[:20].double()
    soft = torch.softmax(torch.randn(20, 10, generator=make_generator(0), dtype=torch.float64), 1)
    for lr in (0.01, 1e30):  # 1e30: the loss turns non-finite and fit() stops that network after the pass
        seq = _nets("mlp", 2)
        for i, net in enumerate(seq):
            fit(net, x, soft, epochs=3, lr=lr, generator=make_generator(i))
        bat = _nets("mlp", 2)
        fit_batched(bat, x, soft, epochs=3, lr=lr, generators=[make_generator(0), make_generator(1)])
        for a, b in zip(seq, bat):
            for ta, tb in zip(_state(a), _state(b)):
                assert torch.allclose(ta, tb, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert not all(torch.isfinite(t).all() for net in seq for t in _state(net))  # the 1e30 run did diverge


def test_evaluate_images_batched_equals_sequential_and_says_so(digits):
    x, y = digits.train_x[:60], digits.train_y[:60]
    kw = dict(models=("convnet",), model_kwargs={"convnet": {"width": 8}}, num_evals=3, epochs=4, dsa=True, test_every=2, progress=False)
    seq = evaluate_images(x, y, digits, batched=False, **kw)["convnet"]
    bat = evaluate_images(x, y, digits, batched=True, **kw)["convnet"]
    assert (seq.engine, bat.engine) == ("sequential", "batched")
    tol = 2 / len(digits.test_y)  # float32 rounding may flip a test image or two
    assert all(abs(a - b) <= tol for a, b in zip(seq.accs + seq.max_accs, bat.accs + bat.max_accs))


class _DataDependent(nn.Module):
    """A network vmap cannot batch: Python control flow on a tensor's value."""

    def __init__(self, channels: int, num_classes: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.fc = nn.Linear(channels * image_size[0] * image_size[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        return out if float(out.detach().sum()) < 1e9 else -out


def test_unbatchable_architecture_falls_back_with_one_line(monkeypatch, capsys, digits):
    monkeypatch.setitem(NETWORKS, "data_dependent", _DataDependent)
    kw = dict(models=("data_dependent",), num_evals=2, epochs=2, progress=False)
    res = evaluate_images(digits.train_x[:20], digits.train_y[:20], digits, batched=True, **kw)["data_dependent"]
    err = capsys.readouterr().err
    assert res.engine == "sequential" and err.count("cannot be batched") == 1 and "one by one" in err
    assert res.accs == evaluate_images(digits.train_x[:20], digits.train_y[:20], digits, batched=False, **kw)["data_dependent"].accs
    bf16 = evaluate_images(digits.train_x[:20], digits.train_y[:20], digits, models=("mlp",), num_evals=2, epochs=1, batched=True,
                           precision="bf16", progress=False)["mlp"]  # fmt: skip
    assert bf16.engine == "sequential" and "autocast" in capsys.readouterr().err and 0 <= bf16.mean <= 1
    with pytest.raises(UserError, match="precision"):
        evaluate_images(digits.train_x[:20], digits.train_y[:20], digits, precision="fp8", epochs=1, progress=False)


def test_protocol_true_default_and_intermediate_tests_leave_final_accuracy_unchanged(monkeypatch, digits):
    """dc tests once, after the last pass; test_every=K adds tests that draw no random numbers and leave
    BatchNorm's running statistics alone, so the final network (and accuracy) is the same."""
    calls = []
    real = ev.accuracy
    monkeypatch.setattr(ev, "accuracy", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    x, y = digits.train_x[:40], digits.train_y[:40]
    runs = {}
    for every in (None, 1):
        torch.manual_seed(0)
        net = get_network("convnet_bn", 1, 10, 8, width=8)
        calls.clear()
        res = train_and_test(net, x, y, digits.test_x, digits.test_y, epochs=4, batch_size=16, test_every=every,
                             augment=DSA(DIGITS_STRATEGY), generator=make_generator(0))  # fmt: skip
        runs[every] = (res, [t.clone() for t in _state(net)], len(calls))
    (plain, w_plain, n_plain), (tested, w_tested, n_tested) = runs[None], runs[1]
    assert plain.history == [(4, plain.final_acc)] and n_plain == 1
    assert [ep for ep, _ in tested.history] == [0, 1, 2, 3, 4] and n_tested == 5
    assert tested.final_acc == plain.final_acc and all(torch.equal(a, b) for a, b in zip(w_plain, w_tested))
    summary = evaluate_images(x, y, digits, models=("mlp",), num_evals=1, epochs=2, progress=False)["mlp"]
    assert summary.test_every == 0 and summary.max_accs == summary.accs
    labelled = evaluate_images(x, y, digits, models=("mlp",), num_evals=1, epochs=2, test_every=1, progress=False)["mlp"]
    assert labelled.test_every == 1 and "not part of the protocol" in labelled.max_label and labelled.accs == summary.accs


def test_state_file_resumes_finished_networks(monkeypatch, capsys, tmp_path, digits):
    x, y = digits.train_x[:30], digits.train_y[:30]
    kw = dict(models=("mlp",), num_evals=3, epochs=2, progress=False, seed=5)
    fresh = evaluate_images(x, y, digits, **kw)["mlp"]
    state = tmp_path / "eval.pt"
    evaluate_images(x, y, digits, eval_ids=[0, 2], state=state, **kw)  # as if interrupted after two networks
    assert finished_networks(state) == 2
    trained = []
    real = ev.train_and_test
    monkeypatch.setattr(ev, "train_and_test", lambda *a, **k: trained.append(1) or real(*a, **k))
    resumed = evaluate_images(x, y, digits, state=state, **kw)["mlp"]
    assert resumed.accs == fresh.accs and len(trained) == 1 and "2 finished network(s)" in capsys.readouterr().err
    evaluate_images(x, y, digits, state=state, **{**kw, "epochs": 3})  # other settings: not resumed
    assert "other settings" in capsys.readouterr().err and len(trained) == 4
