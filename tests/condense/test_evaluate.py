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
