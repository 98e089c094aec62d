"""Size flags that cannot fit in memory are refused before any work, with the figure and the machine's
memory (one line, exit 2) - not a MemoryError traceback or a kill by the kernel. Also: a "distilled"
set at or above the training set's size is refused unless asked for, and then labelled."""
from __future__ import annotations

import numpy as np
import pytest

from condense import resources
from condense.cli import main as condense_main
from condense.data import load_dataset
from condense.synset import SyntheticSet
from condense.utils import UserError
from graphs.g2m.__main__ import main as g2m_main
from synth.cli import main as synth_main
from synth.teachers import random_teacher, save_model


def _refused(capsys, what: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and what in err, err
    assert "needs at least" in err and "available" in err and "installed" in err, err
    return err


def test_available_memory_is_a_real_figure():
    avail = resources.available_memory()
    assert 0 < avail <= resources.physical_memory()


def test_check_memory_names_the_figure_and_the_machine(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 3 << 30)
    resources.check_memory(2 << 30, "a small thing")
    with pytest.raises(UserError, match=r"a big thing needs at least 5\.0 GiB, but this machine has 3\.0 GiB available"):
        resources.check_memory(5 << 30, "a big thing")


def test_condense_distill_refuses_a_width_that_cannot_fit(tmp_path, capsys):
    # ConvNet-10^6: 1.8e13 weights (x3 with gradient and optimiser state); before, torch tried to allocate them
    argv = ["distill", "--method", "dm", "--ipc", "1", "--out", str(tmp_path / "o.pt"), "--width", "1000000", "--no-progress"]
    assert condense_main(argv) == 2
    _refused(capsys, "distilling 1 images per class x 10 classes at 8x8 pixels")
    assert not list(tmp_path.iterdir())


def test_condense_distill_refuses_resize_and_batch_beyond_memory(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 256 << 20)  # a machine with 256 MiB free
    argv = ["distill", "--method", "dm", "--ipc", "10", "--out", str(tmp_path / "o.pt"), "--resize", "32", "--no-progress"]
    assert condense_main(argv) == 2  # 256 real images of 32x32 through ConvNet-128: ~0.5 GiB of activations
    _refused(capsys, "at 32x32 pixels")


def test_synth_distill_refuses_a_generator_that_cannot_fit(tmp_path, capsys):
    save_model(random_teacher("lenet5", (1, 32, 32), 10), tmp_path / "t.pt", dataset=load_dataset("digits", resize=32))
    assert synth_main(["distill", "--method", "dafl", "--teacher", str(tmp_path / "t.pt"), "--resize", "32", "--out",
                       str(tmp_path / "s.pt"), "--ngf", "10000000", "--no-progress"]) == 2  # fmt: skip
    _refused(capsys, "--method dafl at 32x32 pixels")
    assert not (tmp_path / "s.pt").exists()


def test_g2m_refuses_a_csbm_graph_that_cannot_fit(tmp_path, capsys):
    assert g2m_main(["--nodes", "100000000", "--features", "100000", "--out", str(tmp_path / "s.pt"), "--no-progress"]) == 2
    _refused(capsys, "a CSBM graph of 100000000 nodes x 100000 features")


@pytest.fixture()
def balanced(tmp_path):
    """4 classes x 10 training images: --ipc 10 is the whole training set."""
    rng = np.random.default_rng(0)
    root = tmp_path / "d.npz"
    np.savez(root, x_train=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8), y_train=np.arange(40) % 4,
             x_test=rng.integers(0, 255, (8, 8, 8), dtype=np.uint8), y_test=np.arange(8) % 4)  # fmt: skip
    return root


def test_full_size_set_is_refused_unless_allowed_and_then_labelled(tmp_path, balanced, capsys):
    out = tmp_path / "s.pt"
    argv = ["distill", "--method", "random", "--ipc", "10", "--dataset", "arrays", "--root", str(balanced), "--out", str(out), "--no-progress"]
    assert condense_main(argv) == 2
    err = capsys.readouterr().err
    assert "at or above the 40 training images" in err and "--allow-full-size" in err and not out.exists()
    assert condense_main([*argv, "--allow-full-size"]) == 0
    assert "FULL-SIZE" in capsys.readouterr().err
    label = SyntheticSet.load(out).meta["full_size"]
    assert label.startswith("full-size set: 40 images")
    assert condense_main(["show", str(out)]) == 0
    assert "FULL SIZE" in capsys.readouterr().out
    argv[4], argv[-2] = "9", str(tmp_path / "t.pt")
    assert condense_main(argv) == 0
    assert "full_size" not in SyntheticSet.load(tmp_path / "t.pt").meta


def test_every_caller_of_a_method_gets_the_memory_check():
    """The check sits in the method registry's wrapper: experiments and the Python API are covered too."""
    from condense.methods import get_method

    dm = get_method("dm")
    with pytest.raises(UserError, match="distilling 1 images per class x 10 classes at 8x8 pixels .* needs at least"):
        dm.distill(load_dataset("digits"), 1, dm.config_cls(width=1_000_000, iterations=1))
