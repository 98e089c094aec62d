"""Serving a distilled GNN-to-MLP student: a self-contained file, prediction without a graph, export.

GLNN (Zhang et al., ICLR 2022, Section 5.5) distils a GNN into an MLP so that inference needs the
node's own features only, no neighbourhood fetch. This module makes the trained MLP deployable:

* :func:`save_student` writes one file (:data:`STUDENT_FORMAT`, via :func:`condense.utils.atomic_save`,
  which adds a content checksum): the MLP's weights and constructor arguments, the feature
  preprocessing the training data went through (a :data:`PREPROCESSING` key, applied again at
  serving time so callers pass *raw* features), the class names, the training configuration and the
  SHA-256 of the teacher's state dict (:func:`condense.safeio.fingerprint_tensors`).
* :func:`load_student` reads it back with ``weights_only=True`` into a :class:`ServedStudent`
  (``nn.Module``: raw features -> logits) whose ``meta`` holds everything but the weights.
* :func:`predict` validates a feature matrix and returns ``(logits, classes)``.
* :func:`export_student` writes a ``torch.export`` program (``.pt2``, batch size dynamic) and, when
  the optional ``onnx`` extra is installed, an ONNX model; both compute the same logits.

``python -m graphs.g2m predict STUDENT --features X.npy`` and ``python -m graphs.g2m export STUDENT
--out S.pt2`` are the command-line equivalents (:func:`main`).
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from condense.safeio import CLIParser, check_values, input_flag, output_flag
from condense.utils import UserError, atomic_save, atomic_write_bytes, safe_load
from graphs.models.node import build_node_model

__all__ = ["STUDENT_FORMAT", "PREPROCESSING", "ServedStudent", "save_student", "load_student", "predict", "export_student",
           "load_exported", "main"]  # fmt: skip

STUDENT_FORMAT = "condense.g2m.student/v2"
#: earlier student files: weights only, no machine-readable preprocessing, so they cannot be served
_OLD_FORMATS = ("condense.g2m.student/v1",)
#: name of the metadata entry stored inside an exported ``.pt2``
EXPORT_META = "student.json"


@dataclass(frozen=True)
class Preprocessing:
    """A feature transform the training data went through; ``describes`` are the loaders' texts for it."""

    describes: tuple[str, ...]
    apply: Callable[[Tensor], Tensor]


def _row_sum(x: Tensor) -> Tensor:
    """Row normalisation to sum 1, exactly as :func:`graphs.data.planetoid.load_planetoid` applies it
    (DGL's citation sets, hence GLNN's and FF-G2M's inputs): ``x / max(x.sum(1), 1e-12)``."""
    return x / x.sum(dim=1, keepdim=True).clamp_min(1e-12)


#: preprocessing key -> transform; :func:`save_student` maps a loader's description to its key
PREPROCESSING: dict[str, Preprocessing] = {
    "none": Preprocessing(("none",), lambda x: x),
    "row-sum": Preprocessing(("row-normalised: x / x.sum(1) (rows summing to 0 kept)",), _row_sum),
}


def preprocessing_key(description: str) -> str:
    """The :data:`PREPROCESSING` key of a key or of a loader's ``feature_preprocessing`` text."""
    for key, prep in PREPROCESSING.items():
        if description == key or description in prep.describes:
            return key
    raise UserError(f"feature preprocessing {description!r} has no serving transform (known: {', '.join(PREPROCESSING)}); "
                    "the student cannot be served without it")  # fmt: skip


class ServedStudent(nn.Module):
    """Raw node features -> logits: the training preprocessing, then the MLP (no graph).

    ``meta`` holds the student file's metadata: ``in_dim``, ``out_dim``, ``class_names``,
    ``preprocessing``, ``teacher_checksum``, ``config``, ``method``, ... (everything but the weights).
    """

    def __init__(self, mlp: nn.Module, preprocessing: str, meta: dict[str, Any]) -> None:
        super().__init__()
        self.mlp = mlp
        self.preprocessing = preprocessing
        self._prep = PREPROCESSING[preprocessing].apply
        self.meta = meta

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self._prep(x))


def save_student(path: str | Path, mlp: nn.Module, *, model_kwargs: dict, class_names: list[str], feature_preprocessing: str,
                 teacher_checksum: str, **meta: Any) -> Path:  # fmt: skip
    """Write a servable student file (:data:`STUDENT_FORMAT`) atomically; returns the path.

    ``mlp`` is a :class:`graphs.models.node.MLP` built with ``model_kwargs``; ``feature_preprocessing``
    is a :data:`PREPROCESSING` key or a loader's description of it (an unknown one is refused before
    anything is written); ``meta`` (plain data: method, teacher, scores, config, versions, ...) is stored as is.
    """
    first = mlp.layers[0]
    in_dim, out_dim = first.in_features, mlp.layers[-1].out_features
    if len(class_names) != out_dim:
        raise UserError(f"{len(class_names)} class names for a student with {out_dim} outputs")
    return atomic_save(
        dict(format=STUDENT_FORMAT, model="mlp", in_dim=in_dim, out_dim=out_dim, model_kwargs=dict(model_kwargs),
             state_dict={k: v.detach().cpu() for k, v in mlp.state_dict().items()}, class_names=[str(c) for c in class_names],
             preprocessing=preprocessing_key(feature_preprocessing), feature_preprocessing=feature_preprocessing,
             teacher_checksum=teacher_checksum, **meta),
        path, what="g2m student",
    )  # fmt: skip


def load_student(path: str | Path) -> ServedStudent:
    """Rebuild a saved student (``weights_only`` load, checksum verified) in eval mode; its ``meta``
    holds the metadata. A file that is not a student is one :class:`UserError` line."""
    art = safe_load(path, what="g2m student")
    fmt = art.get("format")
    if fmt in _OLD_FORMATS:
        raise UserError(f"{path} is a student file of an earlier format ({fmt}) that does not record its feature preprocessing; "
                        f"train again with --out to write a servable one ({STUDENT_FORMAT})")  # fmt: skip
    if fmt != STUDENT_FORMAT:
        raise UserError(f"{path} is not a g2m student: expected format {STUDENT_FORMAT!r}, found {fmt!r}")
    mlp = build_node_model("mlp", art["in_dim"], art["out_dim"], **art["model_kwargs"])
    mlp.load_state_dict(art.pop("state_dict"))
    return ServedStudent(mlp, art["preprocessing"], art).eval()


_INTEGER_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_features(features: Any, in_dim: int, what: str = "features") -> Tensor:
    """A 2-D numeric, finite feature matrix of ``in_dim`` columns as float32 (one :class:`UserError` line otherwise)."""
    if isinstance(features, np.ndarray):
        if features.dtype.kind not in "biuf":
            raise UserError(f"{what}: dtype {features.dtype} is not numeric (expected float or integer features)")
        features = torch.from_numpy(np.ascontiguousarray(features))
    if not torch.is_tensor(features):
        raise UserError(f"{what}: expected a numpy array or tensor, got {type(features).__name__}")
    if not (features.is_floating_point() or features.dtype in _INTEGER_DTYPES):
        raise UserError(f"{what}: dtype {features.dtype} is not a real number type (expected float or integer features)")
    if features.dim() != 2:
        raise UserError(f"{what}: expected a 2-D array (nodes x features), got shape {tuple(features.shape)}")
    if features.size(0) == 0:
        raise UserError(f"{what}: no rows (nodes) to predict")
    if features.size(1) != in_dim:
        raise UserError(f"{what}: {features.size(1)} feature columns, but the student was trained on {in_dim}")
    features = features.to(torch.float32)
    check_values(features, what)
    return features


@torch.no_grad()
def predict(student: ServedStudent, features: Any, *, batch_size: int = 65536) -> tuple[Tensor, Tensor]:
    """``(logits, classes)`` of every row of raw ``features`` (numpy or tensor, ``n x in_dim``), in chunks."""
    x = check_features(features, student.meta["in_dim"])
    student.eval()
    logits = torch.cat([student(chunk) for chunk in x.split(batch_size)])
    return logits, logits.argmax(dim=1)


def _onnx_missing() -> str | None:
    """Why the ONNX export cannot run here, or None."""
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    return f"ONNX export needs {' and '.join(missing)}: pip install 'condense[onnx]'" if missing else None


def export_student(student: ServedStudent, path: str | Path, *, onnx_path: str | Path | None = None) -> Path:
    """Write ``student`` as a ``torch.export`` program (raw features -> logits, dynamic batch size) to
    ``path`` (``.pt2``, the metadata as its ``student.json`` extra file) and, with ``onnx_path``, as ONNX
    (needs the ``onnx`` extra; refused before anything is written otherwise). Returns ``path``."""
    if Path(path).suffix != ".pt2":
        raise UserError(f"the exported program's name must end in .pt2 (torch.export.load requires it), got {path}")
    if onnx_path is not None and _onnx_missing():
        raise UserError(_onnx_missing())
    student.eval()
    example = torch.zeros(2, student.meta["in_dim"])
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(student, (example,), dynamic_shapes={"x": {0: batch}})
    meta = {k: student.meta[k] for k in ("format", "in_dim", "out_dim", "class_names", "preprocessing", "feature_preprocessing",
                                          "teacher_checksum", "method", "teacher") if k in student.meta}  # fmt: skip
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files={EXPORT_META: json.dumps(meta)})
    if onnx_path is not None:
        onnx_buf = io.BytesIO()
        onnx_log = logging.getLogger("torch.onnx")
        level = onnx_log.level
        onnx_log.setLevel(logging.ERROR)  # the exporter's notes (torchvision ops skipped, deprecations) are not the user's concern
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx_program = torch.onnx.export(student, (example,), dynamo=True, dynamic_shapes={"x": {0: batch}}, verbose=False,
                                                 input_names=["features"], output_names=["logits"])  # fmt: skip
        finally:
            onnx_log.setLevel(level)
        onnx_program.save(onnx_buf)
        atomic_write_bytes(onnx_buf.getvalue(), onnx_path, what="ONNX student")
    return atomic_write_bytes(buf.getvalue(), path, what="exported student")


def _check_archive(path: str | Path) -> None:
    """Refuse a ``.pt2`` whose loading would unpickle more than tensors: ``torch.export.load`` reads
    pickled weights, constants and sample inputs with ``weights_only=False``; a student's archive has
    raw tensor payloads only, and its sample inputs load with ``weights_only=True``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(n.endswith("/archive_format") for n in names) or not any(n.endswith(f"/extra/{EXPORT_META}") for n in names):
                raise UserError(f"{path} is not an exported student (no torch.export archive with {EXPORT_META}; write one with "
                                "python -m graphs.g2m export)")  # fmt: skip
            for name in names:
                if name.endswith("_config.json") and "/data/" in name:
                    for fqn, payload in json.loads(archive.read(name)).get("config", {}).items():
                        if payload.get("use_pickle") or not str(payload.get("path_name", "")).startswith(("weight_", "tensor_")):
                            raise UserError(f"{path}: refusing to load {fqn!r}, a pickled payload (an exported student stores raw tensors only)")
                elif name.endswith(".pt"):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        torch.load(io.BytesIO(archive.read(name)), weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile, json and torch.load raise many types for foreign files
        raise UserError(f"{path} is not an exported student ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})") from None


def load_exported(path: str | Path) -> tuple[Callable[[Tensor], Tensor], dict]:
    """``(module, meta)`` of a program written by :func:`export_student` (``module(x)`` -> logits);
    archives holding pickled objects are refused first (:func:`_check_archive`)."""
    _check_archive(path)
    extra = {EXPORT_META: ""}
    try:
        program = torch.export.load(io.BytesIO(Path(path).read_bytes()), extra_files=extra)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign files
        raise UserError(f"{path} is not an exported student ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})") from None
    return program.module(), json.loads(extra[EXPORT_META])


# --------------------------------------------------------------------------------------------- CLI


def _read_features(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"--features {path} is not a readable .npy array ({str(exc).splitlines()[0][:160]})") from None


def _predict_parser() -> argparse.ArgumentParser:
    p = CLIParser(prog="python -m graphs.g2m predict",
                  description="Classify nodes from their raw features with a saved student (no graph needed).")  # fmt: skip
    p.add_argument("student", metavar="STUDENT", help="a student written by python -m graphs.g2m --out", **input_flag())
    p.add_argument("--features", required=True, help="raw node features, a 2-D .npy (nodes x features), as the training loader read them",
                   **input_flag())  # fmt: skip
    p.add_argument("--out", default=None, help="write the predicted class indices (int64 .npy); default: print one class name per line",
                   **output_flag())  # fmt: skip
    p.add_argument("--logits", action="store_true", help="with --out: write the logits (float32, nodes x classes) instead")
    return p


def _export_parser() -> argparse.ArgumentParser:
    p = CLIParser(prog="python -m graphs.g2m export", description="Export a saved student with torch.export (and ONNX).")
    p.add_argument("student", metavar="STUDENT", help="a student written by python -m graphs.g2m --out", **input_flag())
    p.add_argument("--out", required=True, help="the torch.export program (.pt2; load with torch.export.load)", **output_flag())
    p.add_argument("--onnx", default=None, help="also write an ONNX model (needs the onnx extra)", **output_flag())
    return p


def _predict(argv: list[str]) -> int:
    args = _predict_parser().parse_args(argv)
    if args.logits and args.out is None:
        raise UserError("--logits applies to --out only (the printed predictions are class names)")
    student = load_student(args.student)
    logits, classes = predict(student, _read_features(args.features), batch_size=65536)
    names = student.meta["class_names"]
    if args.out is None:
        print("\n".join(names[c] for c in classes.tolist()))
        return 0
    buf = io.BytesIO()
    np.save(buf, (logits if args.logits else classes).numpy(), allow_pickle=False)
    atomic_write_bytes(buf.getvalue(), args.out, what="predictions")
    counts = torch.bincount(classes, minlength=len(names)).tolist()
    print(f"{len(classes)} nodes -> {args.out} ({'logits' if args.logits else 'class indices'}); per class: "
          + ", ".join(f"{n}={c}" for n, c in zip(names, counts) if c))
    return 0


def _export(argv: list[str]) -> int:
    args = _export_parser().parse_args(argv)
    student = load_student(args.student)
    export_student(student, args.out, onnx_path=args.onnx)
    print(f"exported -> {args.out} (torch.export; torch.export.load(path).module()(features) gives the logits)"
          + (f", {args.onnx} (ONNX)" if args.onnx else ""))
    return 0


#: ``python -m graphs.g2m SUBCOMMAND ...``
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {"predict": _predict, "export": _export}


def main(argv: list[str]) -> int:
    """Run ``argv[0]`` (a :data:`SUBCOMMANDS` name) on ``argv[1:]``; wrapped by ``graphs.g2m``'s ``cli_main``."""
    return SUBCOMMANDS[argv[0]](argv[1:])
