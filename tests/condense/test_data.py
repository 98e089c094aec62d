import gzip
import pickle

import numpy as np
import pytest
import torch

from condense.data import ClassSampler, ZCA, load_dataset, read_idx
from condense.utils import UserError


def test_digits_split_is_fixed_and_standardised():
    ds = load_dataset("digits")
    assert ds.train_x.shape == (1258, 1, 8, 8) and ds.test_x.shape == (539, 1, 8, 8)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.num_classes == 10 and ds.channels == 1 and ds.image_size == (8, 8)
    assert abs(float(ds.train_x.mean())) < 0.01 and abs(float(ds.train_x.std()) - 1) < 0.01
    again = load_dataset("digits")
    assert torch.equal(ds.train_y, again.train_y) and torch.equal(ds.test_x, again.test_x)
    assert min(ds.class_counts()) == 122


def test_digits_resize_and_denormalise():
    ds = load_dataset("digits", resize=16)
    assert ds.train_x.shape[-2:] == (16, 16)
    pix = ds.denormalise(ds.train_x[:5])
    assert pix.min() >= 0 and pix.max() <= 1


def test_unknown_dataset_and_missing_root(tmp_path):
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("imagenet-1k")
    with pytest.raises(UserError, match="needs --root"):
        load_dataset("mnist")
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("fashion_mnist", tmp_path / "nowhere")
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz"):
        load_dataset("fashion_mnist", tmp_path)


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_idx_reader_roundtrip_and_truncation(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    with gzip.open(tmp_path / "b.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(UserError, match="truncated"):
        read_idx(tmp_path / "b.gz")


def test_idx_dataset_from_generated_files(tmp_path):
    rng = np.random.RandomState(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.randint(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    ds = load_dataset("mnist", tmp_path)
    assert ds.train_x.shape == (30, 1, 28, 28) and ds.test_y.tolist() == list(range(10))


def test_cifar_pickles_from_generated_files(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(base / name, "wb") as fh:
            pickle.dump({"data": rng.randint(0, 256, (4, 3072)).astype(np.uint8), "labels": [0, 1, 2, 3]}, fh)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.mean == (0.4914, 0.4822, 0.4465)
    (base / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)


def test_cifar100_fine_labels(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    for name in ("train", "test"):
        with open(base / name, "wb") as fh:
            pickle.dump({"data": np.zeros((3, 3072), np.uint8), "fine_labels": [5, 99, 0], "coarse_labels": [1, 2, 3]}, fh)
    ds = load_dataset("cifar100", tmp_path)
    assert ds.num_classes == 100 and ds.train_y.tolist() == [5, 99, 0]


@pytest.mark.parametrize("n", [300, 20])  # full rank (eigh path) and n - 1 < D (thin-SVD path)
def test_zca_equals_kornia_zca_whitening(n):
    """MTT's transform: kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True) fitted on the same images."""
    kornia = pytest.importorskip("kornia")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 4, 4, generator=gen, dtype=torch.float64) @ torch.rand(4, 4, generator=gen, dtype=torch.float64)
    new = torch.rand(7, 3, 4, 4, generator=gen, dtype=torch.float64)
    ref = kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True)
    ref.fit(x)
    ours = ZCA(0.1).fit(x)
    for batch in (x, new):
        assert torch.allclose(ours(batch), ref(batch), atol=1e-5, rtol=0)
        assert torch.allclose(ours.invert(ours(batch)), ref.inverse_transform(ref(batch)), atol=1e-5, rtol=0)
    back = ZCA.from_state(ours.state_dict())
    assert back.matches(ours) and torch.allclose(back(new), ours(new), atol=1e-4)
    assert not ZCA(0.2).fit(x).matches(ours)


def test_zca_dataset_is_fitted_on_raw_pixels_as_mtt():
    """--zca: no standardisation before whitening (MTT get_dataset: ToTensor() only)."""
    plain, zca = load_dataset("digits"), load_dataset("digits", zca=True)
    raw = plain.train_x * plain.std[0] + plain.mean[0]  # the [0, 1] pixels
    expected = ZCA(0.1).fit(raw)
    assert zca.mean == (0.0,) and zca.std == (1.0,)
    assert torch.allclose(zca.train_x, expected(raw), atol=1e-4)
    assert torch.allclose(zca.denormalise(zca.train_x), raw.clamp(0, 1), atol=1e-4)
    # whitening the standardised images instead would be MTT's ZCA with eps * std^2: clearly different
    assert (ZCA(0.1).fit(plain.train_x)(plain.train_x) - zca.train_x).abs().max() > 0.1


def test_zca_whitens_and_inverts():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 1, 4, 4, generator=gen) @ (torch.eye(4) + 0.5 * torch.randn(4, 4, generator=gen))  # correlated pixels
    zca = ZCA(eps=1e-6).fit(x)
    w = zca(x).reshape(500, -1).double()
    cov = (w - w.mean(0)).T @ (w - w.mean(0)) / 499
    assert torch.allclose(cov, torch.eye(16, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(zca.invert(zca(x)), x, atol=1e-4)
    ds = load_dataset("digits", zca=True)
    assert ds.zca is not None and ds.denormalise(ds.train_x[:3]).shape == (3, 1, 8, 8)


def test_class_sampler_balanced_and_seeded():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    s = ClassSampler(y)
    assert [s.count(c) for c in range(3)] == [3, 2, 1]
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a, b = s.sample(0, 2, g1), s.sample(0, 2, g2)
    assert torch.equal(a, b) and len(set(a.tolist())) == 2 and all(y[a] == 0)
    big = s.sample(2, 4, g1)
    assert big.tolist() == [5, 5, 5, 5]


@pytest.mark.shared_data
def test_fashion_mnist_from_shared_data(shared_data):
    ds = load_dataset("fashion_mnist", shared_data / "fashion_mnist")
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.class_counts() == [6000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert ds.class_names[9] == "Ankle boot"
    assert abs(float(ds.train_x.mean())) < 0.02  # the standard constants standardise the train split


@pytest.mark.shared_data
def test_partial_mnist_names_the_missing_file(shared_data):
    with pytest.raises(UserError, match="missing: train-images-idx3-ubyte.gz"):
        load_dataset("mnist", shared_data / "mnist")


def test_split_validation_is_stratified_disjoint_and_seeded():
    from condense.data import split_validation

    ds = load_dataset("digits")
    fit, val = split_validation(ds, 0.2, seed=0)
    assert len(fit.train_y) + len(val.test_y) == len(ds.train_y) and torch.equal(fit.test_y, ds.test_y)
    assert torch.equal(val.train_x, fit.train_x)
    held = torch.bincount(val.test_y, minlength=10).float() / torch.bincount(ds.train_y, minlength=10).float()
    assert ((held - 0.2).abs() < 0.02).all()  # every class loses ~20 %
    rows = {tuple(r.tolist()) for r in fit.train_x.flatten(1)}
    assert not any(tuple(r.tolist()) in rows for r in val.test_x.flatten(1))  # disjoint
    assert torch.equal(split_validation(ds, 0.2, seed=0)[1].test_x, val.test_x)
    assert not torch.equal(split_validation(ds, 0.2, seed=1)[1].test_x, val.test_x)
    with pytest.raises(UserError, match="fraction"):
        split_validation(ds, 1.5)


def test_digits_read_without_sklearn_equal_load_digits(monkeypatch):
    """The direct read of scikit-learn's bundled CSV is load_digits exactly; without the file, load_digits itself."""
    import importlib.util

    from sklearn.datasets import load_digits

    from condense.data import loaders as data

    ref = load_digits()
    images, target = data._digits_arrays()
    assert np.array_equal(images, ref.images) and np.array_equal(target, ref.target) and images.shape == (1797, 8, 8)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    images, target = data._digits_arrays()
    assert np.array_equal(images, ref.images) and np.array_equal(target, ref.target)


def test_cli_start_does_not_import_sklearn():
    import subprocess
    import sys

    code = "import sys, condense.cli, graphs.mirage.__main__; print(any(m.split('.')[0] == 'sklearn' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
