"""Figures of every experiment (``--figure-only`` on tiny JSON fixtures, two quick end-to-end runs), the
committed figures against the committed tables, ``condense show --curve`` and the entry points' ``--help``."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from condense.cli import main as condense_main
from condense.plotting import loss_curve, mean_std
from condense.utils import UserError
from experiments import bench_inference, bench_matching, bench_unroll, figures, g2m, matching, mirage, synth, trajectory

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_side: int = 300) -> None:
    """A complete PNG of sensible size: signature, IHDR dimensions, 5 kB .. 2 MB."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    width, height = struct.unpack(">II", data[16:24])
    assert min(width, height) >= min_side and max(width, height) <= 4000, (path, width, height)
    assert 5_000 < len(data) < 2_000_000, (path, len(data))


def _write(tmp_path: Path, name: str, payload: dict) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(payload))
    return path


FIXTURES = {
    "matching": (matching.main, {"scale": "cpu", "seed": 0, "rows": [
        {"dataset": "digits", "ipc": ipc, "method": m, "accs": {"convnet": [a, a + 0.01], "mlp": [a - 0.1]}}
        for ipc, base in ((1, 0.7), (10, 0.9)) for m, a in (("random", base), ("dm", base + 0.05))]}, ["matching_digits.png"]),
    "trajectory": (trajectory.main, {"scale": "cpu", "seed": 0, "sections": [
        {"dataset": "fashion_mnist", "ipc": ipc, "rows": [{"name": n, "images": 10 * ipc, "mean": a, "std": 0.5, "max_mean": a, "lr": None,
                                                            "seconds": 1} for n, a in (("random real", 50 + ipc), ("MTT", 60 + ipc))]}
        for ipc in (1, 10)] + [{"dataset": "digits", "ipc": 10, "rows": [
            {"name": f"row {i}", "images": 100, "mean": 90 + i, "std": 0.3, "max_mean": 91, "lr": 0.01, "seconds": 1} for i in range(4)]}]},
        ["trajectory.png"]),
    "mirage": (mirage.main, {"records": [{"dataset": "motifs", "metric": "rocauc", "seed": s, "results": [
        {"model": "gin", "method": m, "graphs": 10, "fraction": f, "top": [t + s / 100, 0.01], "final": [t, 0.02]}
        for m, f, t in (("full", 1.0, 0.9), ("random", 0.02, 0.6), ("herding", 0.02, 0.65), ("mirage", 0.021, 0.85))]} for s in (0, 1)]},
        ["mirage.png"]),
    "g2m": (g2m.main, {"scale": "cpu", "seeds": [0], "results": {"csbm": {"gcn": {"tran": {
        c: [{"tran": a, "latency_s": lat}] for c, a, lat in (("teacher", 0.95, 0.02), ("mlp", 0.6, 0.001), ("glnn", 0.94, 0.001),
                                                         ("ff-g2m", 0.95, 0.001))}}}}}, ["g2m.png"]),
    "bench_inference": (bench_inference.main, {"scale": "cpu", "rows": [
        {"nodes": n, "edges": 10 * n, "full": {"mlp": 1e5, "gcn": 1e4}, "single": {"mlp": 5e3, "gcn": 5e3 * 100 / n}} for n in (1000, 10000)]},
        ["bench_inference.png"]),
    "synth": (synth.main, {"dataset": "digits", "image_size": [32, 32], "scale": "cpu", "seeds": [0, 1], "rows": [
        {"name": n, "accs": a, "seconds": [1, 1]} for n, a in (("teacher LeNet-5", [98, 97]), ("student on real data", [96, 95]),
                                                               ("student on Gaussian noise, KD", [70, 75]), ("DAFL", [93, 90]))]},
        ["synth.png"]),
    "bench_unroll": (bench_unroll.main, {"scale": "cpu", "rows": [
        {"N": n, "backend": "func", "mode": m, "seconds": n * k, "peak_mb": 40 if m == "constant_memory" else 35 * n, "ratio": 3}
        for n in (10, 20) for m, k in (("full", 0.2), ("constant_memory", 0.3))]}, ["bench_unroll.png"]),
    "bench_matching": (bench_matching.main, {"scale": "cpu", "rows": [
        {"ipc": i, "method": m, "seconds": s * i, "peak_mb": 2.4 * i} for i in (1, 10) for m, s in (("dm", 0.03), ("dc", 0.3))]},
        ["bench_matching.png"]),
}


@pytest.mark.parametrize("kind", sorted(FIXTURES))
def test_figure_only_redraws_each_experiment_from_its_json(kind, tmp_path, capsys):
    main, payload, pngs = FIXTURES[kind]
    path = _write(tmp_path, kind, payload)
    extra = ["--out-dir", str(tmp_path / "sets")] if kind == "matching" else []
    assert main(["--figure-only", "--json", str(path), *extra]) == 0
    err = capsys.readouterr().err
    for name in pngs:
        assert_png(tmp_path / name)
        assert f"wrote figure: {tmp_path / name}" in err


@pytest.mark.parametrize("kind", sorted(FIXTURES))
def test_figure_only_needs_a_readable_json(kind, tmp_path, capsys):
    main = FIXTURES[kind][0]
    extra = ["--out-dir", str(tmp_path / "sets")] if kind == "matching" else []
    assert main(["--figure-only", "--json", str(tmp_path / "missing.json"), *extra]) == 2
    assert capsys.readouterr().err.strip().startswith("error: results JSON not found")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["--figure-only", "--json", str(bad), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_g2m_figure_of_an_inductive_only_run_plots_and_names_the_held_out_score(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "save_png", lambda fig, path: drawn.append(fig) or Path(path))
    payload = json.loads(json.dumps(FIXTURES["g2m"][1]))
    cols = payload["results"]["csbm"]["gcn"].pop("tran")
    for c, rows in cols.items():  # observed-test (tran) and held-out (ind) scores that differ
        rows[0].update(tran=0.5, ind={"teacher": 0.9, "mlp": 0.4, "glnn": 0.8, "ff-g2m": 0.85}[c])
    payload["results"]["csbm"]["gcn"]["ind"] = cols
    figures.write_figures("g2m", _write(tmp_path, "g2m", payload))
    (ax,) = [a for a in drawn[0].axes if a.has_data()]
    assert ax.get_title() == "CSBM: inductive, held-out test nodes"
    ys = sorted(round(float(c.lines[0].get_ydata()[0]), 6) for c in ax.containers)  # one errorbar per model
    assert ys == [40.0, 80.0, 85.0, 90.0]  # the ind scores, not the tran ones (all 50)


def test_g2m_figure_refuses_json_without_latencies(tmp_path):
    payload = json.loads(json.dumps(FIXTURES["g2m"][1]))
    del payload["results"]["csbm"]["gcn"]["tran"]["mlp"][0]["latency_s"]
    with pytest.raises(UserError, match="latenc"):
        figures.write_figures("g2m", _write(tmp_path, "g2m", payload))


def test_mirage_points_aggregate_over_split_seeds():
    points = {(p["method"]): p for p in figures._mirage_points(FIXTURES["mirage"][1])}
    assert points["mirage"]["splits"] == 2
    assert points["mirage"]["top"] == pytest.approx(mean_std([0.85, 0.86]))


def test_mirage_size_only_level_in_its_better_direction(tmp_path):
    payload = json.loads(json.dumps(FIXTURES["mirage"][1]))
    for rec, s in zip(payload["records"], (0.2, 0.7)):  # 0.2: larger graphs lean to class 0, i.e. 0.8 the other way
        rec["size_only"] = {"rocauc": s, "accuracy": 0.6}
    payload["records"].append({"dataset": "acc", "metric": "accuracy", "size_only": {"accuracy": 0.3}, "results": []})
    assert figures._size_only_levels(payload) == pytest.approx({"motifs": 0.75, "acc": 0.3})
    payload["records"].pop()
    assert figures.write_figures("mirage", _write(tmp_path, "mirage", payload))


def test_mirage_panels_place_each_set_at_its_own_x_with_its_byte_share(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(figures, "save_png", lambda fig, path: drawn.append(fig) or Path(path))
    payload = json.loads(json.dumps(FIXTURES["mirage"][1]))
    payload["aggregated"] = [{"dataset": "aaa", "model": "gin", "method": "random", "fraction": 0.1, "top": [0.6, 0.01]},
                             {"dataset": "motifs", "model": "gin", "method": "full", "fraction": 1.0, "top": [0.9, 0.01], "seeds": 7}]
    figures.mirage(payload, tmp_path / "c")
    motifs, aaa = drawn[0].axes[:2]
    assert [motifs.get_title()[:6], aaa.get_title()[:6]] == ["motifs", "aaa, G"]  # the records' rows first
    ticks = [t.get_text() for t in motifs.get_xticklabels()]
    assert ticks == ["random\n2 %", "herding\n2 %", "Mirage\n2.1 %", "full data\n100 %, 7 seeds"]
    xs = [float(c.lines[0].get_xdata()[0]) for c in motifs.containers]
    ys = [round(float(c.lines[0].get_ydata()[0]), 6) for c in motifs.containers]
    assert xs == [0, 1, 2, 3] and ys == [0.605, 0.655, 0.855, 0.9]  # no dodging: one position per set, its mean score
    assert motifs.get_ylabel() == "test ROC-AUC" and "ROC-AUC" in drawn[0].get_suptitle()


def test_mirage_summary_puts_every_dataset_on_one_axis_per_gnn_only_for_one_metric(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(figures, "save_png", lambda fig, path: drawn.append((fig, Path(path))) or Path(path))
    payload = json.loads(json.dumps(FIXTURES["mirage"][1]))
    other = json.loads(json.dumps(payload["records"]))
    for rec in other:
        rec["dataset"] = "rings"
    payload["records"] += other
    figures.mirage(payload, tmp_path / "m")
    assert [p.name for _, p in drawn] == ["m.png", "m_summary.png"]
    (ax,) = drawn[1][0].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["motifs", "rings"] and ax.get_ylabel() == "test ROC-AUC"
    mirage_x = sorted(float(x) for c in ax.containers if c.get_label() == "Mirage" for x in c.lines[0].get_xdata())
    assert mirage_x == [pytest.approx(0.1), pytest.approx(1.1)]  # each dataset's Mirage point in its own slot
    for rec in payload["records"][2:]:
        rec["metric"] = "accuracy"
    drawn.clear()
    figures.mirage(payload, tmp_path / "m")
    assert [p.name for _, p in drawn] == ["m.png"]  # ROC-AUC and accuracy do not share an axis


def test_committed_matching_figure_titles_name_their_own_dataset(monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "save_png", lambda fig, path: drawn.append(fig) or Path(path))
    figures.write_figures("matching", RESULTS / "matching.json")
    titles = [fig.get_suptitle() for fig in drawn]
    assert len(titles) == 2 and titles[0].startswith("Digits") and titles[1].startswith("Fashion-MNIST")
    assert "digits" not in titles[1].lower() and not any(".md" in t for t in titles)  # a title says what is plotted, not where from


def test_bench_inference_end_to_end_writes_json_and_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench_inference.main(["--sizes", "300", "600", "--queries", "3", "--teachers", "gcn", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["nodes"] for r in rows] == [300, 600] and all(r["full"]["mlp"] > 0 and r["single"]["gcn"] > 0 for r in rows)
    assert_png(tmp_path / "bench.png")
    err = capsys.readouterr().err
    assert f"wrote results JSON: {out}" in err and f"wrote figure: {tmp_path / 'bench.png'}" in err


def test_synth_end_to_end_json_holds_the_plotted_per_seed_values(tmp_path, capsys):
    out = tmp_path / "synth.json"
    assert synth.main(["--only", "real", "--teacher-epochs", "1", "--seeds", "0", "--resize", "16", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    payload = json.loads(out.read_text())
    real = next(r for r in payload["rows"] if r["name"] == "student on real data")
    assert len(real["accs"]) == 1 and f"{real['accs'][0]:.2f} ± 0.00" in table  # the figure's value is the table's
    assert_png(tmp_path / "synth.png")


# ------------------------------------------------------------------------------------- committed figures = committed tables
def _pm(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}"


COMMITTED = ["matching", "trajectory", "mirage_tables", "synth", "bench_inference", "bench_unroll", "bench_unroll_official", "bench_matching"]


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_json_is_labelled_and_its_figure_is_committed(name):
    payload = figures.load_json(RESULTS / f"{name}.json")
    src = payload.get("transcribed_from") or payload["source"]  # transcribed from a doc, or written by the command
    assert (RESULTS.parent.parent / src["doc"].split(" ")[0]).is_file() and src["commands"]
    pngs = sorted(RESULTS.glob(f"{name}*.png"))
    assert pngs, name
    for png in pngs:
        assert_png(png)


def test_committed_jsons_match_the_committed_tables():
    """Every plotted number of the transcribed JSONs appears, as printed, in the doc it came from."""
    doc = lambda name: (RESULTS / name).read_text().replace("**", "")  # noqa: E731
    m = figures.load_json(RESULTS / "matching.json")
    for r in m["rows"]:
        for mean, std in r["summary_pct"].values():
            assert _pm(mean, std) in doc("matching.md"), r
    t = figures.load_json(RESULTS / "trajectory.json")
    for s in t["sections"]:
        for r in s["rows"]:
            assert re.search(rf"\| {re.escape(r['name'])}\s+\| {r['images']}\s+\| {re.escape(_pm(r['mean'], r['std']))}", doc("trajectory.md")), r
    g = figures.load_json(RESULTS / "mirage_tables.json")
    for rec in g["records"]:
        for r in rec["results"]:
            assert f"| {rec['dataset']} | {r['model']} | {r['method']} | {r['graphs']} | {r['bytes']} |" in doc("mirage.md"), r
            assert f"{r['top'][0]:.3f} ± {r['top'][1]:.3f}" in doc("mirage.md"), r
    for a in g["aggregated"]:
        assert f"{a['top'][0]:.3f} ± {a['top'][1]:.3f} | {a['final'][0]:.3f} ± {a['final'][1]:.3f}" in doc("mirage.md"), a
    s = figures.load_json(RESULTS / "synth.json")
    for r in s["rows"]:
        cells = " | ".join(f"{a:.2f}" for a in r["accs"]) + " | " + _pm(*r["mean_std_pct"])
        assert cells in doc("synth.md"), r  # the per-seed values and the table's mean ± std ...
        assert mean_std(r["accs"]) == pytest.approx(r["mean_std_pct"], abs=0.006), r  # ... which the plotted bars reproduce
    u = figures.load_json(RESULTS / "bench_unroll.json")
    for r in u["rows"]:
        assert f"| {r['N']} | {r['backend']} | {r['mode']} | {r['seconds']:.2f} | {r['peak_mb']:.1f} |" in doc("bench_unroll.md"), r
    b = figures.load_json(RESULTS / "bench_inference.json")
    for r in b["rows"]:
        for regime in ("full", "single"):
            up = {t: r["speedup"][regime][t] if "speedup" in r else r[regime]["mlp"] / r[regime][t] for t in ("gcn", "sage", "gat")}
            cells = " | ".join(f"{r[regime][t]:,.0f} | {up[t]:,.1f}x" for t in ("gcn", "sage", "gat"))
            assert f"| {r['nodes']:,d} | {r['edges']:,d} | {regime} | {r[regime]['mlp']:,.0f} | {cells} |" in doc("bench_inference.md"), r


def test_committed_g2m_run_matches_its_doc():
    """The g2m figure's run: accuracies as in g2m.md's seed-0 rows, latencies as in its latency table."""
    g = figures.load_json(RESULTS / "g2m.json")
    text = (RESULTS / "g2m.md").read_text()
    for dataset, by_teacher in g["results"].items():
        cols = by_teacher["gcn"]["tran"]
        accs = " / ".join(f"{100 * cols[c][0]['tran']:.2f}" for c in ("teacher", "mlp", "glnn", "lfd", "hfd", "ff-g2m"))
        assert accs in text.replace("\n", " "), (dataset, accs)
        assert f"| {round(1000 * cols['teacher'][0]['latency_s'])} |" in text, dataset


# ------------------------------------------------------------------------------------- show --curve and the metadata table
def test_show_prints_metadata_and_plots_the_loss_history(tmp_path, capsys):
    out = tmp_path / "dm.pt"
    tiny = ["--iterations", "12", "--batch-real", "8", "--width", "8", "--no-progress"]
    assert condense_main(["distill", "--method", "dm", "--ipc", "1", "--out", str(out), *tiny]) == 0
    capsys.readouterr()
    assert condense_main(["show", str(out), "--curve", str(tmp_path / "curve.png")]) == 0
    table = capsys.readouterr().out
    assert "| method " in table and "| dm " in table and "12 iterations" in table and "| images per class | 1 " in table
    assert_png(tmp_path / "curve.png", min_side=200)
    assert not (tmp_path / "grid.png").exists()


def test_show_curve_without_history_is_one_line_error(tmp_path, capsys):
    out = tmp_path / "random.pt"
    assert condense_main(["distill", "--method", "random", "--ipc", "1", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert condense_main(["show", str(out), "--curve", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no loss history" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c.png").exists()


def test_loss_curve_rejects_empty_history(tmp_path):
    with pytest.raises(UserError):
        loss_curve([], tmp_path / "c.png", title="t")


# ------------------------------------------------------------------------------------- --help of the entry points
def test_synth_help_lists_every_method_with_its_paper(capsys):
    from synth.cli import METHOD_CONFIGS, main as synth_main

    with pytest.raises(SystemExit):
        synth_main(["--help"])
    out = capsys.readouterr().out
    for name in METHOD_CONFIGS:
        assert re.search(rf"^  {name}\s+\S", out, re.M), name
    for paper in ("ICCV 2019", "NeurIPS 2019", "AAAI 2022", "ICML 2023"):
        assert paper in out


def test_mirage_help_names_paper_presets_and_default_dataset(capsys):
    from graphs.mirage.__main__ import main as mirage_main
    from graphs.mirage.presets import PRESETS

    with pytest.raises(SystemExit):
        mirage_main(["--help"])
    out = capsys.readouterr().out
    assert "Mirage: Model-Agnostic Graph Distillation" in out and "ICLR 2024" in out and "default dataset: motifs" in out
    assert all(re.search(rf"^  {re.escape(name)}\s+L=", out, re.M) for name in PRESETS)


def test_g2m_help_names_methods_papers_and_default_dataset(capsys):
    from graphs.g2m.__main__ import main as g2m_main
    from graphs.g2m.student import METHODS

    with pytest.raises(SystemExit):
        g2m_main(["--help"])
    out = capsys.readouterr().out
    assert all(re.search(rf"^  {re.escape(m)}\s+\S", out, re.M) for m in METHODS)
    assert "Graph-less Neural Networks" in out and "AAAI 2024" in out and "default dataset: csbm" in out


def test_g2m_default_table_has_plain_mlp_baseline_and_speedup(tmp_path, capsys):
    from graphs.g2m.__main__ import main as g2m_main

    out = tmp_path / "student.pt"
    assert g2m_main(["--nodes", "300", "--features", "20", "--max-epochs", "5", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = [line.split()[0] for line in text.splitlines()[2:6]]
    assert rows == ["teacher:gcn", "mlp", "glnn", "ff-g2m"], text
    assert re.search(r"MLP student [\d.]+ ms -> the MLP is [\d.]+x faster", text)
    assert out.exists() and not (tmp_path / "student_mlp.pt").exists()  # baselines are reported, not saved
