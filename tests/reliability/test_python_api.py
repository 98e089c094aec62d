"""The Python API is a boundary too (the README shows it): wrong types, float labels, mismatched
lengths or shapes and a NaN test split are one :class:`UserError` at the public function, never a raw
exception from deep inside, and never silently "fixed" (float class ids were truncated to ints)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import pytest
import torch

from condense.data import load_dataset
from condense.evaluate import evaluate_images, evaluate_synset
from condense.methods import get_method
from condense.synset import SyntheticSet
from condense.utils import UserError


@pytest.fixture(scope="module")
def ds():
    return load_dataset("digits")


def _eval(ds, x, y, data=None, **kw) -> Any:
    return evaluate_images(x, y, data if data is not None else ds, num_evals=kw.pop("num_evals", 1), epochs=1, progress=False, **kw)


CASES: dict[str, tuple[Callable[[Any], Any], str]] = {
    "load_dataset name not a str": (lambda ds: load_dataset(3), "dataset name must be of type str"),
    "load_dataset root not a path": (lambda ds: load_dataset("mnist", 5), "root must be of type"),
    "get_method name not a str": (lambda ds: get_method(None), "method name must be of type str"),
    "distill dataset not a dataset": (lambda ds: get_method("random").distill([1], 1, get_method("random").config_cls()),
                                      "dataset must be of type ImageDataset"),
    "distill fractional ipc": (lambda ds: get_method("random").distill(ds, 1.5, get_method("random").config_cls()), "ipc must be an integer"),
    "distill another method's config": (lambda ds: get_method("random").distill(ds, 1, get_method("dm").config_cls()),
                                        "config must be of type"),
    "distill NaN training images": (lambda ds: get_method("random").distill(replace(ds, train_x=ds.train_x.clone().fill_(float("nan"))), 1,
                                                                            get_method("random").config_cls()), "NaN"),
    "evaluate images not a tensor": (lambda ds: _eval(ds, [1], torch.zeros(1)), "images must be a torch.Tensor"),
    "evaluate float labels": (lambda ds: _eval(ds, ds.train_x[:10], torch.arange(10).float() + 0.5), "class ids must be integers"),
    "evaluate length mismatch": (lambda ds: _eval(ds, ds.train_x[:10], torch.arange(9)), "10 images but 9 labels"),
    "evaluate wrong image shape": (lambda ds: _eval(ds, torch.zeros(10, 3, 8, 8), torch.arange(10)), "per image but the dataset's are"),
    "evaluate NaN test split": (lambda ds: _eval(ds, ds.train_x[:10], torch.arange(10), replace(ds, test_x=ds.test_x.clone().fill_(float("nan")))),
                                "test images"),
    "evaluate num_evals not an int": (lambda ds: _eval(ds, ds.train_x[:10], torch.arange(10), num_evals="3"), "num_evals must be an integer"),
    "evaluate_synset not a set": (lambda ds: evaluate_synset("x.pt", ds), "synset must be of type SyntheticSet"),
    "SyntheticSet float labels": (lambda ds: SyntheticSet(torch.zeros(2, 1, 8, 8), torch.tensor([0.7, 1.2])), "class ids must be integers"),
    "SyntheticSet images not a tensor": (lambda ds: SyntheticSet([[1.0]], torch.zeros(1)), "images must be a torch.Tensor"),
    "SyntheticSet length mismatch": (lambda ds: SyntheticSet(torch.zeros(2, 1, 8, 8), torch.tensor([0])), "2 images but 1 labels"),
    "SyntheticSet lr not a number": (lambda ds: SyntheticSet(torch.zeros(1, 1, 8, 8), torch.tensor([0]), lr="fast"), "lr must be a number"),
    "GraphDataset float label": (lambda ds: _graphs(y=torch.tensor(1.7)), "needs one integer class label"),
    "GraphDataset graph not a Data": (lambda ds: _graphs(graph="x"), "graph 0 must be of type Data"),
    "GraphDataset num_classes not an int": (lambda ds: _graphs(num_classes="2"), "num_classes must be an integer"),
    "GraphDataset split index out of range": (lambda ds: _graphs(test=torch.tensor([5])), "graph indices in"),
}  # fmt: skip


def _graphs(y: Any = None, graph: Any = None, num_classes: Any = 2, test: Any = None) -> Any:
    from torch_geometric.data import Data

    from graphs.data.graphsets import GraphDataset

    g = Data(x=torch.zeros(3, 1, dtype=torch.long), edge_index=torch.tensor([[0, 1], [1, 2]]), y=torch.tensor(1) if y is None else y)
    split = {"train": torch.tensor([0]), "valid": torch.tensor([0]), "test": torch.tensor([0]) if test is None else test}
    return GraphDataset("toy", [g if graph is None else graph], num_classes, split, (3,), None)


@pytest.mark.parametrize("case", list(CASES))
def test_public_functions_refuse_bad_arguments_with_one_line(ds, case):
    call, message = CASES[case]
    with pytest.raises(UserError, match=message) as err:
        call(ds)
    assert "\n" not in str(err.value)
