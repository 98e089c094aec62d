"""The command-line flags every CLI shares: one ``--flag`` per config field, and the dataset flags built
from the loader registry (:data:`condense.data.LOADERS`), with the loading they drive.

Core module: the method packages (``condense.methods``, ``synth``) and the CLIs depend on it, never on
each other's command lines.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Mapping

from .data import LOADERS, ImageDataset, load_dataset
from .safeio import output_flag
from .utils import UserError

__all__ = ["add_config_flags", "config_from_args", "add_dataset_flags", "dataset_kwargs", "load_from_args", "load_recorded"]


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type, title: str,
                     field_kwargs: Mapping[str, Mapping[str, Any]] | None = None) -> None:  # fmt: skip
    """One ``--flag`` per field of a method's config dataclass (help text from field metadata);
    ``field_kwargs[name]`` adds argparse keywords to that field's flag."""
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        helptext = f"{f.metadata.get('help', '')} (default: {f.default})"
        extra = dict((field_kwargs or {}).get(f.name, {}))
        if isinstance(f.default, bool):
            group.add_argument(flag, dest=f"cfg_{f.name}", action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            group.add_argument(flag, dest=f"cfg_{f.name}", type=type(f.default), default=None, metavar=f.name.upper(), help=helptext,
                               **extra)  # fmt: skip


def config_from_args(config_cls: type, args: argparse.Namespace, preset: dict[str, Any] | None = None) -> Any:
    """Config = dataclass defaults, overridden by ``preset``, overridden by explicit flags.

    Only flags present on the command line reach the constructor, so configs that track explicit
    fields (MTT/AST, whose ``--preset`` fills the rest) see exactly the user's flags."""
    values = dict(preset or {})
    for f in dataclasses.fields(config_cls):
        v = getattr(args, f"cfg_{f.name}", None)
        if v is not None:
            values[f.name] = v
    return config_cls(**values)


def add_dataset_flags(p: argparse.ArgumentParser, *, default: str | None = "digits", zca: bool = True,
                      root_kwargs: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """``--dataset`` (any registered loader), ``--root`` (``root_kwargs``: extra argparse keywords) and the
    loading options; ``default=None`` lets ``evaluate`` take what the synthetic set records."""
    names = ", ".join(LOADERS)
    p.add_argument("--dataset", default=default, help=f"one of {names}" + (f" (default: {default})" if default else
                   " (default: the one the set records)"))  # fmt: skip
    p.add_argument("--root", default=None, help="the dataset's files: a directory, or the .npz for --dataset arrays (not needed for digits)",
                   **dict(root_kwargs or {}))  # fmt: skip
    p.add_argument("--resize", type=int, default=None, help="resize images to RESIZE x RESIZE (float, antialiased bilinear)")
    if zca:
        p.add_argument("--zca", action="store_true", help="ZCA-whiten raw [0, 1] pixels (no standardisation; fit on train), as MTT does")
        p.add_argument("--zca-eps", type=float, default=0.1, help="ZCA regulariser (default: 0.1)")
    g = p.add_argument_group("your own images")
    g.add_argument("--image-size", type=int, default=None,
                   help="decode image folders at S x S (shorter side resized, antialiased, then centre-cropped); "
                        "required when their sizes differ (ImageNet subsets: 128)")  # fmt: skip
    g.add_argument("--classes", default=None, help="comma-separated class names or ids to keep (relabelled 0..k-1)")
    g.add_argument("--skip-bad-images", action="store_true", default=None, help="leave out unreadable images (counted) instead of refusing")
    g.add_argument("--test-fraction", type=float, default=None, help="held-out test fraction of a folder without test/ or val/ (default: 0.2)")
    g.add_argument("--split-seed", type=int, default=None, help="seed of that split (default: 0)")
    g.add_argument("--storage", choices=("auto", "memory", "memmap"), default="auto",
                   help="memory: float tensors; memmap: the uint8 cache read per batch; auto: memmap above 2 GiB of float32 (default)")
    g.add_argument("--cache-dir", default=None, help="where uint8 caches go (default: next to the data when writable, else $CONDENSE_CACHE or ~/.cache/condense)", **output_flag(directory=True))


_OPTIONS = ("image_size", "classes", "skip_bad_images", "test_fraction", "split_seed")


def dataset_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`~condense.data.load_dataset` keywords the dataset flags ask for (explicit ones only)."""
    kw: dict[str, Any] = {k: getattr(args, k) for k in _OPTIONS if getattr(args, k, None) is not None}
    kw.update(resize=args.resize, storage=getattr(args, "storage", "auto"), cache_dir=getattr(args, "cache_dir", None))
    if getattr(args, "zca", False):
        kw.update(zca=True, zca_eps=args.zca_eps)
    return kw


def load_from_args(args: argparse.Namespace) -> ImageDataset:
    return load_dataset(args.dataset, args.root, **dataset_kwargs(args))


def load_recorded(meta_ds: Mapping[str, Any], args: argparse.Namespace) -> ImageDataset:
    """The dataset a synthetic set was distilled from, as its ``meta["dataset"]`` records it (loader, root,
    options, resize, ZCA), explicit flags overriding the record."""
    name = args.dataset or meta_ds.get("loader") or meta_ds.get("name")
    if not name:
        raise UserError("the synthetic set does not name its dataset; pass --dataset")
    root = args.root or (meta_ds.get("root") if name == (meta_ds.get("loader") or meta_ds.get("name")) else None)
    kw = {**dict(meta_ds.get("options") or {}), **dataset_kwargs(args)}
    if kw.get("resize") is None:
        kw["resize"] = (meta_ds.get("options") or {}).get("resize")
    if kw["resize"] is None and name == "digits":  # sets written before the resize was recorded
        size = (meta_ds.get("image_size") or [8])[0]
        kw["resize"] = size if size != 8 else None
    kw.update(zca=bool(meta_ds.get("zca")), zca_eps=meta_ds.get("zca_eps") or 0.1)
    return load_dataset(name, root, **kw)
