"""The loader registry on generated fixtures of every layout; the memory-mapped storage; bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from condense.data import ImageDataset, ImageStore, load_dataset
from condense.data.store import standardise
from condense.utils import UserError

from . import loader_fixtures as fx


def _standardised(ds, u8: np.ndarray) -> torch.Tensor:
    return standardise(torch.from_numpy(np.ascontiguousarray(u8)), ds.mean, ds.std, None)


def _by_label(ds_x, ds_y, ref_x, ref_y) -> None:
    """Same multiset of (image, label) rows: loaders may order files differently from the fixture."""
    got = sorted((int(y), x.numpy().tobytes()) for x, y in zip(ds_x, ds_y))
    want = sorted((int(y), x.numpy().tobytes()) for x, y in zip(ref_x, ref_y))
    assert got == want


# ------------------------------------------------------------------------------------------ layouts
@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp"])
def test_imagefolder_with_test_folder_equals_pillow_decode(tmp_path, ext):
    root = fx.image_folder(tmp_path / "pngs", per_class=4, test=2, ext=ext)
    ds = load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
    assert ds.class_names == ["cat", "dog", "eel"] and ds.num_classes == 3 and ds.train_x.shape == (12, 3, 8, 8)
    assert len(ds.test_y) == 6 and ds.describe()["test_split"] == "test" and ds.describe()["loader"] == "imagefolder"
    ref = np.stack([fx.decode(p) for c in ds.class_names for p in sorted((root / c).glob(f"*{ext}"))])
    assert len(ref) == 12 and torch.equal(ds.train_x, _standardised(ds, ref))
    ref_mean = ref.reshape(len(ref), 3, -1).transpose(1, 0, 2).reshape(3, -1).mean(1) / 255
    assert np.allclose(ds.mean, ref_mean, atol=1e-5)  # statistics of the training split


def test_imagefolder_seeded_split_is_recorded_and_reproducible(tmp_path):
    root = fx.image_folder(tmp_path / "pngs", per_class=10)
    a = load_dataset("imagefolder", root, cache_dir=tmp_path / "c", test_fraction=0.3, split_seed=1)
    b = load_dataset("imagefolder", root, cache_dir=tmp_path / "c", test_fraction=0.3, split_seed=1)
    c = load_dataset("imagefolder", root, cache_dir=tmp_path / "c", test_fraction=0.3, split_seed=2)
    assert torch.bincount(a.test_y).tolist() == [3, 3, 3] and torch.equal(a.test_x, b.test_x)
    assert not torch.equal(a.test_x, c.test_x)
    d = a.describe()
    assert d["test_fraction"] == 0.3 and d["split_seed"] == 1 and d["test_split"] == "seeded stratified split"


def test_imagefolder_greyscale_and_image_size(tmp_path):
    rng = np.random.RandomState(0)
    for c in ("a", "b"):
        for i, size in enumerate([(10, 12), (14, 9), (12, 12)]):
            fx.write_image(tmp_path / "g" / c / f"{i}.png", fx.rgb(rng, *size, c=1))
    with pytest.raises(UserError, match="different sizes.*--image-size"):
        load_dataset("imagefolder", tmp_path / "g", cache_dir=tmp_path / "c", test_fraction=0.34)
    ds = load_dataset("imagefolder", tmp_path / "g", cache_dir=tmp_path / "c", image_size=8, test_fraction=0.34)
    assert ds.channels == 1 and ds.image_size == (8, 8) and ds.describe()["options"] == {"image_size": 8, "test_fraction": 0.34}


@pytest.mark.parametrize("layout,dtype", [("nhwc", "uint8"), ("nchw", "uint8"), ("nhwc", "float")])
def test_arrays_npz_layouts(tmp_path, layout, dtype):
    path, ref = fx.npz(tmp_path / "d.npz", layout=layout, dtype=dtype)
    ds = load_dataset("arrays", path, cache_dir=tmp_path / "c")
    assert ds.num_classes == 4 and ds.train_x.shape == (40, 3, 6, 6)
    assert torch.equal(ds.train_x, _standardised(ds, ref["x_train"])) and torch.equal(ds.test_x, _standardised(ds, ref["x_test"]))
    assert ds.train_y.tolist() == ref["y_train"].tolist()


def test_tiny_imagenet_tree(tmp_path):
    base = fx.tiny_imagenet(tmp_path)
    ds = load_dataset("tiny_imagenet", tmp_path, cache_dir=tmp_path / "c")
    assert ds.class_names == ["n01443537", "n01629819", "n01641577"] and ds.image_size == (64, 64)
    assert ds.mean == (0.485, 0.456, 0.406) and len(ds.train_y) == 12 and len(ds.test_y) == 6
    ref = np.stack([fx.decode(p) for w in ds.class_names for p in sorted((base / "train" / w / "images").glob("*.JPEG"))])
    assert torch.equal(ds.train_x, _standardised(ds, ref))
    val = [(fx.decode(base / "val" / "images" / f"val_{w}_{i}.JPEG"), c) for c, w in enumerate(ds.class_names) for i in range(2)]
    _by_label(ds.test_x, ds.test_y, _standardised(ds, np.stack([v for v, _ in val])), [c for _, c in val])


def test_imagenet_subset_is_resized_and_centre_cropped(tmp_path):
    root = fx.imagenet_subset(tmp_path / "ilsvrc")
    ds = load_dataset("imagenette", root, cache_dir=tmp_path / "c", image_size=12, classes="tench,church,parachute")
    assert ds.class_names == ["tench", "church", "parachute"] and ds.image_size == (12, 12) and len(ds.train_y) == 6
    from PIL import Image

    with Image.open(root / "train" / "n01440764" / "n01440764_0.JPEG") as im:  # 20x15: shorter side 15 -> 12, 16x12, crop 2
        want = np.asarray(im.convert("RGB").resize((16, 12), Image.BILINEAR).crop((2, 0, 14, 12))).transpose(2, 0, 1)
    assert torch.equal(ds.train_x[0], _standardised(ds, want[None])[0])
    with pytest.raises(UserError, match="n02096294 holds no images"):
        load_dataset("imagewoof", root, cache_dir=tmp_path / "c")


def test_svhn_mat(tmp_path):
    _, ref = fx.svhn(tmp_path)
    ds = load_dataset("svhn", tmp_path)
    assert torch.equal(ds.train_x, _standardised(ds, ref["train"][0])) and ds.train_y.tolist() == ref["train"][1].tolist()
    assert 0 in ds.train_y.tolist() and ds.num_classes == 10


# ------------------------------------------------------------------------------------------ API
def test_from_arrays_dtypes_and_layouts_agree():
    rng = np.random.RandomState(0)
    x = rng.randint(0, 256, (30, 4, 4, 3)).astype(np.uint8)
    y = np.arange(30) % 3
    a = ImageDataset.from_arrays(x, y, x[:9], y[:9])
    b = ImageDataset.from_arrays(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y), x[:9], y[:9])
    c = ImageDataset.from_arrays(x.astype(np.float64) / 255.0, y.astype(float), x[:9], y[:9])
    assert torch.equal(a.train_x, b.train_x) and torch.allclose(a.train_x, c.train_x, atol=1e-5)
    assert a.train_x.dtype == torch.float32 and abs(float(a.train_x.mean())) < 1e-4  # mean/std from the training split
    split = ImageDataset.from_arrays(x, y, test_fraction=0.2, split_seed=0)
    assert torch.bincount(split.test_y).tolist() == [2, 2, 2] and split.describe()["split_seed"] == 0
    with pytest.raises(UserError, match="float images must be finite and in"):
        ImageDataset.from_arrays(x.astype(np.float32), y)
    with pytest.raises(UserError, match="labels must be integers"):
        ImageDataset.from_arrays(x, y + 0.5)


def test_classes_subset_by_name_and_id():
    full = load_dataset("digits")
    ds = load_dataset("digits", classes="7,2")
    assert ds.class_names == ["2", "7"] and ds.num_classes == 2 and set(ds.train_y.tolist()) == {0, 1}
    assert torch.equal(ds.train_x, full.train_x[(full.train_y == 2) | (full.train_y == 7)])
    assert ds.describe()["options"] == {"classes": [2, 7]} and ds.fingerprint != full.fingerprint
    with pytest.raises(UserError, match="'zebra' is not a class of digits"):
        load_dataset("digits", classes="3,zebra")
    with pytest.raises(UserError, match="at least two distinct classes"):
        load_dataset("digits", classes="3")


# ------------------------------------------------------------------------------------------ storage
def test_memmap_rows_equal_memory_rows(tmp_path):
    mem = load_dataset("digits")
    mm = load_dataset("digits", storage="memmap", cache_dir=tmp_path)
    assert isinstance(mm.train_x, ImageStore) and len(mm.train_x) == len(mem.train_x) and mm.train_x.shape == mem.train_x.shape
    idx = torch.tensor([5, 0, 1200, 5])
    assert torch.equal(mm.train_x[idx], mem.train_x[idx]) and torch.equal(mm.test_x[10:20], mem.test_x[10:20])
    assert torch.equal(mm.train_x[3], mem.train_x[3]) and torch.equal(mm.train_x[mem.train_y == 4], mem.train_x[mem.train_y == 4])
    assert mm.describe()["storage"] == "memmap"


def test_streamed_zca_equals_in_memory_fit(tmp_path):
    mem = load_dataset("digits", zca=True)
    mm = load_dataset("digits", zca=True, storage="memmap", cache_dir=tmp_path)
    assert torch.allclose(mm.zca.transform, mem.zca.transform, atol=1e-9) and "streamed covariance" in mm.describe()["zca_fit"]
    assert torch.allclose(mm.train_x[:100], mem.train_x[:100], atol=1e-5)


@pytest.mark.slow
def test_dm_on_memmap_equals_in_memory_bit_for_bit(tmp_path):
    from condense.methods import get_method

    spec = get_method("dm")
    cfg = spec.config_cls(iterations=2, batch_real=8, width=8)
    runs = [spec.distill(load_dataset("digits", storage=s, cache_dir=tmp_path), 2, cfg, seed=0, progress=False)
            for s in ("memory", "memmap")]  # fmt: skip
    assert torch.equal(runs[0].images, runs[1].images)


def test_cache_is_reused_and_rebuilt_when_stale(tmp_path, capsys):
    path, _ = fx.npz(tmp_path / "d.npz")
    load_dataset("arrays", path, cache_dir=tmp_path / "c")
    assert "decoding" in capsys.readouterr().err
    ds = load_dataset("arrays", path, cache_dir=tmp_path / "c")
    assert "decoding" not in capsys.readouterr().err
    cache = ds.describe()["cache"]
    with open(cache, "r+b") as fh:  # damage the trailer: never trusted, rebuilt
        fh.seek(-5, 2)
        fh.write(b"XXXXX")
    again = load_dataset("arrays", path, cache_dir=tmp_path / "c")
    assert "decoding" in capsys.readouterr().err and torch.equal(again.train_x, ds.train_x)
    fx.npz(path, seed=1)  # new sources: a new cache
    changed = load_dataset("arrays", path, cache_dir=tmp_path / "c")
    assert "decoding" in capsys.readouterr().err and not torch.equal(changed.train_x, ds.train_x)


def test_cache_defaults_next_to_the_data(tmp_path):
    root = fx.image_folder(tmp_path / "pngs", per_class=3, test=1)
    ds = load_dataset("imagefolder", root)
    assert ds.describe()["cache"].startswith(str(root / ".condense_cache"))


# ------------------------------------------------------------------------------------------ bad inputs
def test_bad_folders_are_refused_naming_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: no class folders"):
        load_dataset("imagefolder", tmp_path / "empty", cache_dir=tmp_path / "c")
    fx.image_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(UserError, match="only one class folder"):
        load_dataset("imagefolder", tmp_path / "one", cache_dir=tmp_path / "c")
    root = fx.image_folder(tmp_path / "hole")
    (root / "fox").mkdir()
    with pytest.raises(UserError, match=r"fox: class 'fox' has no images"):
        load_dataset("imagefolder", root, cache_dir=tmp_path / "c")
    root = fx.image_folder(tmp_path / "extra", test=1)
    fx.write_image(root / "test" / "yak" / "0.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="test split has class 'yak'"):
        load_dataset("imagefolder", root, cache_dir=tmp_path / "c")


def test_truncated_image_refused_or_skipped_with_count(tmp_path, capsys):
    root = fx.image_folder(tmp_path / "t", per_class=5, test=2)
    bad = root / "dog" / "002.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(UserError, match=r"002\.png.*--skip-bad-images"):
        load_dataset("imagefolder", root, cache_dir=tmp_path / "c")
    assert not list((tmp_path / "c").glob("*.u8"))  # nothing written
    ds = load_dataset("imagefolder", root, cache_dir=tmp_path / "c", skip_bad_images=True)
    assert len(ds.train_y) == 14 and ds.describe()["skipped_images"] == 1 and "skipped 1" in capsys.readouterr().err


@pytest.mark.parametrize("override,message", [
    ({"x_test": None}, "missing key.*x_test"),
    ({"y_train": np.arange(39) % 4}, "40 images but 'y_train' 39 labels"),
    ({"y_train": np.arange(40) % 4 + 0.5}, "labels must be integers"),
    ({"y_train": np.arange(40) % 4 - 1}, "labels must be >= 0"),
    ({"y_test": np.arange(12) % 5}, "test split has class 4"),
    ({"y_train": np.arange(40) % 4 * 2}, "class 1 has no training images"),
])  # fmt: skip
def test_bad_npz_is_refused_naming_the_file(tmp_path, override, message):
    path, _ = fx.npz(tmp_path / "bad.npz", **override)
    with pytest.raises(UserError, match=message) as err:
        load_dataset("arrays", path, cache_dir=tmp_path / "c")
    assert "bad.npz" in str(err.value)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_folder_distill_then_evaluate_and_show_from_the_record(tmp_path, capsys):
    from condense.cli import main
    from condense.synset import SyntheticSet

    root = fx.image_folder(tmp_path / "pngs", per_class=5, test=2)
    out = tmp_path / "set.pt"
    tiny = ["--iterations", "2", "--batch-real", "4", "--width", "8", "--no-progress"]
    assert main(["distill", "--method", "dm", "--ipc", "1", "--out", str(out), "--dataset", "imagefolder", "--root", str(root),
                 "--classes", "cat,eel", "--cache-dir", str(tmp_path / "c"), *tiny]) == 0  # fmt: skip
    meta = SyntheticSet.load(out).meta["dataset"]
    assert meta["loader"] == "imagefolder" and meta["root"] == str(root) and meta["options"] == {"classes": [0, 2]}
    assert SyntheticSet.load(out).meta["class_names"] == ["cat", "eel"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--num-evals", "1", "--epochs", "2", "--no-dsa", "--no-progress", "--cache-dir", str(tmp_path / "c")]) == 0
    assert "| convnet" in capsys.readouterr().out
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "loader imagefolder" in shown and "convnet (depth 3 at 8x8)" in shown


def test_cli_bad_image_is_one_line_naming_the_file(tmp_path, capsys):
    from condense.cli import main

    root = fx.image_folder(tmp_path / "pngs", per_class=3, test=1)
    (root / "cat" / "000.png").write_bytes(b"not a png")
    out = tmp_path / "set.pt"
    assert main(["distill", "--method", "dm", "--ipc", "1", "--out", str(out), "--dataset", "imagefolder", "--root", str(root),
                 "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "000.png" in err[0] and "--skip-bad-images" in err[0] and not out.exists()


def test_convnet_depth_follows_resolution():
    from condense.nets import convnet_depth, get_network

    assert [convnet_depth(s) for s in (8, 28, 32, 64, 128)] == [3, 3, 3, 4, 5]
    assert get_network("convnet", 3, 10, 64).depth == 4 and get_network("convnetd3", 3, 10, 64).depth == 3


def test_arrays_compressed_greyscale_with_classes_streams_the_same_rows(tmp_path):
    rng = np.random.RandomState(0)
    x, y = rng.randint(0, 256, (30, 5, 5)).astype(np.uint8), np.arange(30) % 3
    np.savez_compressed(tmp_path / "g.npz", x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    for storage in ("memory", "memmap"):
        ds = load_dataset("arrays", tmp_path / "g.npz", cache_dir=tmp_path / "c", classes="0,2", storage=storage)
        keep = np.isin(y, [0, 2])
        assert ds.channels == 1 and ds.train_y.tolist() == (y[keep] // 2).tolist()
        assert torch.equal(ds.train_x[:], _standardised(ds, x[keep][:, None]))
