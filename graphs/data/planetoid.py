"""Planetoid citation graphs (Cora, CiteSeer, PubMed) from local raw files, public split.

Wraps :class:`torch_geometric.datasets.Planetoid` (Yang, Cohen & Salakhutdinov, ICML 2016) with a
strict offline contract: the eight ``ind.<name>.*`` raw files must already exist under
``root/<Name>/raw/``; if one is missing we raise :class:`~condense.utils.UserError` naming the
dataset, the root and the missing files instead of letting PyG reach for the network.

The split is the public GCN split (Kipf & Welling 2017): 20 labelled nodes per class for training,
500 validation and 1000 test nodes. This is also the split the FF-G2M code uses (DGL's
``CoraGraphDataset`` et al. carry the same masks).
"""
from __future__ import annotations

from pathlib import Path

from torch_geometric.data import Data

from condense.safeio import cache_is_stale, check_root, fingerprint_files, mark_cache, safe_unpickle
from condense.utils import UserError

__all__ = ["PLANETOID_NAMES", "RAW_SUFFIXES", "load_planetoid", "planetoid_available"]

#: lower-case dataset name -> directory name PyG expects under ``root``.
PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def _canonical(name: str) -> str:
    key = str(name).lower()
    if key not in PLANETOID_NAMES:
        raise UserError(f"unknown Planetoid dataset {name!r} (expected one of {', '.join(PLANETOID_NAMES)})")
    return key


def _missing_raw_files(name: str, root: Path) -> list[Path]:
    raw = root / PLANETOID_NAMES[name] / "raw"
    return [raw / f"ind.{name}.{suffix}" for suffix in RAW_SUFFIXES if not (raw / f"ind.{name}.{suffix}").is_file()]


def _validate_raw(key: str, files: list[Path]) -> None:
    """Every ``ind.<name>.*`` pickle holds only data (restricted unpickler) of consistent sizes; else one line naming the file."""
    objs = {}
    for path, suffix in zip(files, RAW_SUFFIXES):
        if suffix == "test.index":
            try:
                objs[suffix] = [int(line) for line in path.read_text().split()]
            except (ValueError, UnicodeDecodeError):
                raise UserError(f"{path} must hold one integer node index per line") from None
            continue
        obj = safe_unpickle(path, what="Planetoid raw file")
        ok = isinstance(obj, dict) if suffix == "graph" else getattr(obj, "ndim", 0) == 2
        if not ok:
            raise UserError(f"{path} holds a {type(obj).__name__}, not the {'adjacency dict' if suffix == 'graph' else 'matrix'} expected")
        objs[suffix] = obj
    for a, b in (("x", "y"), ("tx", "ty"), ("allx", "ally"), ("tx", "test.index")):
        na, nb = objs[a].shape[0], len(objs[b]) if b == "test.index" else objs[b].shape[0]
        if na != nb:
            raise UserError(f"dataset {key!r}: ind.{key}.{a} has {na} rows but ind.{key}.{b} {nb} ({files[0].parent})")


def planetoid_available(name: str, root: str | Path) -> bool:
    """True when all raw files of ``name`` are present under ``root`` (used to skip PubMed)."""
    return not _missing_raw_files(_canonical(name), Path(root))


def load_planetoid(name: str, root: str | Path, *, normalize_features: bool = True) -> Data:
    """Load ``name`` from ``root/<Name>/raw`` with the public split; never downloads.

    Args:
        name: ``"cora"``, ``"citeseer"`` or ``"pubmed"`` (case-insensitive).
        root: writable directory holding ``<Name>/raw/ind.<name>.*``; PyG writes ``processed/``
            next to ``raw/``.
        normalize_features: row-normalise the bag-of-words features to sum 1 (what DGL's
            citation datasets, and hence the FF-G2M and GLNN code, feed to the models).

    Returns:
        A :class:`~torch_geometric.data.Data` with ``x`` (float32), ``y``, an undirected
        ``edge_index`` without self-loops, and ``train_mask``/``val_mask``/``test_mask``.
    """
    key = _canonical(name)
    root = Path(root)
    check_root(root, f"Planetoid dataset {key!r}")
    missing = _missing_raw_files(key, root)
    if missing:
        listed = ", ".join(p.name for p in missing)
        raise UserError(
            f"dataset {key!r}: raw files missing under {str(root / PLANETOID_NAMES[key] / 'raw')!r}: {listed} "
            f"(expected ind.{key}.{{{','.join(RAW_SUFFIXES)}}}; copy them there, nothing is downloaded)"
        )
    from torch_geometric.datasets import Planetoid

    raw = [root / PLANETOID_NAMES[key] / "raw" / f"ind.{key}.{suffix}" for suffix in RAW_SUFFIXES]
    fingerprint = fingerprint_files(raw)
    processed = root / PLANETOID_NAMES[key] / "processed"
    stale = cache_is_stale(processed, fingerprint)
    if stale or not processed.exists():
        _validate_raw(key, raw)  # PyG unpickles these: only after the restricted unpickler accepted them
    try:
        data = Planetoid(str(root), PLANETOID_NAMES[key], split="public", force_reload=stale)[0]
    except Exception as exc:  # noqa: BLE001 - corrupt pickles raise many types
        raise UserError(f"dataset {key!r} under {str(root)!r} could not be read: {exc}") from exc
    mark_cache(processed, fingerprint)
    data.x = data.x.float()
    if normalize_features:
        data.x = data.x / data.x.sum(dim=1, keepdim=True).clamp_min(1e-12)
    data.name = key
    return data
