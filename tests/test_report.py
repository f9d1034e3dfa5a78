"""The HTML report: self-contained, escaped, and rendered by headless Chromium.

Uses the session's smoke pipeline (tests/conftest.py) so that every kind of stage is in it.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import numpy as np
from browser import dump_dom, screenshot
from PIL import Image

from reprlab.cli import main
from reprlab.pipeline import STAGES
from reprlab.report import render_report

DATA_URI = re.compile(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def _expected_images(folder: Path) -> int:
    """PNG files of the stages (every one must appear in the report)."""
    return sum(len(list((folder / s).glob("*.png"))) for s in STAGES)


def test_report_renders_in_chromium(smoke_pipeline: dict, tmp_path: Path) -> None:
    folder = smoke_pipeline["dir"]
    html = folder / "report.html"
    assert html.is_file()
    n_img = len(DATA_URI.findall(html.read_text()))
    assert n_img == _expected_images(folder) >= 2 * len(STAGES) + 1  # curves, confusion, t-SNE

    dom = dump_dom(html, tmp_path)
    # The page's own check: every <img> is complete with a natural width > 0.
    m = re.search(r'<body[^>]*data-images="(\d+)/(\d+)"', dom)
    assert m, "the load script did not run"
    assert int(m.group(1)) == int(m.group(2)) == n_img
    # The results table has a row per stage, linking to its section.
    start = dom.index('<table class="results">')
    table = dom[start : dom.index("</table>", start)]
    for stage in STAGES:
        assert f'href="#{stage}"' in table
        assert f'<section id="{stage}">' in dom
    assert table.count("<tr>") == len(STAGES) + 2  # two header rows

    png = screenshot(html, tmp_path / "report.png", tmp_path)
    img = Image.open(png).convert("RGB")
    assert img.size == (1280, 2000)
    arr = np.asarray(img)
    non_white = (arr < 240).any(axis=2).mean()
    assert non_white > 0.03, f"screenshot is nearly blank ({non_white:.1%} non-white pixels)"
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 100  # text, tables, plots


def test_report_is_self_contained(smoke_pipeline: dict) -> None:
    text = (smoke_pipeline["dir"] / "report.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', text), "no network resources"
    assert "<link" not in text and "<script src" not in text
    # the shared test images carry no labels: no test-accuracy column (it would be all dashes)
    assert "<th colspan=2>test accuracy</th>" not in text
    uris = DATA_URI.findall(text)
    assert uris
    for b64 in uris:
        im = Image.open(io.BytesIO(base64.b64decode(b64)))
        im.verify()
        assert im.format == "PNG"


def test_report_numbers_beside_the_seed_report(smoke_pipeline: dict) -> None:
    folder = smoke_pipeline["dir"]
    text = (folder / "report.html").read_text()
    for paper in ("81.50 %", "26.00 %", "77.44 %", "82.57 %", "86.35 %"):
        assert paper in text
    # our own numbers: the softmax stage's final validation accuracy, as a percentage
    import json

    summary = json.loads((folder / "softmax" / "summary.json").read_text())
    from reprlab.report import stage_metrics

    val = stage_metrics(summary)["final_val_acc"]
    assert f"{100 * val:.2f} %" in text
    # the neural stages' peak memory under their wall time (a CPU run: the process's RSS)
    rss = json.loads((folder / "cont_rep" / "summary.json").read_text())["peak_memory_mib"]["rss"]
    assert f"peak RSS {rss / 1024:.2f} GiB" in text
    # each stage's wall time as the pipeline printed it (pipeline_summary.json)
    psum = json.loads((folder / "pipeline_summary.json").read_text())
    for stage, s in psum["stages"].items():
        w = s["wall_time_s"]
        assert (f"{w:.1f} s" if w < 120 else f"{w / 60:.1f} min") in text, stage
    # the model summary, resolved configuration, environment and predictions are there
    assert (folder / "cont_rep" / "model_summary.txt").read_text().splitlines()[0][:20] in text
    assert "resolved configuration" in text and "<h2>environment</h2>" in text
    assert 'href="softmax/predictions.csv"' in text and "10000 rows" in text


def test_report_escapes_text(smoke_pipeline: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(smoke_pipeline["dir"] / "softmax", run)
    (run / "model_summary.txt").write_text("<script>window.bad=1</script> & <b>x</b>\n")
    path = render_report(run)
    text = path.read_text()
    assert "&lt;script&gt;window.bad=1&lt;/script&gt; &amp; &lt;b&gt;x&lt;/b&gt;" in text
    assert "<script>window.bad" not in text
    assert text.count("<script>") == 1  # only the report's own image check


def test_report_shows_the_time_budget(smoke_pipeline: dict, tmp_path: Path) -> None:
    import json

    run = tmp_path / "run"
    shutil.copytree(smoke_pipeline["dir"] / "cont_rep", run)
    text = render_report(run).read_text()
    assert "--time_budget" not in text  # the smoke preset counts iterations
    summary = json.loads((run / "summary.json").read_text())
    summary["time_budget"] = {"budget_s": 480.0, "step_s": 0.46843, "num_iters": 910}
    (run / "summary.json").write_text(json.dumps(summary))
    text = render_report(run).read_text()
    assert "--time_budget 480 s (0.468 s a step)" in text and "re-planned" not in text
    summary["time_budget"].update(  # the machine slowed down: the run moved its end
        planned_iters=1100, replans=[{"iter": 600, "iter_s": 0.61, "num_iters": 910}]
    )
    (run / "summary.json").write_text(json.dumps(summary))
    assert "re-planned from 1100 to end in time" in render_report(run).read_text()


def test_report_command(smoke_pipeline: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(smoke_pipeline["dir"]), "--out", str(out)]) == 0
    assert out.is_file() and out.read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reprlab: error:") and "missing" in err[0]


def test_report_says_which_records_it_could_not_read(smoke_pipeline: dict, tmp_path: Path, capsys):
    """A damaged summary.json or metrics.jsonl was left out of the report without a word."""
    pipe = tmp_path / "pipe"
    shutil.copytree(smoke_pipeline["dir"], pipe)
    (pipe / "softmax" / "summary.json").write_text("{broken")
    (pipe / "cont_rep" / "metrics.jsonl").write_bytes(b"\xff\xfe binary")
    assert main(["report", str(pipe)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("reprlab: warning: left out") for e in err), err
    assert "softmax/summary.json: not valid JSON" in err[0]
    assert "cont_rep/metrics.jsonl: not a text file" in err[1]
    text = (pipe / "report.html").read_text()
    assert "Left out of this report, unreadable:" in text and "softmax/summary.json" in text
    shutil.copytree(smoke_pipeline["dir"], tmp_path / "clean")
    assert "class=warn" not in render_report(tmp_path / "clean").read_text()


def test_report_command_keeps_an_existing_file(smoke_pipeline: dict, tmp_path: Path, capsys):
    mine = tmp_path / "mine.html"
    mine.write_text("precious\n")
    run = str(smoke_pipeline["dir"])
    capsys.readouterr()
    assert main(["report", run, "--out", str(mine)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mine.html" in err[0] and "--overwrite" in err[0]
    assert mine.read_text() == "precious\n"
    assert main(["report", run, "--out", str(tmp_path)]) == 2  # a folder is no file name
    assert "is a folder" in capsys.readouterr().err
    assert main(["report", run, "--out", str(mine), "--overwrite"]) == 0
    text = mine.read_text()
    assert text.startswith("<!DOCTYPE html>")
    # links to the runs' files work from where the report is
    links = re.findall(r'<a href="([^"#][^"]*)"', text)
    assert links and all((tmp_path / link).is_file() for link in links), links


def test_the_results_table_shows_the_returned_models_figures() -> None:
    """Train accuracy and both losses in the tables are the returned model's (best weights
    restored), as its validation accuracy is, not the last evaluation of discarded weights."""
    from reprlab.pipeline import summary_table
    from reprlab.report import stage_metrics

    summary = {"status": "finished", "val_acc": 0.30, "train_acc": 0.5958, "val_loss": 2.179,
               "train_loss": 1.1, "final_val_acc": 0.28, "final_train_acc": 0.725,
               "final_val_loss": 2.231, "final_train_loss": 0.9, "iterations": 100}  # fmt: skip
    m = stage_metrics(summary)
    assert (m["model_train_acc"], m["model_val_loss"], m["model_train_loss"]) == (
        0.5958, 2.179, 1.1)
    table = summary_table({"softmax": m})
    assert "59.58 %" in table and "30.00 %" in table and "72.50" not in table


def test_a_confusion_plot_of_many_classes_is_a_heat_map(tmp_path: Path) -> None:
    """501 classes (an .npz with labels 0, 1 and 500) took 4.5 minutes to draw, one text per
    cell, into a figure 280 inches wide; past 30 classes it is a plain heat map of fixed size."""
    from reprlab.plots import CONFUSION_LABELLED, plot_confusion

    cm = np.random.default_rng(0).integers(0, 5, (501, 501))
    plot_confusion(cm, [str(i) for i in range(501)], tmp_path / "many.png")
    plot_confusion(cm[:CONFUSION_LABELLED, :CONFUSION_LABELLED],
                   [str(i) for i in range(CONFUSION_LABELLED)], tmp_path / "few.png")  # fmt: skip
    with Image.open(tmp_path / "many.png") as many, Image.open(tmp_path / "few.png") as few:
        assert all(abs(a - b) < 0.1 * b for a, b in zip(many.size, few.size, strict=True))
