import os

import pytest
import torch

from condense.synset import SyntheticSet
from condense.utils import UserError, atomic_save


def _set(**kw):
    meta = {"method": "dm", "dataset": {"name": "digits", "mean": [0.3], "std": [0.4], "image_size": [8, 8]}}
    return SyntheticSet(torch.randn(6, 1, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2]), meta=meta, **kw)


def test_roundtrip_and_dataset_protocol(tmp_path):
    s = _set(lr=0.02)
    path = s.save(tmp_path / "s.pt")
    t = SyntheticSet.load(path)
    assert torch.equal(s.images, t.images) and torch.equal(s.labels, t.labels) and t.lr == 0.02
    assert t.meta["method"] == "dm" and "torch" in t.meta["versions"]
    assert len(t) == 6 and t[3][1] == 1 and t.ipc == 2
    loader = torch.utils.data.DataLoader(t, batch_size=4)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 1, 8, 8) and yb.shape == (4,)


def test_soft_labels_roundtrip(tmp_path):
    soft = torch.softmax(torch.randn(6, 3), 1)
    s = SyntheticSet(torch.randn(6, 1, 8, 8), soft)
    t = SyntheticSet.load(s.save(tmp_path / "soft.pt"))
    assert t.soft and torch.allclose(t.labels, soft) and t.hard_labels().shape == (6,)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "s.pt"
    _set().save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError):
        _set().save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # no temp file left behind


def test_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="not a readable SyntheticSet"):
        SyntheticSet.load(bad)
    foreign = tmp_path / "foreign.pt"
    atomic_save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(UserError, match="expected format"):
        SyntheticSet.load(foreign)
    with pytest.raises(UserError, match="not found"):
        SyntheticSet.load(tmp_path / "missing.pt")


def test_validation():
    with pytest.raises(UserError):
        SyntheticSet(torch.randn(3, 8, 8), torch.zeros(3))
    with pytest.raises(UserError):
        SyntheticSet(torch.randn(3, 1, 8, 8), torch.zeros(2))
    with pytest.raises(UserError, match="NaN"):
        SyntheticSet(torch.full((1, 1, 2, 2), float("nan")), torch.zeros(1))
    with pytest.raises(UserError, match="lr"):
        _set(lr=float("inf"))


def test_png_grid(tmp_path):
    out = _set().to_png(tmp_path / "grid.png")
    assert out.exists() and out.read_bytes()[:4] == b"\x89PNG" and os.path.getsize(out) > 500


def test_grid_puts_each_class_on_its_row():
    s = SyntheticSet(torch.rand(5, 3, 4, 2), torch.tensor([2, 0, 2, 2, 0]))
    img, classes = s.grid(max_per_class=2, pad=1)
    assert classes == [0, 2] and img.shape == (2 * 5 + 1, 2 * 3 + 1, 3)
    pix = s.pixels()
    assert torch.equal(img[1:5, 1:3], pix[1].permute(1, 2, 0))  # class 0, first image
    assert torch.equal(img[1:5, 4:6], pix[4].permute(1, 2, 0))
    assert torch.equal(img[6:10, 1:3], pix[0].permute(1, 2, 0))  # class 2: first two of its three
    assert torch.equal(img[6:10, 4:6], pix[2].permute(1, 2, 0))
    assert (img[0] == 1).all() and (img[:, 3] == 1).all()  # white padding


def test_zca_set_round_trips_with_its_transform_and_shows_unwhitened_pixels(tmp_path):
    """A set distilled with --zca stores the fitted whitening; pixels()/PNG undo it; evaluation checks it."""
    from condense.data import load_dataset
    from condense.evaluate import evaluate_synset
    from condense.methods import get_method

    ds = load_dataset("digits", zca=True)
    spec = get_method("random")
    s = spec.distill(ds, 2, spec.config_cls(), device=torch.device("cpu"), seed=0)
    t = SyntheticSet.load(s.save(tmp_path / "zca.pt"))
    assert t.meta["dataset"]["zca"] and t.zca is not None and t.zca["eps"] == 0.1
    raw = ds.denormalise(t.images)  # the real [0, 1] images that were picked
    assert torch.allclose(t.pixels(), raw, atol=1e-4)
    assert t.to_png(tmp_path / "zca.png").exists()
    other = load_dataset("digits", zca=True, zca_eps=0.5)
    with pytest.raises(UserError, match="ZCA whitening differs"):
        evaluate_synset(t, other, num_evals=1, epochs=1, progress=False)
    with pytest.raises(UserError, match="disagree on ZCA"):
        evaluate_synset(t, load_dataset("digits"), num_evals=1, epochs=1, progress=False)
