"""``reprlab pipeline``: every mode of the course report in one folder, resumable, one report.

    reprlab pipeline --preset smoke --data train.tar.xz --test_data test.npz --out runs/p

runs the stages ``logistic``, ``softmax``, ``cont_rep``, ``fine_tune_linear`` and
``fine_tune_nn`` (the fine-tuning stages load the ``cont_rep`` stage's ``encoder.pt``) each in its
own sub-folder, then writes ``pipeline_summary.json`` and a self-contained ``report.html``.
Rerunning the same command resumes: finished stages are skipped, an interrupted one continues
from its checkpoint.

Where a stage's options come from, lowest to highest precedence:

1. the pipeline preset (:data:`PRESETS`): a mode preset plus per-stage overrides;
2. the shared options (``--data --test_data --seed --limit``; a config file's top level, then the
   command line);
3. the config file's table for the stage (``[softmax]``);
4. ``--set STAGE.FIELD=VALUE`` on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprlab.config import add_arguments as add_config_arguments
from reprlab.config import arg, field_name, field_types, from_mapping, parse_value
from reprlab.data import check_inputs
from reprlab.errors import ReprlabError, TrainingFailed
from reprlab.io import (
    RUN_CONTROL,
    check_out_folder,
    comparable,
    config_diff,
    default_run_dir,
    differing_keys,
    hold_folder,
    holds_files,
    read_json,
    read_jsonl,
    remove_folder,
    reprlab_record,
    write_json,
)
from reprlab.modes import MODES, PIPELINE_STAGES

STAGES = PIPELINE_STAGES
#: Stages that train a classifier (``cont_rep`` predicts test labels with kNN).
CLASSIFIERS = frozenset({"logistic", "softmax", "fine_tune_linear", "fine_tune_nn"})
#: Stages that load the encoder trained by the ``cont_rep`` stage.
NEEDS_ENCODER = frozenset({"fine_tune_linear", "fine_tune_nn"})

# Each pipeline preset maps a stage to (the mode's own preset, or None for its default;
# per-stage overrides on top of it). The key names are the modes' config fields.
PRESETS: dict[str, dict[str, tuple[str | None, dict[str, Any]]]] = {
    # smoke: CI's end-to-end check that every stage runs and writes every file, on a stratified
    # 1,500-image subset with a handful of iterations and the smallest encoder, including the
    # predictions of every classifier on the 10k test images. Not meant to learn much:
    # under 2 minutes on a 2-core CPU.
    "smoke": {
        "logistic": (None, {"limit": 1500, "num_iters": 60, "eval_every": 10}),
        "softmax": (None, {"limit": 1500, "num_iters": 60, "eval_every": 10}),
        "cont_rep": (
            "fast",
            {
                "limit": 1500,
                "encoder": "airbench_small",
                "batch_size": 128,
                "num_iters": 20,
                "warmup_iters": 4,
                "eval_every": 10,
                "knn_eval_size": 600,
                # the mirror pass doubles embedding time, the shifts triple it: not needed here
                "flip_tta": False,
                "translate_tta": False,
            },
        ),
        "fine_tune_linear": (
            None,
            {
                "limit": 1500,
                "num_iters": 100,
                "batch_size": 256,
                "eval_every": 10,
                "flip_tta": False,
                "translate_tta": False,
            },
        ),
        "fine_tune_nn": (
            None,
            # the 1-pixel shifts triple the passes over the 10,000 test images: not needed here
            {
                "limit": 1500,
                "num_iters": 10,
                "batch_size": 128,
                "eval_every": 5,
                "translate_tta": False,
            },
        ),
    },
    # fast: what the default (auto) runs on a GPU or a CPU with native bf16; every mode's own
    # defaults (their "fast" presets), tuned for a CPU, and a 5,000-point t-SNE (half the
    # default's seconds; the map is for looking at) so that the whole report fits 20 minutes on
    # 2 cores with native bf16, with a margin (README).
    "fast": {
        **{stage: (None, {}) for stage in STAGES},
        "cont_rep": (None, {"tsne_max": 5000}),
    },
    # timed: fast, with its two training loops sized by the clock (--time_budget) instead of
    # by iteration counts. On a CPU without native bf16, where a float32 step costs ~2x, the
    # fixed counts take over 30 minutes; these budgets took 19.4 there (README). A faster
    # machine trains longer in the same minutes. Repeats agree to the timing's few percent.
    "timed": {
        **{stage: (None, {}) for stage in STAGES},
        "cont_rep": (None, {"tsne_max": 5000, "time_budget": 550.0}),
        "fine_tune_nn": (None, {"time_budget": 320.0}),
    },
    # gpu: what auto runs on a CUDA GPU. fast's recipes on airbench96's widths and depth
    # (airbench_wide, no residuals, 9.98 M parameters) at twice fast's triplet steps (4200) and
    # 25 epochs of fine-tuning (3900 steps): on a GPU a step of the wide net costs about what
    # airbench_cpu's does (the small nets are bound by kernel launches there); ~7 hours on 2
    # CPU cores. On an H200 (README): kNN 90.27 %, probe 90.22 %, fine-tuning 91.63 %, in
    # minutes.
    "gpu": {
        **{stage: (None, {}) for stage in STAGES},
        "cont_rep": (None, {"encoder": "airbench_wide", "num_iters": 4200}),
        # run to the end, as measured: with patience 20 counted from the start (before
        # --early_stop_from existed) the H200 run stopped at iteration 2100 with iteration 100's
        # weights (88.90 %, against 91.63 % run to the end)
        "fine_tune_nn": (None, {"num_iters": 3900, "patience": 0}),
    },
    # seed: the course report's hyperparameters (its Tables 1-6), for a GPU: hours on a CPU.
    "seed": {
        # Tables 1-2 (the linear modes' own seed presets): plain constant-lr SGD on plain pixels
        "logistic": ("seed", {}),
        "softmax": ("seed", {}),
        # Table 3 / §2.2: VGG-16-BN, z=64, batch 2048, 2000 iterations, margin 1, patience 300.
        "cont_rep": ("seed", {}),
        # Tables 4-5: plain SGD, lr 1e-4, batch 2048, 4000 iterations, patience 300.
        "fine_tune_linear": ("seed", {}),
        # Tables 6 and 8: Adam lr 1e-4, batch 2048, 4000 iterations, patience 10, 512-unit head.
        "fine_tune_nn": ("seed", {}),
    },
}
#: auto (the default): ``gpu`` on a CUDA GPU; ``fast`` where its fixed iteration counts fit 20
#: minutes (a CPU with native bf16, or Apple's mps), ``timed`` on a CPU without native bf16,
#: where they take over 30 (README); a folder that already holds a pipeline of one of these
#: keeps its preset (concrete_preset).
AUTO = "auto"
AUTO_CHOICES = ("gpu", "fast", "timed")
DEFAULT_PRESET = AUTO
#: The pipeline's own --time_budget of a preset (seconds for everything; none: no limit).
#: timed: 19.5 minutes, so that the report is written inside 20 even when the machine slows
#: down mid-run (its stages' budgets, 550 + 320 s, leave ~300 s for everything else).
PRESET_TIME_BUDGETS: dict[str, float] = {"timed": 1170.0}


@dataclass
class PipelineOptions:
    """The pipeline's own options (command line, or a config file's top level)."""

    data: str | None = arg(None, "training images for every stage (see a mode's --data)")
    test_data: str | None = arg(None, "images to predict: every stage writes its predictions.csv")
    out: str | None = arg(
        None, "pipeline folder (none: runs/pipeline-<time>); rerun with the same one to resume"
    )
    seed: int | None = arg(None, "seed for every stage (none: each mode's own)")
    limit: int | None = arg(None, "stratified subset of this many training images, every stage")
    progress: bool | None = arg(None, "progress bars in every stage (none: on)")
    device: str | None = arg(
        None, "device of the neural stages: auto (cuda, mps, cpu) | cpu | cuda | cuda:N | mps "
        "(none: each stage's own, auto); --preset auto picks by it"
    )
    overwrite: bool = arg(False, "replace an existing pipeline folder of another configuration")
    preset: str = arg(
        DEFAULT_PRESET,
        "starting configuration (auto: gpu on a CUDA GPU, fast on mps or a CPU with native bf16, "
        "timed on a CPU without)",
        choices=[AUTO, *sorted(PRESETS)],
    )
    stages: tuple[str, ...] = arg(STAGES, "comma-separated stages to run")
    time_budget: float | None = arg(
        None,
        "seconds for the whole pipeline (none: the preset's; timed: 1170): a neural stage "
        "trains fewer iterations if the stages before it ran long, leaving the --time_budget "
        "of the neural stages after it (0: no limit)",
    )


SHARED = ("data", "test_data", "seed", "limit", "progress", "device")


# ---------------------------------------------------------------------------------------------
# Resolving the configuration
# ---------------------------------------------------------------------------------------------


def _fields(mode: str) -> dict[str, Any]:
    return field_types(MODES[mode].load()[0])


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["softmax.lr=0.01", ...]`` -> ``{"softmax": {"lr": 0.01}}``, typed by the field."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, text = item.partition("=")
        stage, dot, name = key.strip().partition(".")
        name = name.replace("-", "_")
        if not eq or not dot or not name:
            raise ReprlabError(f"--set {item!r}: expected STAGE.FIELD=VALUE, e.g. softmax.lr=0.01")
        if stage not in STAGES:
            raise ReprlabError(
                f"--set {key}: unknown stage {stage!r} (stages: {', '.join(STAGES)})"
            )
        cls, _ = MODES[stage].load()
        fields = field_types(cls)
        given, name = name, field_name(cls, name)
        if name is None:
            raise ReprlabError(f"--set {key}: {stage} has no option {given!r}")
        if name in RUN_CONTROL:
            raise ReprlabError(f"--set {key}: set by the pipeline (use the pipeline's --out)")
        out.setdefault(stage, {})[name] = parse_value(fields[name], text, f"set {key}")
    return out


def load_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A TOML file: top-level pipeline options and one ``[stage]`` table per stage (typed)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReprlabError(f"--config {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReprlabError(f"--config {path}: cannot read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ReprlabError(f"--config {path}: not valid TOML ({e})") from None
    top = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    tables: dict[str, dict[str, Any]] = {}
    for key, table in raw.items():
        if not isinstance(table, dict):
            if key in STAGES:
                raise ReprlabError(f"{path}: key {key!r} must be a table [{key}]")
            continue
        if key not in STAGES:
            raise ReprlabError(
                f"{path}: unknown key {key!r} (tables are stages: {', '.join(STAGES)})"
            )
        cls, _ = MODES[key].load()
        where = f"{path} [{key}]"
        for name in table:
            if field_name(cls, name) in RUN_CONTROL:
                raise ReprlabError(f"{where}: key {name!r} is set by the pipeline")
        cfg = from_mapping(cls, table, where=where)  # names an unknown key or a wrong type
        fields = [field_name(cls, n) for n in table]  # kebab-case and aliases as the flags
        tables[key] = {f: getattr(cfg, f) for f in fields if f is not None}
    opts = from_mapping(PipelineOptions, top, where=str(path))
    top_fields = [field_name(PipelineOptions, k) for k in top]
    given = {f: getattr(opts, f) for f in top_fields if f is not None}
    # checked here too, so that a typo in the file is refused even where the command line
    # overrides the key, not kept for the next run without the flag
    _check_names(lambda key: f"{path}: key {key!r}", given.get("preset"), given.get("stages"))
    return given, tables


def _check_names(
    where: Callable[[str], str], preset: str | None, stages: Sequence[str] | None
) -> None:
    """Refuse an unknown preset or stage; ``where(key)`` names the option as the user wrote it."""
    if preset is not None and preset != AUTO and preset not in PRESETS:
        raise ReprlabError(
            f"{where('preset')}: unknown preset {preset!r} "
            f"(choose from {[AUTO, *sorted(PRESETS)]})"
        )
    unknown = [s for s in stages or () if s not in STAGES]
    if unknown:
        raise ReprlabError(
            f"{where('stages')}: unknown stage {unknown[0]!r} (choose from {', '.join(STAGES)})"
        )


def resolve_options(ns: argparse.Namespace) -> tuple[PipelineOptions, dict[str, dict[str, Any]]]:
    """Pipeline options (defaults < config file < command line) and per-stage overrides."""
    file_opts, tables = load_config_file(ns.config) if ns.config else ({}, {})
    # a flag given on the command line, "none" included, beats the config file
    names = [f.name for f in dataclasses.fields(PipelineOptions)]
    cli = {name: getattr(ns, name) for name in names if hasattr(ns, name)}
    opts = PipelineOptions(**{**file_opts, **cli})

    def where(key: str) -> str:  # name the option where the user wrote it
        return f"{ns.config}: key {key!r}" if key in file_opts and key not in cli else f"--{key}"

    _check_names(where, opts.preset, opts.stages)
    if not opts.stages:
        raise ReprlabError(f"{where('stages')}: no stage given")
    if opts.limit is not None and opts.limit < 2:
        raise ReprlabError(f"{where('limit')} must be >= 2, got {opts.limit}")
    if opts.device is not None:  # an unknown or absent device: refused before any stage runs
        from reprlab.train import pick_device

        try:
            pick_device(opts.device)
        except ReprlabError as e:
            if where("device") == "--device":
                raise
            raise ReprlabError(f"{where('device')}: {e}") from None
    if opts.time_budget is not None and not 0 <= opts.time_budget < math.inf:
        raise ReprlabError(
            f"{where('time_budget')} must be a finite number >= 0, got {opts.time_budget}"
        )
    overrides: dict[str, dict[str, Any]] = {s: dict(t) for s, t in tables.items()}
    for stage, vals in parse_sets(ns.set or []).items():
        overrides.setdefault(stage, {}).update(vals)
    return opts, overrides


def concrete_preset(opts: PipelineOptions, folder: Path | None = None) -> tuple[str, str]:
    """The preset the pipeline runs, and why when ``--preset auto`` chose it. A folder that
    holds a ``gpu``, ``fast`` or ``timed`` pipeline keeps it (rerunning the same command
    resumes, on this machine or another); otherwise ``gpu`` where the default device is a CUDA
    GPU (``--device``, or the default one), ``fast`` on Apple's mps or a CPU with native
    bf16, ``timed`` on a CPU without (its
    float32 steps cost ~2x, so fast's iteration counts would take over 30 minutes there)."""
    from reprlab.train import cpu_has_native_bf16, pick_device

    if opts.preset != AUTO:
        return opts.preset, ""
    if folder is None and opts.out:
        folder = Path(opts.out)
    pj = folder / "pipeline.json" if folder is not None else None
    if pj is not None and pj.is_file():
        held = (reprlab_record(pj, "pipeline") or {}).get("preset")
        if held in AUTO_CHOICES:
            return held, f"the preset of the pipeline in {folder}"
    device = pick_device(opts.device or "auto")
    which = "--device" if opts.device not in (None, "auto") else "the default device"
    if device.type == "cuda":
        return "gpu", f"{which} is a CUDA GPU"
    if device.type != "cpu":
        return "fast", f"{which} is {device.type}"
    if cpu_has_native_bf16():
        return "fast", "this CPU has native bf16 (AMX or AVX512-BF16)"
    return "timed", "this CPU has no native bf16 (AMX or AVX512-BF16): float32 steps"


@dataclass
class Stage:
    name: str
    mode_preset: str | None
    overrides: dict[str, Any]  # typed values passed to run_mode (without resume)
    config: dict[str, Any]  # the resolved configuration, as saved in pipeline.json


def plan_stages(
    opts: PipelineOptions, overrides: dict[str, dict[str, Any]], folder: Path
) -> list[Stage]:
    """Every selected stage's validated configuration (nothing is written).

    A stage's flags: its preset's, then the pipeline-wide options, then its own (``--set``, a
    ``[stage]`` table). A fine-tuning stage splits as the run of its encoder where its flags
    leave the split open: this pipeline's ``cont_rep`` stage as planned (selected or not, so
    every rerun plans the same, before and after it ran; it has the pipeline-wide options
    too), or the run on record beside an encoder from elsewhere (which a pipeline-wide option
    the user gave still overrides, with the fine-tuning run's split warning)."""
    from reprlab.finetune import SPLIT_FLAGS
    from reprlab.modes import config_for, with_inherited

    preset = concrete_preset(opts, folder)[0]
    own_encoder = folder / "cont_rep" / "encoder.pt"

    def stage_config(name: str) -> tuple[str | None, dict[str, Any], Any]:
        mode_preset, preset_over = PRESETS[preset][name]
        cls, _ = MODES[name].load()
        fields = _fields(name)
        vals: dict[str, Any] = {}
        if preset_over:  # checked like a config file, so a typo in PRESETS is caught
            base = from_mapping(cls, preset_over, where=f"pipeline preset {preset!r} [{name}]")
            vals.update({k: getattr(base, k) for k in preset_over})
        own = overrides.get(name, {})  # the stage's own flags
        shared = {k: getattr(opts, k) for k in SHARED if k in fields}
        shared = {k: v for k, v in shared.items() if v is not None}  # None: each stage's own
        given = {**shared, **own}  # what the user set for this stage, not the preset
        vals.update(given)
        vals["out"] = str(folder / name)
        vals["overwrite"] = False
        try:
            if name in NEEDS_ENCODER and "encoder_path" in fields:
                vals.setdefault("encoder_path", str(own_encoder))
                # this pipeline's, as a file or its folder (which need not exist yet)
                enc = Path(vals["encoder_path"]).expanduser().resolve()
                if enc in (own_encoder.resolve(), own_encoder.parent.resolve()):
                    vals.update({k: getattr(encoder_cfg, k) for k in SPLIT_FLAGS if k not in own})
                else:  # another run's: its split where the user set none (a preset's is not)
                    full = with_inherited(name, {**given, "encoder_path": vals["encoder_path"]})
                    vals.update({k: full[k] for k in SPLIT_FLAGS if k in full and k not in given})
            return mode_preset, vals, config_for(name, vals, mode_preset)
        except ReprlabError as e:  # say which stage (--set STAGE.FIELD or a [STAGE] table)
            raise ReprlabError(f"stage {name}: {e}") from None

    planned = {"cont_rep": stage_config("cont_rep")}  # the encoder's, needed selected or not
    encoder_cfg = planned["cont_rep"][2]
    plan = []
    for name in STAGES:
        if name in opts.stages:
            mode_preset, vals, cfg = planned.get(name) or stage_config(name)
            plan.append(Stage(name, mode_preset, vals, comparable(cfg.to_dict())))
    return plan


def _check_dependencies(plan: list[Stage], folder: Path) -> None:
    names = {s.name for s in plan}
    for s in plan:
        enc = s.overrides.get("encoder_path")
        if not enc or s.name not in NEEDS_ENCODER or "cont_rep" in names:
            continue
        path = Path(enc).expanduser()
        if not (path / "encoder.pt" if path.is_dir() else path).is_file():
            raise ReprlabError(
                f"--stages: {s.name} needs an encoder ({enc} not found): add cont_rep to "
                f"--stages, or --set {s.name}.encoder_path=PATH"
            )


OWN_ENCODER = "<pipeline>/cont_rep/encoder.pt"


def _portable(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A stage's configuration as ``pipeline.json`` keeps it: the pipeline's own encoder is
    written ``<pipeline>/cont_rep/encoder.pt``, so that a pipeline folder moved or renamed, or
    named by another path (relative or absolute), is still the same pipeline."""
    own = {str(f / "cont_rep" / "encoder.pt") for f in (folder, folder.resolve())}
    return {
        k: OWN_ENCODER if k == "encoder_path" and v in own else v for k, v in config.items()
    }


def _follow_own_encoder(run: Path, config: dict[str, Any], folder: Path) -> None:
    """An interrupted fine-tuning stage of a pipeline folder that was moved or renamed since:
    its ``config.json`` names the pipeline's own encoder where the folder used to be. Point it
    to where the folder is now, so that the stage resumes (``pipeline.json`` has already shown
    this to be the same pipeline, whose stages use its own encoder)."""
    if _portable(config, folder).get("encoder_path") != OWN_ENCODER:
        return
    record = reprlab_record(run / "config.json", "run")
    if record is None:  # not a run: the stage itself refuses the folder
        return
    stored = record["config"].get("encoder_path")
    if (
        isinstance(stored, str)
        and stored != config["encoder_path"]
        and Path(stored).parts[-2:] == ("cont_rep", "encoder.pt")
    ):
        record["config"]["encoder_path"] = config["encoder_path"]
        write_json(run / "config.json", record)


def open_folder(folder: Path, preset: str, plan: list[Stage], overwrite: bool) -> dict[str, Any]:
    """Create or reuse the pipeline folder; refuse one of another configuration."""
    stages = {s.name: _portable(s.config, folder) for s in plan}
    record = {"preset": preset, "stages": stages}
    pj = folder / "pipeline.json"
    check_out_folder(folder, f"--out {folder}", [s.config for s in plan])
    old = reprlab_record(pj, "pipeline")
    if old is not None:
        # records of earlier releases name the encoder by its path in this very folder
        old_stages = {
            k: _portable(v, folder) if isinstance(v, dict) else v
            for k, v in (old.get("stages") or {}).items()
        }
        same = old.get("preset") == preset and not any(
            differing_keys(old_stages.get(name, cfg), cfg) for name, cfg in stages.items()
        )
        if same:
            record["stages"] = {
                k: record["stages"].get(k, old_stages.get(k))
                for k in STAGES
                if k in record["stages"] or k in old_stages
            }
        elif overwrite:
            remove_folder(folder)
        elif not any((folder / name / "config.json").is_file() for name in STAGES):
            # no stage ever started under the old configuration (it failed on its input): no
            # results to protect, so the new configuration simply replaces it
            print(f"[pipeline] {folder}: no stage had run; replacing its configuration",
                  file=sys.stderr)
        else:
            stage = next(
                (k for k, cfg in stages.items() if differing_keys(old_stages.get(k, cfg), cfg)),
                None,
            )
            diff = (
                f"preset {old.get('preset')} -> {preset}"
                if stage is None
                else f"{stage}: {config_diff(old_stages[stage], stages[stage])}"
            )
            raise ReprlabError(
                f"--out {folder}: holds a pipeline with another configuration ({diff}); "
                "choose another --out, or pass --overwrite"
            )
    elif holds_files(folder):
        raise ReprlabError(
            f"--out {folder}: folder exists and is not a reprlab pipeline (choose another --out)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    hold_folder(folder)
    write_json(pj, record)
    return record


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def _status(run: Path) -> str | None:
    f = run / "summary.json"
    if not f.is_file():
        return None
    try:
        return read_json(f).get("status")
    except ReprlabError:
        return None


def _fmt_acc(v: Any) -> str:
    return f"{100 * v:6.2f} %" if isinstance(v, (int, float)) and v == v else "     —  "


def summary_table(stages: dict[str, dict[str, Any]]) -> str:
    """The final table printed to stdout."""
    from reprlab.report import headline_val_acc, model_or_final

    scored = any(s.get("test_acc") is not None for s in stages.values())  # labelled test data
    lines = [
        f"{'stage':<17} {'status':<22} {'train acc':>9} {'val acc':>10} "
        + (f"{'test acc':>9} " if scored else "")
        + f"{'iters':>6} {'wall':>8}  stopped because"
    ]
    knn_note = False
    for name, s in stages.items():
        it = s.get("iterations")
        wall = s.get("wall_time_s")
        acc, is_knn = headline_val_acc(s)  # the returned model, whole validation split
        val = _fmt_acc(acc) + ("*" if is_knn else " ")
        knn_note = knn_note or is_knn
        lines.append(
            f"{name:<17} {s.get('status', '?'):<22} {_fmt_acc(model_or_final(s, 'train_acc')):>9} "
            f"{val:>10} " + (f"{_fmt_acc(s.get('test_acc')):>9} " if scored else "")
            + f"{'' if it is None else it:>6} "
            f"{'' if wall is None else f'{wall:.1f} s':>8}  {s.get('stop_reason') or ''}"
        )
    if knn_note:
        lines.append("* kNN accuracy of the embeddings on the validation split")
    return "\n".join(lines)


def run_pipeline(
    opts: PipelineOptions, overrides: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Run (or resume) the pipeline; returns the content of ``pipeline_summary.json``."""
    from reprlab.modes import run_mode
    from reprlab.report import render_report, stage_metrics

    folder = Path(opts.out) if opts.out else default_run_dir("pipeline")
    preset, why = concrete_preset(opts, folder)
    opts = dataclasses.replace(opts, preset=preset)
    chosen = f" by --preset auto: {why}" if why else ""
    plan = plan_stages(opts, overrides or {}, folder)
    _check_dependencies(plan, folder)
    check_inputs([s.overrides for s in plan])  # bad data: error before the folder is made
    open_folder(folder, opts.preset, plan, opts.overwrite)
    print(
        f"[pipeline] {folder} (preset {opts.preset}{chosen}); rerun with --out {folder} to "
        "resume",
        file=sys.stderr,
    )
    psum_path = folder / "pipeline_summary.json"
    old = {}
    if psum_path.is_file():
        old = read_json(psum_path).get("stages") or {}
    results: dict[str, dict[str, Any]] = {k: v for k, v in old.items() if k in STAGES}
    t_start = time.perf_counter()
    failed: set[str] = set()
    budget = pipeline_time_budget(opts)
    # seconds interrupted stages already spent (they resume, or restart, below)
    earlier = {
        st.name: _earlier_seconds(folder / st.name)
        for st in plan
        if _status(folder / st.name) != "finished"
    }
    # the wall-clock time the whole pipeline must be done by, counting earlier invocations
    spent = sum(
        v.get("wall_time_s") or 0.0
        for k, v in results.items()
        if isinstance(v, dict) and _status(folder / k) == "finished"
    ) + sum(earlier.values())
    end = time.time() + budget - spent if budget else None
    if end is not None:
        when = (
            f"done by {time.ctime(end)}"
            if end > time.time()
            else f"already spent ({spent - budget:.0f} s over); stages still to run train briefly"
        )
        print(f"[pipeline] --time_budget {budget:g} s: {when}", file=sys.stderr)

    def save() -> dict[str, Any]:
        ordered = {k: results[k] for k in STAGES if k in results}
        total = sum(v.get("wall_time_s") or 0.0 for v in ordered.values() if isinstance(v, dict))
        doc = {
            "preset": opts.preset,
            "folder": str(folder),
            "stages": ordered,
            "total_wall_time_s": round(total, 2),
            "time_budget_s": budget,
            "this_invocation_s": round(time.perf_counter() - t_start, 2),
        }
        write_json(psum_path, doc)
        return doc

    for i, st in enumerate(plan, 1):
        run = folder / st.name
        prefix = f"[pipeline] {i}/{len(plan)} {st.name}"
        if _status(run) == "finished":
            print(f"{prefix}: finished earlier, skipped", file=sys.stderr)
            m = stage_metrics(read_json(run / "summary.json"))
            prev = results.get(st.name, {})
            wall = prev.get("wall_time_s", m["wall_time_s"])
            results[st.name] = {**m, "status": "finished", "wall_time_s": wall, "skipped": True}
            continue
        if st.name in NEEDS_ENCODER and "cont_rep" in failed:
            print(f"{prefix}: skipped (cont_rep failed)", file=sys.stderr)
            results[st.name] = {"status": "skipped: cont_rep failed"}
            failed.add(st.name)
            continue
        vals = dict(st.overrides)
        if "resume" in _fields(st.name) and (run / "config.json").is_file():
            vals["resume"] = True
            _follow_own_encoder(run, st.config, folder)
        print(f"{prefix}: running{' (resuming)' if vals.get('resume') else ''}", file=sys.stderr)
        runtime = {}
        if end is not None and "time_budget" in _fields(st.name):
            runtime["deadline"] = end - _time_after(plan[i:], folder)
        t0 = time.perf_counter()
        try:
            summary = run_mode(st.name, vals, st.mode_preset, **runtime)
            status = "finished"
        except TrainingFailed as e:
            summary = _read_json_or_empty(run / "summary.json")
            status = f"failed: {e}"
            failed.add(st.name)
        # an interrupted stage's wall time counts its earlier sessions' logged seconds too
        wall = time.perf_counter() - t0 + earlier.get(st.name, 0.0)
        m = stage_metrics(summary or {})
        results[st.name] = {**m, "status": status, "wall_time_s": round(wall, 2), "skipped": False}
        save()
    doc = save()
    report = render_report(folder)
    print(summary_table(doc["stages"]))
    print(f"total {doc['total_wall_time_s']:.1f} s (this run {doc['this_invocation_s']:.1f} s)")
    print(f"report: {report}")
    doc["failed"] = sorted(failed)
    return doc


def pipeline_time_budget(opts: PipelineOptions) -> float:
    """The pipeline's --time_budget in seconds (its preset's when not given; 0: none)."""
    if opts.time_budget is not None:
        return float(opts.time_budget)
    return PRESET_TIME_BUDGETS.get(concrete_preset(opts)[0], 0.0)


def _time_after(later: list[Stage], folder: Path) -> float:
    """Seconds to keep for the stages after a timed one: their own --time_budget (a stage that
    counts iterations, or a linear one, is not reserved for; one finished earlier needs none)."""
    return sum(
        float(s.config.get("time_budget") or 0.0)
        for s in later
        if _status(folder / s.name) != "finished"
    )


def _earlier_seconds(run: Path) -> float:
    """Seconds an interrupted stage logged before this invocation: the training time of its
    last ``metrics.jsonl`` row (its earlier sessions' included). A lower bound: the stage's
    set-up and the seconds after that row are not on record."""
    try:
        rows = read_jsonl(run / "metrics.jsonl")
    except ReprlabError:
        return 0.0
    last = rows[-1].get("elapsed_s") if rows else None
    return float(last) if isinstance(last, (int, float)) and last > 0 else 0.0


def _read_json_or_empty(path: Path) -> dict[str, Any]:
    try:
        return read_json(path) if path.is_file() else {}
    except ReprlabError:
        return {}


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, PipelineOptions)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STAGE.FIELD=VALUE",
        help="override any flag of a stage, e.g. softmax.lr=0.01 (repeatable)",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE.toml",
        help="TOML file: pipeline options at the top level, a [stage] table per stage",
    )


def main(args: argparse.Namespace) -> int:
    opts, overrides = resolve_options(args)
    doc = run_pipeline(opts, overrides)  # Ctrl-C: the CLI says how to continue
    return 1 if doc["failed"] else 0
