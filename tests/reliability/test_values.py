"""Non-finite or absurd values are refused where data or weights enter (synthetic sets, teachers,
expert trajectories, image and graph datasets), and a degenerate split is refused, never scored."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from condense.cli import main as condense_main
from condense.data import load_dataset
from condense.experts import RECIPES, ExpertBuffer, expert_path, train_experts
from condense.safeio import MAX_ABS_VALUE, check_image_dataset, check_values
from condense.synset import FORMAT as SYNSET_FORMAT
from condense.synset import SyntheticSet
from condense.utils import UserError, atomic_save, safe_load
from graphs.data.graphsets import GraphDataset
from synth.teachers import load_model, random_teacher, save_model


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e38, -1e12])
def test_check_values_refuses_non_finite_and_absurd(bad):
    t = torch.zeros(3, 4)
    t[1, 2] = bad
    with pytest.raises(UserError, match="synthetic images: 1 of 12 values"):
        check_values(t, "synthetic images")
    check_values(torch.full((2,), MAX_ABS_VALUE), "at the bound")  # the bound itself is allowed
    check_values(torch.tensor([1, 2**40]), "integers are ids, not values")


def test_synset_file_with_absurd_pixels_is_refused(tmp_path, capsys):
    path = tmp_path / "s.pt"
    images = torch.zeros(2, 1, 8, 8)
    images[0, 0, 0, 0] = 1e38  # finite: before, it loaded and was "evaluated" at chance
    atomic_save({"format": SYNSET_FORMAT, "images": images, "labels": torch.tensor([0, 1]), "lr": None,
                 "meta": {"dataset": {"name": "digits", "num_classes": 10}}, "zca": None}, path)  # fmt: skip
    with pytest.raises(UserError, match=r"s\.pt: synthetic images: 1 of 128 values exceed"):
        SyntheticSet.load(path)
    assert condense_main(["show", str(path)]) == 2
    assert "exceed" in capsys.readouterr().err


def test_teacher_with_absurd_weights_is_refused(tmp_path):
    model = random_teacher("lenet5", (1, 32, 32), 10)
    with torch.no_grad():
        next(model.net.parameters()).view(-1)[0] = 3e38
    save_model(model, tmp_path / "t.pt")
    with pytest.raises(UserError, match=r"t\.pt: weight .* exceed"):
        load_model(tmp_path / "t.pt")


def test_expert_trajectory_with_nan_is_refused(tmp_path):
    digits = load_dataset("digits")
    recipe = dataclasses.replace(RECIPES["mtt"], dsa=False)
    train_experts(digits, tmp_path, num_experts=1, epochs=1, recipe=recipe, model_kwargs={"width": 4}, progress=False)
    path = expert_path(tmp_path, 0)
    obj = safe_load(path, what="expert trajectory")
    name = next(iter(obj["trajectory"]))
    obj["trajectory"][name][1].view(-1)[0] = float("nan")
    atomic_save(obj, path)  # a well-formed file (valid checksum) whose weights are NaN
    with pytest.raises(UserError, match=rf"expert_.*: weight {name!r}: 1 of \d+ values are NaN or Inf"):
        ExpertBuffer(tmp_path, digits, model_kwargs={"width": 4})


def test_graph_features_with_nan_are_refused():
    x = torch.rand(3, 2)
    x[2, 1] = float("nan")
    g = Data(x=x, edge_index=torch.tensor([[0, 1], [1, 0]]), y=torch.tensor([0]))
    ok = Data(x=torch.rand(3, 2), edge_index=torch.tensor([[0, 1], [1, 0]]), y=torch.tensor([1]))
    split = {"train": torch.tensor([0]), "valid": torch.tensor([1]), "test": torch.tensor([1])}
    GraphDataset("toy", [ok, ok], 2, split, None, None)
    with pytest.raises(UserError, match="toy: graph 1 x: 1 of 6 values are NaN or Inf"):
        GraphDataset("toy", [ok, g], 2, split, None, None)


def test_image_dataset_with_nan_pixels_is_refused():
    digits = load_dataset("digits")
    bad = digits.test_x.clone()
    bad[3, 0, 2, 2] = float("inf")
    with pytest.raises(UserError, match="dataset 'digits' test images: 1 of"):
        check_image_dataset(dataclasses.replace(digits, test_x=bad))


def test_empty_test_split_is_refused_not_scored_as_zero(tmp_path, capsys):
    """An empty test split used to be reported as 0.0 % accuracy; distilling does not need it."""
    rng = np.random.default_rng(0)
    root = tmp_path / "d.npz"
    np.savez(root, x_train=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8), y_train=np.arange(40) % 4,
             x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, np.int64))  # fmt: skip
    out = tmp_path / "s.pt"
    assert condense_main(["distill", "--method", "random", "--ipc", "2", "--dataset", "arrays", "--root", str(root), "--out", str(out),
                          "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert condense_main(["evaluate", str(out), "--root", str(root), "--num-evals", "1", "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: dataset 'arrays': the test split is empty; there is nothing to evaluate on (check the dataset files)"
