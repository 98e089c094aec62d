"""The bad-input table of the CLI fuzz test: ``(cli, argv)`` pairs and the working directory they run in.

Every case must be rejected before any work starts: exit 2, one ``error:`` line on stderr, no traceback,
and no pre-existing file of the working directory changed. Budgets are tiny so that a case the code
fails to reject still finishes quickly (and is then counted as "silent").
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

HUGE = str(2**70)
TINY_DM = ["--iterations", "1", "--batch-real", "4", "--width", "8", "--no-progress"]
DM = ["distill", "--method", "dm", "--ipc", "1", *TINY_DM]
DAFL = ["distill", "--method", "dafl", "--teacher", "teacher.pt", "--student", "lenet5_half", "--resize", "32",
        "--iterations", "1", "--batch-size", "8", "--ngf", "4", "--no-progress"]
MIRAGE = ["--epochs", "1", "--restarts", "1", "--no-baseline", "--no-progress"]
G2M = ["--nodes", "300", "--features", "8", "--max-epochs", "1", "--no-progress"]

_EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"

#: every command line: its name in :data:`CASES` -> the module whose ``main(argv)`` runs it (every
#: ``experiments`` module with a ``main`` is found by itself, so a new one cannot be left out)
MODULES: dict[str, str] = {
    "condense": "condense.cli", "synth": "synth.cli", "graphs.mirage": "graphs.mirage.__main__", "graphs.g2m": "graphs.g2m.__main__",
    **{f"experiments.{p.stem}": f"experiments.{p.stem}" for p in sorted(_EXPERIMENTS.glob("*.py"))
       if re.search(r"^def main\(", p.read_text(), re.M)},
}  # fmt: skip

#: (module whose ``main(argv)`` is called, argv)
CASES: list[tuple[str, list[str]]] = [
    # ---- python -m condense distill
    ("condense", ["distill", "--method", "dm", "--ipc", "0", "--out", "o.pt", *TINY_DM]),
    ("condense", ["distill", "--method", "dm", "--ipc", "1", "--out", "o.pt", "--iterations", "1", "--batch-real", "0", "--no-progress"]),
    ("condense", [*DM, "--out", "o.pt", "--seed", HUGE]),
    ("condense", [*DM, "--out", "o.pt", "--seed", "-1"]),
    ("condense", [*DM, "--out", "o.pt", "--resize", "100000"]),
    ("condense", [*DM, "--out", "o.pt", "--resize", "0"]),
    ("condense", [*DM, "--out", "o.pt", "--zca", "--zca-eps", "nan"]),
    ("condense", [*DM, "--out", "o.pt", "--lr-img", "inf"]),
    ("condense", [*DM, "--out", "o.pt", "--png", "o.pt"]),
    ("condense", [*DM, "--out", "syn.pt", "--png", "syn.pt"]),
    ("condense", [*DM, "--out", "notes.txt/o.pt"]),
    ("condense", [*DM, "--out", "/proc/nonexistent/o.pt"]),
    ("condense", [*DM, "--out", "."]),
    ("condense", [*DM, "--out", "o.pt", "--png", "notes.txt/o.png"]),
    ("condense", [*DM, "--out", "o.pt", "--checkpoint", "notes.txt", "--checkpoint-every", "1"]),
    ("condense", [*DM, "--out", "o.pt", "--checkpoint", "syn.pt", "--checkpoint-every", "1"]),
    ("condense", [*DM, "--out", "o.pt", "--checkpoint", "o.pt", "--checkpoint-every", "1"]),
    ("condense", [*DM, "--out", "o.pt", "--checkpoint", "other.ckpt", "--checkpoint-every", "1"]),
    ("condense", [*DM, "--out", "o.pt", "--resume"]),
    ("condense", [*DM, "--out", "o.pt", "--checkpoint-every", "-1"]),
    ("condense", [*DM, "--out", "o.pt", "--dataset", "mnist", "--root", "/etc/passwd"]),
    ("condense", [*DM, "--out", "o.pt", "--dataset", "mnist"]),
    ("condense", [*DM, "--out", "o.pt", "--dataset", "mnist", "--root", "data/mnist_trunc"]),
    ("condense", [*DM, "--out", "o.pt", "--dataset", "nope"]),
    ("condense", [*DM, "--out", "o.pt", "--device", "cuda:7"]),
    ("condense", [*DM, "--out", "o.pt", "--device", "banana"]),
    ("condense", [*DM, "--out", "o.pt", "--bogus-flag"]),
    ("condense", ["distill", "--method", "nope", "--ipc", "1", "--out", "o.pt"]),
    ("condense", ["distill", "--method", "dm", "--ipc", "x", "--out", "o.pt"]),
    ("condense", ["--bogus"]),
    # ---- evaluate / show / demo / experts
    ("condense", ["evaluate", "bad.pt", "--num-evals", "1", "--epochs", "1"]),
    ("condense", ["evaluate", "missing.pt", "--num-evals", "1", "--epochs", "1"]),
    ("condense", ["evaluate", "notes.txt", "--num-evals", "1", "--epochs", "1"]),
    ("condense", ["evaluate", "syn.pt", "--models", ",", "--num-evals", "1", "--epochs", "1"]),
    ("condense", ["evaluate", "syn.pt", "--models", "nope", "--num-evals", "1", "--epochs", "1"]),
    ("condense", ["evaluate", "syn.pt", "--num-evals", "0", "--epochs", "1"]),
    ("condense", ["evaluate", "syn.pt", "--num-evals", "1", "--epochs", "-1"]),
    ("condense", ["evaluate", "syn_badlabel.pt", "--num-evals", "1", "--epochs", "1", "--no-progress"]),
    ("condense", ["evaluate", "syn_softnan.pt", "--num-evals", "1", "--epochs", "1", "--no-progress"]),
    ("condense", ["show", "syn.pt", "--png", "syn.pt"]),
    ("condense", ["show", "syn.pt", "--png", "notes.txt/x.png"]),
    ("condense", ["show", "syn.pt", "--png", "g.png", "--max-per-class", "0"]),
    ("condense", ["show", "syn_badlabel.pt", "--png", "g.png"]),
    ("condense", ["show", "syn_softneg.pt", "--png", "g.png"]),
    ("condense", ["show", "payload.pt", "--png", "g.png"]),
    ("condense", ["demo", "--ipc", "0", "--iterations", "1", "--num-evals", "1", "--eval-epochs", "1", "--full-epochs", "1"]),
    ("condense", ["demo", "--num-evals", "0", "--iterations", "1", "--eval-epochs", "1", "--full-epochs", "1"]),
    ("condense", ["demo", "--out-dir", "notes.txt", "--iterations", "1", "--num-evals", "1", "--eval-epochs", "1", "--full-epochs", "1"]),
    ("condense", ["experts", "--num-experts", "0", "--epochs", "1", "--out", "ex"]),
    ("condense", ["experts", "--num-experts", "1", "--epochs", "1", "--out", "notes.txt"]),
    # ---- python -m graphs.mirage
    ("graphs.mirage", ["--hops", "1", "--support", "inf", *MIRAGE]),
    ("graphs.mirage", ["--hops", "1", "--support", "0", *MIRAGE]),
    ("graphs.mirage", ["--hops", "1", "--support", "-1", *MIRAGE]),
    ("graphs.mirage", ["--hops", "0", "--support", "0.5", *MIRAGE]),
    ("graphs.mirage", ["--hops", "1", "--support", "0.5", *MIRAGE, "--out", "m.pt", "--checkpoint", "m.pt"]),
    ("graphs.mirage", ["--hops", "1", "--support", "0.5", "--epochs", "0", "--restarts", "1", "--no-baseline", "--no-progress"]),
    ("graphs.mirage", ["--hops", "1", "--support", "0.5", "--restarts", "0", "--epochs", "1", "--no-baseline", "--no-progress"]),
    ("graphs.mirage", ["--hops", "1", "--support", "0.5", "--lr", "nan", *MIRAGE]),
    ("graphs.mirage", ["--hops", "1", "--support", "0.5", "--dropout", "1.5", *MIRAGE]),
    ("graphs.mirage", ["--hops", "1", "--support", "0.5", "--seed", HUGE, *MIRAGE]),
    ("graphs.mirage", ["--hops", "1", "--support", "0.5", "--device", "cuda:7", *MIRAGE]),
    ("graphs.mirage", ["--hops", "1", "--support", "0.5", "--out", "notes.txt/d.pt", *MIRAGE]),
    ("graphs.mirage", ["--hops", "1", "--support", "0.5", "--out", ".", *MIRAGE]),
    ("graphs.mirage", ["--hops", "1", "--support", "0.5", "--out", "syn.pt", "--top", "0", *MIRAGE]),
    ("graphs.mirage", ["--dataset", "MUTAG", *MIRAGE]),
    ("graphs.mirage", ["--dataset", "MUTAG", "--root", "/etc/passwd", *MIRAGE]),
    ("graphs.mirage", ["--dataset", "MUTAG", "--root", "data/tu_trunc", *MIRAGE]),
    ("graphs.mirage", ["--bins", "0", *MIRAGE]),
    # ---- python -m graphs.g2m
    ("graphs.g2m", [*G2M, "--out", "g2m/teacher.pt"]),
    ("graphs.g2m", [*G2M, "--out", "s.pt", "--teacher-out", "s.pt"]),
    ("graphs.g2m", [*G2M, "--out", "teacher.pt"]),
    ("graphs.g2m", [*G2M, "--out", "/proc/nonexistent/s.pt"]),
    ("graphs.g2m", [*G2M, "--out", "notes.txt/s.pt"]),
    ("graphs.g2m", [*G2M, "--out", "s.pt", "--split-rate", "2"]),
    ("graphs.g2m", ["--nodes", "300", "--features", "8", "--max-epochs", "0", "--out", "s.pt", "--no-progress"]),
    ("graphs.g2m", ["--nodes", "0", "--features", "8", "--max-epochs", "1", "--out", "s.pt", "--no-progress"]),
    ("graphs.g2m", [*G2M, "--out", "s.pt", "--degree", "inf"]),
    ("graphs.g2m", [*G2M, "--out", "s.pt", "--seed", HUGE]),
    ("graphs.g2m", [*G2M, "--out", "s.pt", "--dataset", "cora"]),
    ("graphs.g2m", [*G2M, "--out", "s.pt", "--dataset", "cora", "--root", "/etc/passwd"]),
    ("graphs.g2m", [*G2M, "--out", "s.pt", "--dataset", "cora", "--root", "data/planetoid_payload"]),
    ("graphs.g2m", [*G2M, "--out", "s.pt", "--lamb", "nan"]),
    ("graphs.g2m", [*G2M, "--out", "s.pt", "--device", "cuda:7"]),
    ("graphs.g2m", ["export", "missing.pt", "--out", "s.pt2", "--onnx", "s.pt2"]),
    ("graphs.g2m", [*G2M, "--out", "s.pt", "--checkpoint", "s.pt"]),
    ("graphs.g2m", ["predict", "missing.pt", "--features", "x.npy", "--out", "x.npy"]),
    # ---- python -m synth
    ("synth", ["teacher", "--epochs", "0", "--out", "t.pt", "--no-progress"]),
    ("synth", ["teacher", "--resize", "100000", "--random", "--out", "t.pt"]),
    ("synth", ["teacher", "--random", "--out", "notes.txt/t.pt"]),
    ("synth", ["teacher", "--batch-size", "0", "--epochs", "1", "--out", "t.pt", "--no-progress"]),
    ("synth", ["teacher", "--lr", "-1", "--epochs", "1", "--out", "t.pt", "--no-progress"]),
    ("synth", ["teacher", "--random", "--seed", HUGE, "--out", "t.pt"]),
    ("synth", ["teacher", "--random", "--arch", "nope", "--out", "t.pt"]),
    ("synth", [*DAFL, "--out", "teacher.pt"]),
    ("synth", [*DAFL[:4], "missing.pt", *DAFL[5:], "--out", "s.pt"]),
    ("synth", [*DAFL[:4], "bad.pt", *DAFL[5:], "--out", "s.pt"]),
    ("synth", [*DAFL[:4], "notes.txt", *DAFL[5:], "--out", "s.pt"]),
    ("synth", [*DAFL[:4], "nan_teacher.pt", *DAFL[5:], "--out", "s.pt"]),
    ("synth", [*DAFL, "--out", "s.pt", "--synset-size", "0", "--synset", "ss.pt"]),
    ("synth", [*DAFL, "--out", "s.pt", "--synset", "s.pt"]),
    ("synth", [*DAFL, "--out", "s.pt", "--synset", "teacher.pt"]),
    ("synth", [*DAFL[:6], "nope", *DAFL[7:], "--out", "s.pt"]),
    ("synth", [*DAFL, "--out", "s.pt", "--checkpoint", "notes.txt"]),
    ("synth", [*DAFL, "--out", "s.pt", "--checkpoint", "teacher.pt"]),
    ("synth", [*DAFL, "--out", "s.pt", "--checkpoint-every", "0", "--checkpoint", "c.ckpt"]),
    ("synth", [*DAFL, "--out", "s.pt", "--lr-s", "inf"]),
    ("synth", [*DAFL[:-5], "--batch-size", "0", "--ngf", "4", "--no-progress", "--out", "s.pt"]),
    ("synth", ["distill", "--method", "nope", "--teacher", "teacher.pt", "--out", "s.pt"]),
    ("synth", [*DAFL, "--out", "s.pt", "--device", "cuda:7"]),
    ("synth", ["bogus"]),
    # ---- experiments
    ("experiments.matching", ["--ipcs", "0"]),
    ("experiments.matching", ["--threads", "0"]),
    ("experiments.matching", ["--out-dir", "notes.txt", "--figure-only"]),
    ("experiments.matching", ["--methods", ",", "--figure-only"]),
    ("experiments.matching", ["--seed", HUGE, "--figure-only"]),
    ("experiments.trajectory", ["--threads", "0", "--datasets", "digits"]),
    ("experiments.trajectory", ["--datasets", "fashion_mnist"]),  # no --root: nothing to read, said before any work
    ("experiments.trajectory", ["--out", "notes.txt/x.md", "--datasets", "digits"]),
    ("experiments.trajectory", ["--work", "notes.txt", "--datasets", "digits"]),
    ("experiments.mirage", ["--json", "notes.txt/x.json", "--datasets", "nope"]),
    ("experiments.mirage", ["--sweep-supports", "inf", "--sweep", "MUTAG"]),
    ("experiments.g2m", ["--json", "notes.txt/x.json"]),
    ("experiments.g2m", ["--threads", "0"]),
    ("experiments.g2m", ["--seeds", HUGE]),
    ("experiments.synth", ["--out", "notes.txt/x.md"]),
    ("experiments.synth", ["--resize", "100000"]),
    ("experiments.synth", ["--val-fraction", "1.5", "--split", "val"]),
    ("experiments.synth", ["--seeds", "-1"]),
    # ---- every flag that takes a path or a size (test_path_flags.py checks that none is missing): a path
    # inside a file or a symlink loop, a size beyond 64 bits; all refused while parsing
    ("condense", [*DM, "--out", "o.pt", "--image-size", HUGE]),
    ("condense", [*DM, "--out", "o.pt", "--cache-dir", "notes.txt"]),
    ("condense", ["distill", "--method", "mtt", "--ipc", "1", "--out", "o.pt", "--experts", "loop", "--no-progress"]),
    ("condense", ["distill", "--method", "mtt", "--ipc", "1", "--out", "o.pt", "--batch-syn", HUGE, "--no-progress"]),
    ("condense", ["distill", "--method", "dc", "--ipc", "1", "--out", "o.pt", "--batch-train", HUGE, "--no-progress"]),
    ("condense", ["distill", "--method", "dsa", "--ipc", "1", "--out", "o.pt", "--bn-batch-per-class", HUGE, "--no-progress"]),
    ("condense", ["demo", "--method", "mtt", "--experts", "loop", "--iterations", "1", "--num-evals", "1", "--eval-epochs", "1",
                  "--full-epochs", "1"]),
    ("condense", ["evaluate", "syn.pt", "--state", "notes.txt/s.pt", "--num-evals", "1", "--epochs", "1"]),
    ("condense", ["evaluate", "syn.pt", "--cache-dir", "notes.txt", "--num-evals", "1", "--epochs", "1"]),
    ("condense", ["evaluate", "syn.pt", "--image-size", HUGE, "--num-evals", "1", "--epochs", "1"]),
    ("condense", ["show", "syn.pt", "--curve", "notes.txt/c.png"]),
    ("condense", ["experts", "--num-experts", "1", "--epochs", "1", "--out", "ex", "--batch-size", HUGE]),
    ("condense", ["experts", "--num-experts", "1", "--epochs", "1", "--out", "ex", "--cache-dir", "notes.txt"]),
    ("synth", ["teacher", "--random", "--out", "t.pt", "--root", "loop"]),
    ("synth", ["teacher", "--random", "--out", "t.pt", "--cache-dir", "notes.txt"]),
    ("synth", ["teacher", "--random", "--out", "t.pt", "--image-size", HUGE]),
    ("synth", [*DAFL, "--out", "s.pt", "--root", "loop"]),
    ("synth", ["distill", "--method", "random", "--teacher", "teacher.pt", "--out", "s.pt", "--hidden", HUGE]),
    ("synth", ["distill", "--method", "meta", "--teacher", "teacher.pt", "--out", "s.pt", "--kd-batch-size", HUGE]),
    ("synth", ["distill", "--method", "meta", "--teacher", "teacher.pt", "--out", "s.pt", "--pool-size", HUGE]),
    ("graphs.g2m", [*G2M, "--out", "s.pt", "--batch-size", HUGE]),
    ("graphs.mirage", ["--hops", "1", "--support", "0.5", "--max-itemsets", HUGE, *MIRAGE]),
    ("experiments.bench_data", ["--images", HUGE]),
    ("experiments.bench_data", ["--ratio-images", HUGE]),
    ("experiments.bench_data", ["--out", "notes.txt/x.md"]),
    ("experiments.bench_data", ["--workdir", "notes.txt"]),
    ("experiments.bench_device", ["--out", "notes.txt/x.md"]),
    ("experiments.bench_distributed", ["--out", "notes.txt/x.md"]),
    ("experiments.bench_evaluate", ["--out", "notes.txt/x.md"]),
    ("experiments.bench_evaluate", ["--root", "loop"]),
    ("experiments.bench_evaluate", ["--test-size", HUGE]),
    ("experiments.bench_evaluate", ["--width", HUGE]),
    ("experiments.bench_g2m_scale", ["--features", HUGE]),
    ("experiments.bench_g2m_scale", ["--nodes", HUGE]),
    ("experiments.bench_g2m_scale", ["--student-hidden", HUGE]),
    ("experiments.bench_g2m_scale", ["--out", "notes.txt/x.md"]),
    ("experiments.bench_inference", ["--batch-sizes", HUGE]),
    ("experiments.bench_inference", ["--json", "notes.txt/x.json"]),
    ("experiments.bench_matching", ["--batch-real", HUGE]),
    ("experiments.bench_matching", ["--width", HUGE]),
    ("experiments.bench_matching", ["--json", "notes.txt/x.json"]),
    ("experiments.bench_mirage", ["--hops", HUGE]),
    ("experiments.bench_mirage", ["--shared", "loop"]),
    ("experiments.bench_threads", ["--out", "notes.txt/x.md"]),
    ("experiments.bench_unroll", ["--out", "notes.txt/x.md"]),
    ("experiments.bench_unroll", ["--json", "notes.txt/x.json"]),
    ("experiments.g2m", ["--root", "loop"]),
    ("experiments.g2m", ["--json", "r.json", "--state", "r.json"]),
    ("experiments.matching", ["--root", "loop"]),
    ("experiments.matching", ["--json", "loop/x.json", "--figure-only"]),
    ("experiments.mirage", ["--bins", HUGE]),
    ("experiments.mirage", ["--json", "r.json", "--state", "r.json", "--datasets", "nope"]),
    ("experiments.mirage", ["--cv-batch-size", HUGE]),
    ("experiments.mirage", ["--cv-hidden", HUGE]),
    ("experiments.mirage", ["--hops", HUGE]),
    ("experiments.mirage", ["--sweep-hops", HUGE]),
    ("experiments.mirage", ["--max-itemsets", HUGE]),
    ("experiments.mirage", ["--root", "loop"]),
    ("experiments.mirage", ["--shared", "loop"]),
    ("experiments.synth", ["--cache", "notes.txt"]),
    ("experiments.synth", ["--json", "notes.txt/x.json"]),
    ("experiments.synth", ["--root", "loop"]),
    ("experiments.trajectory", ["--json", "notes.txt/x.json"]),
    ("experiments.trajectory", ["--root", "loop"]),
]


def make_workdir(root: Path) -> None:
    """The files the cases point at: a good SyntheticSet, a teacher, foreign and damaged files, bad data roots."""
    from condense.data import load_dataset
    from condense.synset import FORMAT
    from condense.utils import atomic_save
    from synth.teachers import random_teacher, save_model

    root.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("digits")
    (root / "notes.txt").write_text("a user's notes, not an artifact\n")
    if not (root / "loop").is_symlink():
        (root / "loop").symlink_to("loop")  # a symlink loop
    (root / "bad.pt").write_bytes(b"\x80\x04garbage" * 10)
    meta = {"method": "random", "dataset": ds.describe(), "ipc": 1}
    images, labels = torch.randn(10, 1, 8, 8), torch.arange(10)
    atomic_save({"format": FORMAT, "images": images, "labels": labels, "lr": None, "meta": meta}, root / "syn.pt")
    bad = labels.clone()
    bad[3] = 12
    atomic_save({"format": FORMAT, "images": images, "labels": bad, "lr": None, "meta": meta}, root / "syn_badlabel.pt")
    soft = torch.full((10, 10), 0.1)
    soft[0, 0] = float("nan")
    atomic_save({"format": FORMAT, "images": images, "labels": soft, "lr": None, "meta": meta}, root / "syn_softnan.pt")
    atomic_save({"format": FORMAT, "images": images, "labels": soft.abs().nan_to_num(0.1) - 0.2, "lr": None, "meta": meta}, root / "syn_softneg.pt")
    (root / "payload.pt").write_bytes(_pickle_payload(Path("PWNED")))  # relative: the command's working directory
    (root / "other.ckpt").write_bytes((root / "bad.pt").read_bytes())
    ds32 = load_dataset("digits", resize=32)
    teacher = random_teacher("lenet5", (1, 32, 32), 10, seed=0)
    save_model(teacher, root / "teacher.pt", dataset=ds32)
    with torch.no_grad():
        next(teacher.net.parameters()).fill_(float("nan"))
    save_model(teacher, root / "nan_teacher.pt", dataset=ds32)
    make_bad_roots(root / "data")


def _pickle_payload(marker: Path) -> bytes:
    """A pickle whose ``__reduce__`` would create ``marker`` if it were ever unpickled."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps({"data": Payload()}, protocol=2)


def make_bad_roots(data: Path) -> None:
    """A truncated MNIST root, a TU root with a garbled file, a Planetoid root whose ``ind.cora.x`` is a payload."""
    import gzip

    mnist = data / "mnist_trunc"
    mnist.mkdir(parents=True, exist_ok=True)
    header = b"\x00\x00\x08\x03" + (100).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (mnist / name).write_bytes(gzip.compress(header + bytes(1000))[:-12])  # truncated gzip stream
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (mnist / name).write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (100).to_bytes(4, "big") + bytes(100)))
    tu = data / "tu_trunc" / "MUTAG" / "raw"
    tu.mkdir(parents=True, exist_ok=True)
    (tu / "MUTAG_A.txt").write_text("1, 2\n2, 1\n2, 3\n3, 2\n4, 5\n5, x\n")
    (tu / "MUTAG_graph_indicator.txt").write_text("1\n1\n1\n2\n2\n")
    (tu / "MUTAG_graph_labels.txt").write_text("1\n")
    pl = data / "planetoid_payload" / "Cora" / "raw"
    pl.mkdir(parents=True, exist_ok=True)
    for suffix in ("x", "tx", "allx", "y", "ty", "ally", "graph"):
        (pl / f"ind.cora.{suffix}").write_bytes(_pickle_payload(Path("PWNED")))
    (pl / "ind.cora.test.index").write_text("1\n2\n")


def snapshot(root: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}
