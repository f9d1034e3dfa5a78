"""One self-contained HTML page for a pipeline (or a single run) folder.

``render_report(run_dir)`` writes ``run_dir/report.html``: a results table beside the course
report's own numbers, every curve, confusion matrix and t-SNE plot (embedded as base64 data
URIs), model summaries, the resolved configuration and the environment. No network, no external
files: the page can be mailed or archived on its own. Every piece of text goes through
:func:`html.escape`.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from reprlab.errors import ReprlabError, one_line
from reprlab.io import (
    check_output_file,
    read_json,
    read_jsonl,
    reprlab_record,
    to_json,
    write_text,
)
from reprlab.modes import PIPELINE_STAGES

#: Stage order of the pipeline (also the order of the report's sections).
STAGE_ORDER = PIPELINE_STAGES

#: The course report's own figures (seed report: sections 1.1, 1.3, Tables 4 and 7, 2.6).
PAPER: dict[str, dict[str, Any]] = {
    "logistic": {"val_acc": 0.815, "note": "binary task; early stopped once val acc > 80 % (§1.1)"},
    "softmax": {"val_acc": 0.26, "note": "val acc plateaus at 26 % (§1.3, Tables 1-2)"},
    "cont_rep": {"note": "no accuracy reported: t-SNE only (Fig. 5), 2000 iterations (Table 3)"},
    "fine_tune_linear": {
        "train_acc": 0.8999,
        "val_acc": 0.7744,
        "train_loss": 0.1124,
        "val_loss": 0.1257,
        "iterations": 2900,
        "note": "Table 4: z_dim 32, early stopped at iteration 2900",
    },
    "fine_tune_nn": {
        "train_acc": 0.9985,
        "val_acc": 0.8257,
        "train_loss": 0.0184,
        "val_loss": 1.2547,
        "iterations": 310,
        "test_acc": 0.8635,
        "note": "Tables 6-7: early stopped at iteration 310; best leaderboard test "
        "accuracy 86.35 % (z_dim 64, §2.6)",
    },
}

#: Images shown first, in this order, with a caption; any other PNG of a run follows.
KNOWN_IMAGES = {
    "loss.png": "loss",
    "accuracy.png": "accuracy",
    "confusion.png": "confusion matrix (validation)",
    "tsne.png": "t-SNE of the embeddings",
}

# ---------------------------------------------------------------------------------------------
# Reading a run folder
# ---------------------------------------------------------------------------------------------


def _first(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return None


def model_or_final(m: dict[str, Any], metric: str) -> Any:
    """A figure of :func:`stage_metrics`'s dict (or a ``pipeline_summary.json`` stage): the
    returned model's (best weights restored), else the last logged evaluation's."""
    return _first(m, f"model_{metric}", f"final_{metric}")


def headline_val_acc(m: dict[str, Any]) -> tuple[Any, bool]:
    """The validation accuracy a run is known by, from :func:`stage_metrics`'s dict (or a
    ``pipeline_summary.json`` stage): the returned model's on the whole validation split, else
    the last logged evaluation's, else (``cont_rep``) the kNN accuracy of its embeddings; and
    whether it is that kNN accuracy. The printed tables, ``report.html`` and a sweep's
    ``results.csv`` all show this one."""
    knn = (m.get("knn") or {}).get("knn_acc")
    if m.get("final_val_acc") is None and knn is not None:
        return knn, True
    return model_or_final(m, "val_acc"), False


def stage_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a ``summary.json``, whatever its exact layout.

    Accepts flat keys (``final_val_acc``, ``best_val_acc``) as well as nested
    ``{"final": {"val_acc": ...}, "best": {...}}`` blocks.
    """
    final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
    best = summary.get("best") if isinstance(summary.get("best"), dict) else {}
    out: dict[str, Any] = {}
    for m in ("train_acc", "val_acc", "train_loss", "val_loss"):
        f, b = final.get(m), best.get(m)
        out[f"final_{m}"] = f if f is not None else _first(summary, f"final_{m}", m)
        out[f"best_{m}"] = b if b is not None else _first(summary, f"best_{m}")
    # the returned model (best weights restored) on the whole validation split, when the mode
    # reports it: the headline; final_*/best_* are the logged evaluations (maybe a subset)
    # the same for its training accuracy and both losses (top-level keys of the summary)
    for m in ("val_acc", "train_acc", "val_loss", "train_loss"):
        out[f"model_{m}"] = summary.get(m) if "final_val_acc" in summary else None
    out["iterations"] = _first(summary, "iterations", "iters", "num_iters_run")
    out["stop_reason"] = _first(summary, "stop_reason")
    out["wall_time_s"] = _first(summary, "wall_time_s")
    out["peak_memory_mib"] = summary.get("peak_memory_mib") or {}  # the neural modes'
    out["time_budget"] = summary.get("time_budget") or {}  # --time_budget: what set the count
    out["status"] = _first(summary, "status")
    knn = {
        k: v
        for k, v in summary.items()
        if k.startswith("knn") and k.endswith("acc") and isinstance(v, (int, float))
    }
    out["knn"] = knn
    # with labelled --test_data: the test predictions scored (metrics.score_test_set)
    out["test_acc"], out["test_n"] = summary.get("test_acc"), summary.get("test_n")
    return out


def _read_json_or_none(path: Path) -> Any:
    try:
        return read_json(path) if path.is_file() else None
    except ReprlabError:
        return None


def unreadable_records(run_dir: Path, stages: list[tuple[str, Path]]) -> list[str]:
    """One line for each record file of the report that exists but cannot be read (a damaged
    ``summary.json`` and the like): the report leaves out what they held, and says so."""
    files = [run_dir / "pipeline.json", run_dir / "pipeline_summary.json"]
    files += [run / name for _, run in stages for name in RECORD_FILES]
    problems = []
    for f in dict.fromkeys(files):  # a single run folder is its own stage: once each
        if f.is_file():
            try:
                read_jsonl(f) if f.suffix == ".jsonl" else read_json(f)
            except ReprlabError as e:
                problems.append(one_line(e))
    return problems


#: The records of a run folder that the report reads.
RECORD_FILES = ("config.json", "summary.json", "metrics.jsonl")


def _stage_dirs(run_dir: Path) -> list[tuple[str, Path]]:
    """(name, folder) of each run in ``run_dir``: its stage sub-folders, or itself; a sweep's
    runs of its grid, in the grid's order (a folder of an earlier, wider grid is not one)."""
    if (run_dir / "config.json").is_file() and not (run_dir / "pipeline.json").is_file():
        cfg = _read_json_or_none(run_dir / "config.json") or {}
        return [(str(cfg.get("mode", run_dir.name)), run_dir)]
    sweep = reprlab_record(run_dir / "sweep.json", "sweep")
    grid = sweep["grid"] if sweep is not None else None
    if grid and all(isinstance(v, list) for v in grid.values()):  # else: every sub-folder
        from reprlab.sweep import grid_runs

        runs = [(name, run_dir / name) for name, _ in grid_runs(grid)]
        runs = [(name, p) for name, p in runs if (p / "config.json").is_file()]
        if runs:  # else (folders named by an earlier release): every sub-folder
            return runs
    subs = [p for p in sorted(run_dir.iterdir()) if (p / "config.json").is_file()]
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    subs.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
    return [(p.name, p) for p in subs]


# ---------------------------------------------------------------------------------------------
# HTML pieces
# ---------------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
  max-width:1200px;padding:1.5rem;color:#1d2330;background:#fff;line-height:1.4}
h1{font-size:1.6rem;margin:.2rem 0} h2{margin-top:2.2rem;border-bottom:2px solid #dde3ee;
  padding-bottom:.2rem} h3{margin:1.2rem 0 .4rem;font-size:1.05rem}
.meta{color:#5b6577;font-size:.9rem}
.warn{background:#fff4d6;border:1px solid #e3c56d;padding:.4rem .9rem;border-radius:4px}
table{border-collapse:collapse;font-size:.8rem;margin:.5rem 0}
th,td{border:1px solid #d5dbe6;padding:.25rem .4rem;text-align:right;vertical-align:top}
td{white-space:nowrap} th{background:#eef2f8} td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#f8fafc}
td.paper,th.paper{background:#fff8e6 !important;color:#6b4e00}
.wide{overflow-x:auto} ul.notes{font-size:.82rem;color:#5b6577;margin:.3rem 0}
.ok{color:#17803d;font-weight:600} .bad{color:#b42318;font-weight:600}
.figs{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}
figure{margin:0;border:1px solid #e3e8f0;padding:.4rem;background:#fff}
figure img{display:block;max-width:370px;max-height:400px;height:auto}
td.wrap{white-space:normal;min-width:9em;max-width:16em}
figcaption{font-size:.8rem;color:#5b6577;text-align:center}
pre{background:#f4f6fa;border:1px solid #e3e8f0;padding:.6rem;overflow-x:auto;font-size:.78rem}
details{margin:.4rem 0} summary{cursor:pointer;color:#2a5bd7}
"""

# Sets <body data-images="N/M"> once every image has loaded (or failed): the report's own
# check that the embedded data URIs decode, used by the headless-browser test.
IMG_CHECK_JS = """
(function(){function check(){var imgs=Array.prototype.slice.call(document.images);
var ok=imgs.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;
document.body.setAttribute('data-images',ok+'/'+imgs.length);}
window.addEventListener('load',check);})();
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _pct(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return f"{100 * v:.2f} %"
    return "—"


def _num(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else _e(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else _e(v)
    return _e(v)


def _secs(v: Any) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "—"
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


def _peak(mib: dict[str, Any]) -> str:
    """The training's peak memory under its wall time: the GPU's when it ran on one."""
    for key, what in (("gpu_allocated", "GPU"), ("rss", "RSS")):
        v = mib.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return f"<br><small>peak {what} {v / 1024:.2f} GiB</small>"
    return ""


def _budget(tb: dict[str, Any]) -> str:
    """Under a timed run's iterations: the budget and step time that set them, and the count
    it started with when it re-planned (a slower machine, the pipeline's --time_budget)."""
    budget, step, planned = tb.get("budget_s"), tb.get("step_s"), tb.get("planned_iters")
    parts = []
    if isinstance(budget, (int, float)) and budget > 0 and isinstance(step, (int, float)):
        parts.append(f"--time_budget {budget:g} s ({step:.3f} s a step)")
    if tb.get("replans") and isinstance(planned, int):
        parts.append(f"re-planned from {planned} to end in time")
    return "".join(f"<br><small>{_e(p)}</small>" for p in parts)


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _predictions_cell(run: Path, html_dir: Path) -> str:
    p = run / "predictions.csv"
    if not p.is_file():
        return "—"
    rel = Path(os.path.relpath(p.resolve(), html_dir.resolve()))  # a link from the report
    return (
        f'<a href="{_e(rel.as_posix())}">{_e(p.name)}</a><br><small>{_count_lines(p)} rows</small>'
    )


def _results_table(
    stages: list[tuple[str, Path]], html_dir: Path, walls: dict[str, Any]
) -> str:
    metrics = {name: stage_metrics(_read_json_or_none(run / "summary.json") or {})
               for name, run in stages}
    # a test-accuracy column only when some run scored labelled test images
    scored = any(m["test_acc"] is not None for m in metrics.values())
    head = (
        "<tr><th class=l rowspan=2>stage</th><th class=l rowspan=2>status</th>"
        "<th colspan=2>val accuracy</th><th colspan=2>train accuracy</th>"
        "<th colspan=2>val loss</th><th colspan=2>train loss</th>"
        "<th colspan=2>iterations</th>"
        + ("<th colspan=2>test accuracy</th>" if scored else "")
        + "<th class=l rowspan=2>stopped because</th>"
        "<th rowspan=2>wall time</th><th class=l rowspan=2>predictions</th></tr><tr>"
        + "<th>reprlab</th><th class=paper>report</th>" * (6 if scored else 5)
        + "</tr>"
    )
    rows = []
    for name, run in stages:
        m = metrics[name]
        status = m["status"] or "not finished"
        cls = "ok" if status == "finished" else "bad"
        paper = PAPER.get(name, {})
        acc, is_knn = headline_val_acc(m)
        val_cell = _pct(acc) + ("<br><small>kNN</small>" if is_knn else "")
        if m["model_val_acc"] is not None and m["final_val_acc"] != m["model_val_acc"]:
            val_cell += f"<br><small>last eval {_pct(m['final_val_acc'])}</small>"
        if m["best_val_acc"] is not None and m["best_val_acc"] != m["final_val_acc"]:
            val_cell += f"<br><small>best eval {_pct(m['best_val_acc'])}</small>"
        for k, v in m["knn"].items():
            if not (is_knn and k == "knn_acc"):
                val_cell += f"<br><small>{_e(k)} {_pct(v)}</small>"
        # in a pipeline, the stage's time as the pipeline measured and printed it (the run's
        # own summary starts its clock after the process has loaded its modules)
        wall = walls.get(name) if walls.get(name) is not None else m["wall_time_s"]
        test_cell = _pct(m["test_acc"])
        if m["test_n"] is not None:
            test_cell += f"<br><small>{_num(m['test_n'])} images</small>"

        def pair(ours: str, key: str, fmt: Any = _pct, paper: dict = paper) -> str:
            theirs = fmt(paper[key]) if paper.get(key) is not None else "—"
            return f"<td>{ours}</td><td class=paper>{theirs}</td>"

        rows.append(
            f'<tr><td class=l><a href="#{_e(name)}">{_e(name)}</a></td>'
            f"<td class='l {cls}'>{_e(status)}</td>"
            + pair(val_cell, "val_acc")
            + pair(_pct(model_or_final(m, "train_acc")), "train_acc")
            + pair(_num(model_or_final(m, "val_loss")), "val_loss", _num)
            + pair(_num(model_or_final(m, "train_loss")), "train_loss", _num)
            + pair(_num(m["iterations"]) + _budget(m["time_budget"]), "iterations", _num)
            + (pair(test_cell, "test_acc") if scored else "")
            + f"<td class='l wrap'>{_e(m['stop_reason'] or '—')}</td>"
            f"<td>{_secs(wall)}{_peak(m['peak_memory_mib'])}</td>"
            f"<td class=l>{_predictions_cell(run, html_dir)}</td></tr>"
        )
    notes = "".join(
        f"<li><b>{_e(name)}</b>: {_e(PAPER[name]['note'])}</li>"
        for name, _ in stages
        if name in PAPER
    )
    if scored:
        notes += (
            "<li><b>test accuracy</b>: the predictions on the <code>--test_data</code> images, "
            "which carry labels; the report's figure is its leaderboard's</li>"
        )
    notes_html = f"<ul class=notes>{notes}</ul>" if notes else ""
    return f"<div class=wide><table class=results>{head}{''.join(rows)}</table></div>{notes_html}"


def _class_report(rep: Any) -> str:
    if isinstance(rep, str):
        return f"<pre>{_e(rep)}</pre>"
    if not isinstance(rep, dict) or not isinstance(rep.get("per_class"), dict):
        return ""
    rows = "".join(
        f"<tr><td class=l>{_e(c)}</td><td>{_num(v.get('precision'), 3)}</td>"
        f"<td>{_num(v.get('recall'), 3)}</td><td>{_num(v.get('f1'), 3)}</td>"
        f"<td>{_num(v.get('support'))}</td></tr>"
        for c, v in rep["per_class"].items()
        if isinstance(v, dict)
    )
    macro = (
        f"<tr><th class=l>macro</th><th>{_num(rep.get('macro_precision'), 3)}</th>"
        f"<th>{_num(rep.get('macro_recall'), 3)}</th><th>{_num(rep.get('macro_f1'), 3)}</th>"
        f"<th>accuracy {_pct(rep.get('accuracy'))}</th></tr>"
    )
    return (
        "<details><summary>classification report (validation)</summary><table>"
        "<tr><th class=l>class</th><th>precision</th><th>recall</th><th>F1</th>"
        f"<th>support</th></tr>{rows}{macro}</table></details>"
    )


def _stage_section(name: str, run: Path) -> str:
    summary = _read_json_or_none(run / "summary.json") or {}
    cfg = _read_json_or_none(run / "config.json") or {}
    parts = [f'<section id="{_e(name)}"><h2>{_e(name)}</h2>']
    parts.append(f"<p class=meta>folder: <code>{_e(run)}</code></p>")
    figs = [_img(run / f, cap) for f, cap in KNOWN_IMAGES.items() if (run / f).is_file()]
    figs += [
        _img(p, p.stem.replace("_", " "))
        for p in sorted(run.glob("*.png"))
        if p.name not in KNOWN_IMAGES
    ]
    if figs:
        parts.append(f"<div class=figs>{''.join(figs)}</div>")
    rep = summary.get("classification_report")
    if rep:
        parts.append(_class_report(rep))
    ms = run / "model_summary.txt"
    if ms.is_file():
        parts.append(
            "<h3>model summary</h3>"
            f"<pre>{_e(ms.read_text(encoding='utf-8', errors='replace'))}</pre>"
        )
    if summary:
        short = {k: v for k, v in summary.items() if k != "classification_report"}
        parts.append(
            f"<details><summary>summary.json</summary><pre>{_e(to_json(short))}</pre></details>"
        )
    if cfg.get("config"):
        parts.append(
            "<details><summary>resolved configuration (config.json)</summary>"
            f"<pre>{_e(to_json(cfg['config']))}</pre></details>"
        )
    parts.append("</section>")
    return "".join(parts)


def _environment(stages: list[tuple[str, Path]]) -> str:
    """One table of versions/device/threads; a column per distinct environment."""
    envs: dict[str, dict[str, Any]] = {}
    for name, run in stages:
        env = (_read_json_or_none(run / "config.json") or {}).get("environment")
        if isinstance(env, dict):
            envs[name] = env
    if not envs:
        return ""
    keys = sorted({k for e in envs.values() for k in e})
    distinct: list[tuple[list[str], dict[str, Any]]] = []
    for name, env in envs.items():
        for names, e in distinct:
            if e == env:
                names.append(name)
                break
        else:
            distinct.append(([name], env))
    head = "".join(f"<th class=l>{_e(', '.join(n))}</th>" for n, _ in distinct)
    rows = "".join(
        f"<tr><td class=l>{_e(k)}</td>"
        + "".join(f"<td class=l>{_e(e.get(k, '—'))}</td>" for _, e in distinct)
        + "</tr>"
        for k in keys
    )
    return f"<h2>environment</h2><table><tr><th class=l>key</th>{head}</tr>{rows}</table>"


def render_html(
    run_dir: str | Path, html_dir: str | Path | None = None, problems: list[str] | None = None
) -> str:
    """The report of ``run_dir`` (a pipeline folder or a single run folder) as HTML text, to be
    saved in ``html_dir`` (default ``run_dir``: its links to files are relative to it)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReprlabError(f"{run_dir}: not a folder")
    stages = _stage_dirs(run_dir)
    if not stages:
        raise ReprlabError(f"{run_dir}: no reprlab run found (no config.json)")
    pipe = _read_json_or_none(run_dir / "pipeline.json") or {}
    psum = _read_json_or_none(run_dir / "pipeline_summary.json") or {}
    walls = {
        k: v.get("wall_time_s")
        for k, v in (psum.get("stages") or {}).items()
        if isinstance(v, dict)
    }
    title = f"reprlab report — {run_dir.name}"
    meta = [f"folder <code>{_e(run_dir)}</code>", f"written {_e(time.strftime('%Y-%m-%d %H:%M'))}"]
    if pipe.get("preset"):
        meta.insert(0, f"preset <b>{_e(pipe['preset'])}</b>")
    if isinstance(psum.get("total_wall_time_s"), (int, float)):
        meta.append(f"total wall time {_secs(psum['total_wall_time_s'])}")
    if psum.get("time_budget_s"):
        meta.append(f"--time_budget {_secs(psum['time_budget_s'])}")
    body = [f"<h1>{_e(title)}</h1><p class=meta>{' · '.join(meta)}</p>"]
    unreadable = unreadable_records(run_dir, stages)
    if problems is not None:  # the caller says them too (reprlab report, on stderr)
        problems.extend(unreadable)
    if unreadable:
        items = "".join(f"<li>{_e(p)}</li>" for p in unreadable)
        body.append(f"<div class=warn>Left out of this report, unreadable:<ul>{items}</ul></div>")
    body += [
        "<h2>results</h2>",
        "<p class=meta>Final metrics of each run (accuracy on the validation split of the "
        "training set; on the test images too when they carry labels), beside the course "
        "report's own numbers (shaded).</p>",
        _results_table(stages, Path(html_dir or run_dir), walls),
    ]
    overlays = [_img(p, p.stem.replace("_", " ")) for p in sorted(run_dir.glob("*.png"))]
    if overlays and stages[0][1] != run_dir:  # a sweep folder: its comparison figures
        body.append(f"<h2>comparison</h2><div class=figs>{''.join(overlays)}</div>")
    if (run_dir / "results.md").is_file():
        body.append(f"<pre>{_e((run_dir / 'results.md').read_text(encoding='utf-8'))}</pre>")
    if (run_dir / "by_setting.md").is_file():  # a sweep over seeds: mean ± std per setting
        body.append("<h3>over seeds: mean ± std [min, max]</h3>")
        body.append(f"<pre>{_e((run_dir / 'by_setting.md').read_text(encoding='utf-8'))}</pre>")
    body += [_stage_section(name, run) for name, run in stages]
    body.append(_environment(stages))
    if pipe:
        body.append(
            "<h2>pipeline configuration</h2><details><summary>pipeline.json</summary>"
            f"<pre>{_e(to_json(pipe))}</pre></details>"
        )
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>"
        f"<body data-images=loading>{''.join(body)}<script>{IMG_CHECK_JS}</script></body></html>\n"
    )


def render_report(
    run_dir: str | Path, out: str | Path | None = None, problems: list[str] | None = None
) -> Path:
    """Write ``report.html`` (self-contained) into ``run_dir``, or to ``out``; return its path.
    ``problems``, when given, receives a line for each record the report had to leave out."""
    run_dir = Path(run_dir)
    path = Path(out) if out is not None else run_dir / "report.html"
    write_text(path, render_html(run_dir, path.parent, problems))
    return path


# ---------------------------------------------------------------------------------------------
# CLI: reprlab report RUN_DIR
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a pipeline folder or a single run folder")
    parser.add_argument("--out", default=None, help="where to write (default: RUN_DIR/report.html)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file"
    )


def main(args: argparse.Namespace) -> int:
    if args.out is not None:  # the default RUN_DIR/report.html is the report's own file
        out = Path(args.out)
        not_a_file = out.exists() and not out.is_file()  # a folder (refused below), /dev/stdout
        if not not_a_file and out.resolve().suffix.lower() not in (".html", ".htm"):  # a record
            raise ReprlabError(f"--out {args.out}: the report is an .html file (name one)")
        check_output_file(out, args.overwrite)
    problems: list[str] = []
    path = render_report(args.run_dir, args.out, problems)
    for problem in problems:
        print(f"reprlab: warning: left out of the report: {problem}", file=sys.stderr)
    print(path)
    return 0


__all__ = ["PAPER", "render_html", "render_report", "stage_metrics"]
