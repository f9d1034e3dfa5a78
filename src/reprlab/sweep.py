"""``reprlab sweep``: one mode over a grid of flags, with overlay plots and a results table.

    reprlab sweep softmax --grid batch_size=256,4096 --grid grad_norm_clip=0,5 \\
        --data train.tar.xz --num_iters 3000 --out runs/sweep-softmax

runs every combination in ``DIR/<name built from the values>`` (finished runs are skipped, so
rerunning resumes), then writes one figure per metric with every run's curve (``val_acc.png``,
``val_loss.png``, ``train_loss.png``, ``train_acc.png``: the report's Figures 1-4, 6 and 8 are such
comparisons), ``results.csv`` / ``results.md`` with every run's parameters and final metrics,
and ``report.html``. With ``--grid seed=0,1,2`` (two seeds or more) it also writes
``by_setting.csv`` / ``by_setting.md``: one row per setting of the other flags, with the mean,
the sample standard deviation and the range over its seeds (a seed draws the split, the
initialisation and the batches), the spread to quote beside a figure.
Values of a list-valued flag are separated by ``;`` instead of ``,``.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import re
import sys
import time
import typing
from pathlib import Path
from typing import Any

import numpy as np

from reprlab.config import (
    ArgParser,
    explicit_args,
    field_name,
    field_types,
    parse_value,
    unwrap_optional,
)
from reprlab.config import add_arguments as add_config_arguments
from reprlab.data import check_inputs, default_cifar10
from reprlab.errors import ReprlabError, TrainingFailed
from reprlab.io import (
    DISPLAY_ONLY,
    RUN_CONTROL,
    check_out_folder,
    config_diff,
    default_run_dir,
    differing_keys,
    hold_folder,
    holds_files,
    read_json,
    read_jsonl,
    release_folder,
    remove_folder,
    reprlab_record,
    to_json,
    write_json,
    write_text,
)
from reprlab.modes import MODES

#: Metrics drawn as overlays when any run logged them.
OVERLAY_KEYS = ("val_acc", "val_loss", "train_acc", "train_loss", "knn_acc")
RESULT_COLUMNS = (
    "status",
    # the returned model (best weights restored) on the whole validation split, as the run
    # prints it (cont_rep: its kNN accuracy); then the logged evaluations
    "val_acc",
    "final_train_acc",
    "final_val_acc",
    "best_val_acc",
    "test_acc",  # only when --test_data carries labels (a column only if some run has it)
    "final_train_loss",
    "final_val_loss",
    "iterations",
    "stop_reason",
    "wall_time_s",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mode", choices=sorted(MODES), help="the mode to sweep")
    parser.add_argument(
        "mode_args",
        nargs=argparse.REMAINDER,
        metavar="--grid FLAG=V1,V2 ... [MODE FLAGS]",
        help="--grid FLAG=V1,V2 (repeatable), --preset, and any flag of the mode "
        "(applied to every run); see `reprlab sweep MODE --help`",
    )


def _mode_parser(mode: str) -> argparse.ArgumentParser:
    cls, _ = MODES[mode].load()
    p = ArgParser(
        prog=f"reprlab sweep {mode}",
        description=f"Run {mode} over every combination of the --grid values.",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="FLAG=V1,V2",
        help="a flag and its values (repeatable; every combination runs)",
    )
    if getattr(cls, "PRESETS", None):
        p.add_argument(
            "--preset",
            choices=sorted(cls.PRESETS),
            help=f"the mode's starting configuration (default: {cls.DEFAULT_PRESET})",
        )
    # these two name the sweep's folder, not one run's
    helps = {
        "out": "sweep folder, one run folder per setting inside "
        "(default: runs/sweep-<mode>-<time>)",
        "overwrite": "replace an existing sweep folder of another configuration",
    }
    add_config_arguments(p, cls, helps)
    return p


def parse_grid(mode: str, items: list[str]) -> dict[str, list[Any]]:
    """``["batch_size=256,4096"]`` -> ``{"batch_size": [256, 4096]}``, typed by the field."""
    cls, _ = MODES[mode].load()
    fields = field_types(cls)
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, eq, text = item.partition("=")
        given = key.strip().lstrip("-").replace("-", "_")
        if not eq or not given:
            raise ReprlabError(f"--grid {item!r}: expected FLAG=V1,V2,...")
        name = field_name(cls, given)
        if name is None and given == "preset":
            raise ReprlabError(f"--grid {key}: presets are not swept (one sweep per --preset)")
        if name is None:
            raise ReprlabError(f"--grid {key}: {mode} has no flag --{given}")
        if name in RUN_CONTROL:
            raise ReprlabError(f"--grid {key}: cannot be swept (set by the sweep)")
        if name in DISPLAY_ONLY:
            raise ReprlabError(f"--grid {key}: changes no result (how a run shows or saves "
                               "its progress), so there is nothing to compare")  # fmt: skip
        if name in grid:
            raise ReprlabError(f"--grid {key}: given twice")
        tp = fields[name]
        inner, _ = unwrap_optional(tp)
        # values that hold commas themselves (lists, logistic's --classes) are split at ";"
        sep = ";" if typing.get_origin(inner) in (tuple, list) or ";" in text else ","
        texts = [t.strip() for t in text.split(sep)]
        if any(t == "" for t in texts):
            raise ReprlabError(f"--grid {key}: empty value in {text!r}")
        grid[name] = [parse_value(tp, t, f"grid {name}") for t in texts]
        if len(set(map(repr, grid[name]))) != len(grid[name]):
            raise ReprlabError(f"--grid {key}: repeated value in {text!r}")
    if not grid:
        raise ReprlabError("--grid: give at least one, e.g. --grid batch_size=256,4096")
    return grid


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "+".join(_show(x) for x in v) or "none"
    if isinstance(v, float):
        short = f"{v:g}"
        return short if float(short) == v else repr(v)  # 0.1000001 is not 0.1
    return str(v)


def grid_runs(grid: dict[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(folder name, setting) of every combination of ``grid``, in the grid's order."""
    combos = [dict(zip(grid, vals, strict=True)) for vals in itertools.product(*grid.values())]
    return [(run_name(c), c) for c in combos]


def run_name(combo: dict[str, Any]) -> str:
    """A folder name from the values, e.g. ``batch_size=256,grad_norm_clip=5``."""
    name = ",".join(f"{k}={_show(v)}" for k, v in combo.items())
    return re.sub(r"[^A-Za-z0-9=,.+_-]", "_", name)


def _metrics(summary: dict[str, Any]) -> dict[str, Any]:
    from reprlab.report import headline_val_acc, stage_metrics

    m = stage_metrics(summary)
    m["val_acc"] = headline_val_acc(m)[0]
    return m


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write_results(out: Path, grid: dict[str, list[Any]], rows: list[dict[str, Any]]) -> None:
    """``results.csv`` (full precision) and ``results.md`` (a readable table)."""
    known = {"run", *grid, *RESULT_COLUMNS}
    extra = sorted({k for r in rows for k in r if k not in known})  # e.g. cont_rep's knn_acc
    metrics = [c for c in (*RESULT_COLUMNS, *extra) if any(r.get(c) is not None for r in rows)]
    cols = ["run", *grid, *metrics]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else _show(r[c]) if c in grid else r[c] for c in cols])
    write_text(out / "results.csv", buf.getvalue())
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [_show(r[c]) if c in grid else _fmt(r.get(c)) for c in cols]
        md.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    write_text(out / "results.md", "\n".join(md) + "\n")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def by_setting(grid: dict[str, list[Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by every grid flag but ``seed``: ``n`` and, per numeric metric, its
    ``<metric>_mean``, ``<metric>_std`` (sample, ddof=1; 0 for one run), ``_min`` and ``_max``.

    Only finished runs count; settings keep the order of their first run.
    """
    keys = [k for k in grid if k != "seed"]
    groups: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for r in rows:
        setting = {k: r[k] for k in keys}
        groups.setdefault(repr(setting), (setting, []))[1].append(r)
    out = []
    for setting, members in groups.values():
        done = [r for r in members if r.get("status") == "finished"]
        agg: dict[str, Any] = {**setting, "n": len(done), "seeds": [r["seed"] for r in done]}
        metrics = dict.fromkeys(
            c for r in done for c, v in r.items() if c not in grid and _is_number(v)
        )
        for c in metrics:
            vals = np.array([r[c] for r in done if _is_number(r.get(c))], float)
            agg[f"{c}_mean"] = float(vals.mean())
            agg[f"{c}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            agg[f"{c}_min"], agg[f"{c}_max"] = float(vals.min()), float(vals.max())
        out.append(agg)
    return out


def write_by_setting(out: Path, grid: dict[str, list[Any]], groups: list[dict[str, Any]]) -> None:
    """``by_setting.csv`` (every statistic) and ``by_setting.md`` (mean ± std [min, max])."""
    keys = [k for k in grid if k != "seed"]
    stats = [
        c for c in dict.fromkeys(c for g in groups for c in g) if c not in (*keys, "n", "seeds")
    ]
    cols = [*keys, "n", "seeds", *stats]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for g in groups:
        w.writerow([_show(g.get(c)) if c in (*keys, "seeds") else g.get(c, "") for c in cols])
    write_text(out / "by_setting.csv", buf.getvalue())
    metrics = [c[: -len("_mean")] for c in stats if c.endswith("_mean")]
    head = [*keys, "n", *metrics]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [_show(g[k]) for k in keys] + [str(g["n"])]
        for m in metrics:
            if f"{m}_mean" not in g:
                cells.append("")
                continue
            cells.append(
                f"{g[m + '_mean']:.4g} ± {g[m + '_std']:.2g} "
                f"[{g[m + '_min']:.4g}, {g[m + '_max']:.4g}]"
            )
        md.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    write_text(out / "by_setting.md", "\n".join(md) + "\n")


def run_sweep(
    mode: str,
    grid: dict[str, list[Any]],
    base: dict[str, Any],
    preset: str | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Run every combination of ``grid`` over ``base`` (typed overrides); return the rows."""
    from reprlab.modes import config_for, run_mode, with_inherited
    from reprlab.plots import plot_overlay
    from reprlab.report import render_report

    folder = Path(out) if out else default_run_dir(f"sweep-{mode}")
    cls, _ = MODES[mode].load()
    has_resume = "resume" in field_types(cls)
    runs = []
    for name, combo in grid_runs(grid):  # validate every combination before anything is written
        if any(name == other for other, _, _ in runs):
            raise ReprlabError(f"--grid: two settings share the run folder name {name!r}")
        vals = {**base, **combo, "out": str(folder / name), "overwrite": False}
        vals = with_inherited(mode, vals)  # a fine-tuning run: the encoder's split
        config_for(mode, vals, preset)
        runs.append((name, combo, vals))
    check_inputs([v for _, _, v in runs])  # bad data: error before the folder is made
    record = {
        "mode": mode,
        "preset": preset,
        "grid": grid,
        "base": {k: v for k, v in base.items() if k not in RUN_CONTROL},
    }
    record = json.loads(to_json(record))
    sj = folder / "sweep.json"
    # a grid over --data: the folder is inside none of them
    check_out_folder(folder, f"--out {folder}", [vals for _, _, vals in runs])
    old = reprlab_record(sj, "sweep")
    extended = ""
    if old is not None:
        diff = differing_keys(old, record)
        if diff == ["grid"] and list(old["grid"]) == list(record["grid"]):
            # the same flags over other values: the runs of values in both grids are the same
            # runs (each folder's config.json still checks it), so they are kept, not redone
            extended = config_diff(old, record)
        elif diff:
            if not overwrite:
                raise ReprlabError(
                    f"--out {folder}: holds a sweep with another configuration "
                    f"({config_diff(old, record)}); choose another --out, or pass --overwrite"
                )
            remove_folder(folder)
    elif holds_files(folder):
        raise ReprlabError(
            f"--out {folder}: folder exists and is not a reprlab sweep (choose another --out)"
        )
    if any(v.get("data") is None for _, _, v in runs):
        # the default CIFAR-10, downloaded (or refused, offline) once here, not once per run
        default_cifar10("train")
    if extended:
        kept = sum((folder / name / "summary.json").is_file() for name, _, _ in runs)
        print(f"[sweep] {folder}: the grid changed ({extended}); the runs of settings in both "
              f"grids are kept ({kept} with results)", file=sys.stderr)  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    hold_folder(folder)
    write_json(sj, record)
    print(f"[sweep] {folder}: {len(runs)} runs of {mode}", file=sys.stderr)
    rows = []
    curves: dict[str, list[dict[str, Any]]] = {}
    for i, (name, combo, vals) in enumerate(runs, 1):
        run = folder / name
        prefix = f"[sweep] {i}/{len(runs)} {name}"
        summary: dict[str, Any] = {}
        if (run / "summary.json").is_file():
            summary = read_json(run / "summary.json")
        if summary.get("status") == "finished":
            print(f"{prefix}: finished earlier, skipped", file=sys.stderr)
        else:
            if has_resume and (run / "config.json").is_file():
                vals = {**vals, "resume": True}
            print(f"{prefix}: running", file=sys.stderr)
            t0 = time.perf_counter()
            try:
                summary = run_mode(mode, vals, preset)
            except TrainingFailed as e:
                print(f"{prefix}: failed: {e}", file=sys.stderr)
                summary = (
                    read_json(run / "summary.json") if (run / "summary.json").is_file() else {}
                )
                summary = {**summary, "status": "failed"}
                summary.setdefault("wall_time_s", round(time.perf_counter() - t0, 2))
            except ReprlabError as e:  # this setting does not fit the data (say a batch larger
                # than the training split): the other settings still run
                print(f"{prefix}: refused: {e}", file=sys.stderr)
                summary = {"status": "refused", "error": str(e)}
            finally:  # a sweep of a thousand runs must not keep a thousand lock files open
                release_folder(run)
        m = _metrics(summary)
        # cont_rep's kNN accuracy of the embeddings comes as an extra column
        rows.append({"run": name, **combo, **{c: m.get(c) for c in RESULT_COLUMNS}, **m["knn"]})
        curves[name] = read_jsonl(run / "metrics.jsonl")
    for key in OVERLAY_KEYS:
        if any(r.get(key) is not None for rs in curves.values() for r in rs):
            plot_overlay(curves, key, folder / f"{key}.png", title=f"{mode}: {key}")
    write_results(folder, grid, rows)
    if len(grid.get("seed", [])) > 1:
        write_by_setting(folder, grid, by_setting(grid, rows))
    else:  # a grid that no longer sweeps seeds: no statistics of an earlier one stay behind
        for name in ("by_setting.csv", "by_setting.md"):
            (folder / name).unlink(missing_ok=True)
    if any((folder / name / "config.json").is_file() for name, _, _ in runs):
        render_report(folder)
    print((folder / "results.md").read_text(), end="")
    if (folder / "by_setting.md").is_file():
        print("\nover seeds: mean ± std [min, max]")
        print((folder / "by_setting.md").read_text(), end="")
    print(f"[sweep] results: {folder / 'results.csv'}", file=sys.stderr)
    return rows


def main(args: argparse.Namespace) -> int:
    mode = args.mode
    cls, _ = MODES[mode].load()
    ns = _mode_parser(mode).parse_args(args.mode_args)
    grid = parse_grid(mode, ns.grid)
    base = explicit_args(ns, cls)
    out = base.pop("out", None)
    overwrite = bool(base.pop("overwrite", False))
    base.pop("resume", None)
    rows = run_sweep(mode, grid, base, getattr(ns, "preset", None), out, overwrite)
    return 1 if any(r.get("status") != "finished" for r in rows) else 0
