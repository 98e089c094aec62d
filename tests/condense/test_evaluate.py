import pytest
import torch

from condense.data import load_dataset
from condense.evaluate import evaluate_images, evaluate_synset, soft_cross_entropy, train_and_test
from condense.nets import get_network
from condense.synset import SyntheticSet
from condense.utils import UserError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_real_images_reach_expected_accuracy(digits):
    # 200 real digits (20/class), MLP, 100 epochs: a real set must land far above chance (10%)
    idx = torch.cat([torch.nonzero(digits.train_y == c)[:20, 0] for c in range(10)])
    res = evaluate_images(digits.train_x[idx], digits.train_y[idx], digits, models=("mlp",), num_evals=2, epochs=100, progress=False)
    s = res["mlp"]
    assert 0.70 < s.mean <= 1.0 and len(s.accs) == 2 and s.max_mean >= s.mean - 1e-9


def test_same_seed_same_result_and_eval_ids(digits):
    x, y = digits.train_x[:100], digits.train_y[:100]
    kw = dict(models=("mlp",), num_evals=2, epochs=5, progress=False, seed=3)
    a = evaluate_images(x, y, digits, **kw)["mlp"].accs
    b = evaluate_images(x, y, digits, **kw)["mlp"].accs
    part = evaluate_images(x, y, digits, eval_ids=[1], **kw)["mlp"].accs
    assert a == b and part == a[1:]


def test_soft_labels_train(digits):
    idx = torch.arange(200)
    soft = torch.nn.functional.one_hot(digits.train_y[idx], 10).float() * 0.9 + 0.01
    net = get_network("mlp", 1, 10, 8)
    res = train_and_test(net, digits.train_x[idx], soft, digits.test_x, digits.test_y, epochs=30, batch_size=32, generator=torch.Generator().manual_seed(0))
    assert res.final_acc > 0.7
    hard = torch.tensor([1, 0])
    logits = torch.randn(2, 3)
    assert torch.allclose(soft_cross_entropy(logits, hard), soft_cross_entropy(logits, torch.eye(3)[hard]))


def test_evaluate_synset_uses_learned_lr_and_checks_shape(digits):
    s = SyntheticSet(digits.train_x[:20], digits.train_y[:20], lr=1e-9, meta={"dataset": digits.describe()})
    res = evaluate_synset(s, digits, models=("mlp",), num_evals=1, epochs=3, progress=False)
    assert res["mlp"].mean < 0.3  # lr 1e-9 => the network does not move from chance
    other = load_dataset("digits", resize=16)
    with pytest.raises(UserError, match="made for digits"):
        evaluate_synset(s, other, num_evals=1, epochs=1, progress=False)
    with pytest.raises(UserError, match="epochs"):
        evaluate_images(digits.train_x[:5], digits.train_y[:5], digits, epochs=0, progress=False)


# ----------------------------------------------------------------------------- the three protocols
import condense.evaluate as ev  # noqa: E402
from condense.augment import DIGITS_STRATEGY  # noqa: E402
from condense.evaluate import PROTOCOLS  # noqa: E402


def _spy(monkeypatch):
    """Record every SGD the evaluator creates and every training batch size."""
    made = []
    real_sgd = torch.optim.SGD

    class SpySGD(real_sgd):
        def __init__(self, params, lr, momentum, weight_decay):
            made.append((lr, momentum, weight_decay))
            super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    monkeypatch.setattr(ev.torch.optim, "SGD", SpySGD)
    return made


def _fit_and_record(monkeypatch, protocol, epochs, n, lr=None):
    made = _spy(monkeypatch)
    net = get_network("mlp", 1, 10, 8)
    batches, passes = [], []
    net.register_forward_pre_hook(lambda m, inp: batches.append(len(inp[0])) if m.training else None)
    ev.fit(net, torch.randn(n, 1, 8, 8), torch.arange(n) % 10, epochs=epochs, lr=lr, protocol=protocol,
           generator=torch.Generator().manual_seed(0), on_epoch=passes.append)  # fmt: skip
    return made, batches, passes


def test_dc_protocol_schedule_optimiser_batch_and_epochs(monkeypatch):
    """DatasetCondensation utils.evaluate_synset: range(E + 1) passes, lr x0.1 after pass E//2 + 1, batch 256."""
    p = PROTOCOLS["dc"]
    assert (p.default_epochs(True), p.default_epochs(False), p.eval_norm, p.align_corners) == (1000, 300, None, False)
    plan = p.schedule(300, 0.01)
    assert len(plan) == 301 and plan[151] == (0.01, 0.9) and plan[152] == pytest.approx((0.001, 0.9)) and plan[-1] == plan[152]
    made, batches, passes = _fit_and_record(monkeypatch, "dc", 4, 300)
    assert passes == [0, 1, 2, 3, 4]  # E + 1 passes
    assert made == [(0.01, 0.9, 5e-4), (pytest.approx(0.001), 0.9, 5e-4)]  # fresh optimiser at the decay
    assert batches == [256, 44] * 5
    made, _, _ = _fit_and_record(monkeypatch, "dc", 2, 10, lr=0.05)  # a learned lr replaces 0.01
    assert made[0][0] == 0.05


def test_ast_protocol_decay_momentum_and_test_every_20(monkeypatch, digits):
    """AST utils.evaluate_synset: wd 1e-3; at pass E//2 + 1 lr x0.5 and momentum 0.8; test at ep % 20 == 0."""
    p = PROTOCOLS["ast"]
    assert (p.default_epochs(True), p.default_epochs(False), p.batch_size, p.align_corners) == (1000, 1000, 256, True)
    made, batches, _ = _fit_and_record(monkeypatch, "ast", 6, 20)
    assert made == [(0.01, 0.9, 1e-3), (0.005, 0.8, 1e-3)] and len(batches) == 7
    net = get_network("mlp", 1, 10, 8)
    res = train_and_test(net, digits.train_x[:50], digits.train_y[:50], digits.test_x, digits.test_y, epochs=41, protocol="ast",
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert [ep for ep, _ in res.history] == [0, 20, 40, 41]  # the protocol's checkpoints, then the final one
    assert res.max_acc == max(a for _, a in res.history) and res.final_acc == res.history[-1][1]
    assert "AST max-over-test" in p.max_label == p.max_label_for(None) == p.max_label_for(20)
    assert p.max_label_for(7) == PROTOCOLS["dc"].max_label and "not part of the protocol" in p.max_label_for(7)


def test_datadam_protocol_batch_epochs_and_batchnorm_convnet(monkeypatch, digits):
    """DataDAM: batch 64, 1800 epochs, ConvNet = its get_network's BatchNorm ConvNet."""
    p = PROTOCOLS["datadam"]
    assert (p.default_epochs(True), p.default_epochs(False), p.weight_decay) == (1800, 1800, 5e-4)
    made, batches, _ = _fit_and_record(monkeypatch, "datadam", 4, 100)
    assert batches == [64, 36] * 5 and made == [(0.01, 0.9, 5e-4), (pytest.approx(0.001), 0.9, 5e-4)]
    assert _fit_and_record(monkeypatch, "datadam", 2, 10)[0] == [(0.01, 0.9, 5e-4)]  # E = 2: the decay follows the last pass
    built = []
    real_get = ev.get_network
    monkeypatch.setattr(ev, "get_network", lambda name, *a, **kw: built.append((name, kw)) or real_get(name, *a, **kw))
    evaluate_images(digits.train_x[:20], digits.train_y[:20], digits, models=("convnet", "mlp"), num_evals=1, epochs=1,
                    protocol="datadam", model_kwargs={"convnet": {"width": 8}}, progress=False)  # fmt: skip
    assert ("convnet", {"width": 8, "norm": "batchnorm"}) in built and ("mlp", {}) in built
    built.clear()  # a name that fixes its norm keeps it: no second norm= ("bad options" before)
    evaluate_images(digits.train_x[:20], digits.train_y[:20], digits, models=("convnet_bn",), num_evals=1, epochs=1,
                    protocol="datadam", model_kwargs={"convnet_bn": {"width": 8}}, progress=False)  # fmt: skip
    assert built and all(b == ("convnet_bn", {"width": 8}) for b in built)
    with pytest.raises(UserError, match="unknown evaluation protocol"):
        evaluate_images(digits.train_x[:5], digits.train_y[:5], digits, protocol="kip", epochs=1, progress=False)


def test_evaluate_synset_defaults_to_recorded_protocol_and_dsa(monkeypatch, digits):
    seen = []
    real = ev.train_and_test
    monkeypatch.setattr(ev, "train_and_test", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    meta = {"dataset": digits.describe(), "protocol": "ast", "train_dsa": True,
            "dsa": {"strategy": "crop_scale", "mode": "single", "align_corners": True}}  # fmt: skip
    s = SyntheticSet(digits.train_x[:20], digits.train_y[:20], meta=meta)
    evaluate_synset(s, digits, models=("mlp",), num_evals=1, epochs=1, progress=False)
    kw = seen[-1]
    assert kw["protocol"].name == "ast" and kw["augment"].strategy == "crop_scale" and kw["augment"].align_corners
    evaluate_synset(s, digits, models=("mlp",), num_evals=1, epochs=1, protocol="dc", dsa=False, progress=False)
    assert seen[-1]["protocol"].name == "dc" and seen[-1]["augment"] is None
    evaluate_synset(s, digits, models=("mlp",), num_evals=1, epochs=1, protocol="dc", dc_aug=True, progress=False)
    assert seen[-1]["augment"] is None  # DC's protocol: no DSA (the set's is dropped), and none on digits
    plain = SyntheticSet(digits.train_x[:20], digits.train_y[:20], meta={"dataset": digits.describe()})
    evaluate_synset(plain, digits, models=("mlp",), num_evals=1, epochs=1, dsa=True, progress=False)
    assert seen[-1]["protocol"].name == "dc" and seen[-1]["augment"].strategy == DIGITS_STRATEGY and not seen[-1]["augment"].align_corners


def test_cpu_test_batch_keeps_the_largest_activation_cache_sized_and_changes_no_logit():
    from condense.evaluate import CPU_TEST_BYTES, accuracy, test_batch_size

    torch.manual_seed(0)
    x = torch.randn(300, 1, 28, 28)
    y = torch.randint(0, 10, (300,))
    net = get_network("convnet", 1, 10, (28, 28), width=64).eval()
    b = test_batch_size(net, x, torch.device("cpu"))
    largest = 64 * 32 * 32 * 4  # the first block's output (28x28 padded to 32x32), bytes per image
    assert b == CPU_TEST_BYTES // largest and 8 <= b < 300  # several forwards here, each cache-sized
    with torch.inference_mode():
        whole, pieces = net(x), torch.cat([net(x[i : i + b]) for i in range(0, len(x), b)])
    assert torch.equal(whole, pieces)  # test forwards are per image: the batch changes no logit
    assert accuracy(net, x, y, device="cpu") == accuracy(net, x, y, device="cpu", batch_size=1024)
    assert test_batch_size(get_network("mlp", 1, 10, (28, 28)).eval(), x, torch.device("cpu")) == 1024  # small activations: capped
