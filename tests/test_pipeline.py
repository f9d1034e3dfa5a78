"""``reprlab pipeline``: the smoke preset end to end, resuming, overrides, bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reprlab.cli import main
from reprlab.io import LOCK_NAME
from reprlab.pipeline import CLASSIFIERS, PRESETS, STAGES

N_TEST = 10_000


def _png_ok(path: Path) -> None:
    assert path.is_file(), f"missing {path}"
    with Image.open(path) as im:
        im.verify()
        assert im.format == "PNG"
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def _files_state(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns
        for s in STAGES
        for p in (folder / s).rglob("*")
        if p.is_file()
    }


def test_smoke_pipeline_end_to_end(smoke_pipeline: dict) -> None:
    assert smoke_pipeline["rc"] == 0
    folder: Path = smoke_pipeline["dir"]
    print(f"smoke pipeline wall time: {smoke_pipeline['wall_s']:.1f} s")
    for stage in STAGES:
        run = folder / stage
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["mode"] == stage and "environment" in cfg
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert rows and all("iter" in r for r in rows)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "finished"
        assert summary["wall_time_s"] > 0 and summary.get("stop_reason")
        _png_ok(run / "loss.png")
        _png_ok(run / "accuracy.png")
        if stage in CLASSIFIERS:
            _png_ok(run / "confusion.png")
            assert "classification_report" in summary
            preds = np.loadtxt(run / "predictions.csv", dtype=np.int64, ndmin=1)
            assert preds.shape == (N_TEST,)
            k = 2 if stage == "logistic" else 10
            assert preds.min() >= 0 and preds.max() < k
    cont = folder / "cont_rep"
    preds = np.loadtxt(cont / "predictions.csv", dtype=np.int64, ndmin=1)  # kNN on the embeddings
    assert preds.shape == (N_TEST,) and preds.min() >= 0 and preds.max() < 10
    _png_ok(cont / "tsne.png")
    assert (cont / "model_summary.txt").read_text().strip()
    assert (cont / "encoder.pt").is_file()
    for stage in ("fine_tune_linear", "fine_tune_nn"):  # they used the cont_rep stage's encoder
        cfg = json.loads((folder / stage / "config.json").read_text())["config"]
        assert Path(cfg["encoder_path"]) == cont / "encoder.pt"

    plan = json.loads((folder / "pipeline.json").read_text())
    assert plan["preset"] == "smoke" and list(plan["stages"]) == list(STAGES)
    psum = json.loads((folder / "pipeline_summary.json").read_text())
    assert list(psum["stages"]) == list(STAGES)
    for stage, s in psum["stages"].items():
        assert s["status"] == "finished" and s["wall_time_s"] > 0, stage
        assert s["skipped"] is False
    assert psum["total_wall_time_s"] >= sum(s["wall_time_s"] for s in psum["stages"].values()) - 1
    out = smoke_pipeline["stdout"]
    for stage in STAGES:
        assert stage in out
    assert "report.html" in out
    assert (folder / "report.html").is_file()


def test_smoke_rerun_skips_finished_stages(smoke_pipeline: dict, capsys) -> None:
    folder: Path = smoke_pipeline["dir"]
    before = _files_state(folder)
    summary_before = json.loads((folder / "pipeline_summary.json").read_text())
    t0 = time.perf_counter()
    assert main(smoke_pipeline["argv"]) == 0
    wall = time.perf_counter() - t0
    assert wall < 20, f"rerun took {wall:.1f} s: it recomputed something"
    assert _files_state(folder) == before  # no stage file was rewritten
    psum = json.loads((folder / "pipeline_summary.json").read_text())
    for stage in STAGES:
        s = psum["stages"][stage]
        assert s["skipped"] is True and s["status"] == "finished"
        # the stage's wall time is the one measured when it ran
        assert s["wall_time_s"] == summary_before["stages"][stage]["wall_time_s"]
    err = capsys.readouterr().err
    assert err.count("finished earlier, skipped") == len(STAGES)


def test_an_interrupted_stage_of_a_moved_pipeline_resumes(
    smoke_pipeline: dict, tmp_path: Path, capsys
) -> None:
    """The smoke pipeline copied elsewhere, with its fine_tune_nn stage interrupted (config and
    checkpoint, no summary): the stage's config.json names the encoder where the pipeline was;
    the pipeline points it to its own encoder here and resumes, without retraining."""
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(smoke_pipeline["dir"], moved, ignore=shutil.ignore_patterns(LOCK_NAME))
    stage = moved / "fine_tune_nn"
    (stage / "summary.json").unlink()
    assert (stage / "checkpoint.pt").is_file()
    old_enc = json.loads((stage / "config.json").read_text())["config"]["encoder_path"]
    assert Path(old_enc).parent.parent == smoke_pipeline["dir"]
    argv = list(smoke_pipeline["argv"])
    argv[argv.index("--out") + 1] = str(moved)
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "fine_tune_nn: running (resuming)" in err and "another configuration" not in err
    assert err.count("finished earlier, skipped") == len(STAGES) - 1
    cfg = json.loads((stage / "config.json").read_text())["config"]
    assert cfg["encoder_path"] == str(moved / "cont_rep" / "encoder.pt")
    summary = json.loads((stage / "summary.json").read_text())
    assert summary["status"] == "finished"
    # resumed from the final checkpoint: the same model, so the same predictions
    original = smoke_pipeline["dir"] / "fine_tune_nn" / "predictions.csv"
    assert (stage / "predictions.csv").read_bytes() == original.read_bytes()


def test_presets_are_complete() -> None:
    assert set(PRESETS) == {"smoke", "fast", "timed", "gpu", "seed"}
    for name, preset in PRESETS.items():
        assert set(preset) == set(STAGES), name


def test_timed_preset_is_fast_with_time_budgets(tmp_path: Path) -> None:
    from reprlab.cli import _parser
    from reprlab.pipeline import plan_stages, resolve_options

    def plan(*argv: str) -> dict[str, dict]:
        ns = _parser("pipeline").parse_args(["pipeline", *argv])
        return {s.name: s.config for s in plan_stages(*resolve_options(ns), tmp_path / "p")}

    timed, fast = plan("--preset", "timed"), plan("--preset", "fast")
    assert timed["cont_rep"]["time_budget"] == 550 and timed["fine_tune_nn"]["time_budget"] == 320
    assert fast["cont_rep"]["time_budget"] == 0 and fast["fine_tune_nn"]["time_budget"] == 0
    for stage in STAGES:  # nothing else differs
        other = {k: v for k, v in timed[stage].items() if k != "time_budget"}
        assert other == {k: v for k, v in fast[stage].items() if k != "time_budget"}, stage
    overridden = plan("--preset", "timed", "--set", "cont_rep.time_budget=60")
    assert overridden["cont_rep"]["time_budget"] == 60
    # gpu: fast on the wide encoder, twice the triplet steps, 3900 fine-tuning steps run to
    # the end (what the H200 measured), a full-size t-SNE; the linear stages are fast's
    gpu = plan("--preset", "gpu")
    changed = {
        "cont_rep": {"encoder": "airbench_wide", "num_iters": 4200, "tsne_max": 10000},
        "fine_tune_nn": {"num_iters": 3900, "patience": 0},
    }
    for stage in STAGES:
        diff = {k: v for k, v in gpu[stage].items() if fast[stage].get(k) != v}
        assert diff == changed.get(stage, {}), stage


# ---------------------------------------------------------------------------------------------
# Overrides: --config file and --set reach the stage's config; refusing another configuration
# ---------------------------------------------------------------------------------------------


def test_overrides_resume_and_refusal(tmp_path: Path, cifar_train: Path, capsys) -> None:
    out = tmp_path / "p"
    toml = tmp_path / "p.toml"
    toml.write_text(
        f'data = "{cifar_train}"\n'
        "limit = 300\n"
        'stages = ["softmax"]\n'
        "[softmax]\n"
        "num_iters = 6\n"
        "eval_every = 3\n"
        "lr = 0.02\n"
        "l2_lambda = 0.05\n"
    )
    base = ["pipeline", "--config", str(toml), "--out", str(out)]
    # --set beats the file's [softmax] table; the file's values reach the stage
    assert main([*base, "--set", "softmax.lr=0.03", "--set", "softmax.batch_size=32"]) == 0
    cfg = json.loads((out / "softmax" / "config.json").read_text())["config"]
    assert cfg["lr"] == 0.03 and cfg["batch_size"] == 32
    assert cfg["num_iters"] == 6 and cfg["l2_lambda"] == 0.05 and cfg["limit"] == 300
    assert cfg["data"] == str(cifar_train)
    assert json.loads((out / "pipeline.json").read_text())["stages"]["softmax"]["lr"] == 0.03
    assert not (out / "logistic").exists()
    capsys.readouterr()

    # another configuration in the same folder: refused, nothing touched
    state = _files_state(out)
    assert main([*base, "--set", "softmax.lr=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another configuration" in err[0] and str(out) in err[0]
    assert "softmax: lr 0.03 -> 0.5" in err[0]  # names the stage and the flag
    assert _files_state(out) == state

    # the same configuration: resumes (nothing to do)
    assert main([*base, "--set", "softmax.lr=0.03", "--set", "softmax.batch_size=32"]) == 0
    assert _files_state(out) == state

    # --overwrite replaces it
    assert (
        main([*base, "--set", "softmax.lr=0.5", "--set", "softmax.batch_size=64", "--overwrite"])
        == 0
    )
    cfg = json.loads((out / "softmax" / "config.json").read_text())["config"]
    assert cfg["lr"] == 0.5 and cfg["batch_size"] == 64


def test_a_pipeline_that_failed_on_its_input_can_be_rerun_with_other_flags(
    tmp_path: Path, cifar_train: Path, capsys
) -> None:
    """No stage ran under the first configuration (its batch did not fit the data), so the
    corrected command takes the folder over instead of being refused."""
    out = tmp_path / "p"
    base = ["pipeline", "--data", str(cifar_train), "--limit", "300", "--stages", "softmax",
            "--out", str(out), "--set", "softmax.num_iters=4", "--set", "softmax.eval_every=2"]
    assert main([*base, "--set", "softmax.batch_size=500"]) == 2
    assert "--batch_size 500" in capsys.readouterr().err
    assert not (out / "softmax").exists()
    assert main([*base, "--set", "softmax.batch_size=32"]) == 0
    assert "no stage had run" in capsys.readouterr().err
    cfg = json.loads((out / "softmax" / "config.json").read_text())["config"]
    assert cfg["batch_size"] == 32
    assert json.loads((out / "pipeline.json").read_text())["stages"]["softmax"]["batch_size"] == 32


def test_precedence(tmp_path: Path) -> None:
    """preset < shared options (file top level < command line) < [stage] table < --set."""
    from reprlab.cli import _parser
    from reprlab.pipeline import plan_stages, resolve_options

    toml = tmp_path / "p.toml"
    toml.write_text(
        "limit = 300\nseed = 5\n[softmax]\nlimit = 400\nlr = 0.02\n"
        "[logistic]\ngamma = 0.3\n"  # one number where a list of powers is expected
    )
    argv = ["pipeline", "--preset", "smoke", "--config", str(toml), "--seed", "7"]
    argv += ["--test_data", "test.npz"]
    ns = _parser("pipeline").parse_args([*argv, "--set", "softmax.lr=0.03"])
    opts, overrides = resolve_options(ns)
    plan = {s.name: s.config for s in plan_stages(opts, overrides, tmp_path / "p")}
    assert list(plan) == list(STAGES)
    assert plan["softmax"]["limit"] == 400 and plan["softmax"]["lr"] == 0.03
    assert plan["logistic"]["limit"] == 300  # file top level beats the preset's 1500
    assert list(plan["logistic"]["gamma"]) == [0.3]
    assert all(c["seed"] == 7 for c in plan.values())  # command line beats the file
    assert plan["logistic"]["num_iters"] == PRESETS["smoke"]["logistic"][1]["num_iters"]
    assert all(c["test_data"] == "test.npz" for c in plan.values())
    assert not (tmp_path / "p").exists()  # planning writes nothing


def test_fine_tuning_stages_split_as_their_encoders_run(tmp_path: Path, monkeypatch) -> None:
    """A split flag set for the cont_rep stage alone reaches the fine-tuning stages that use its
    encoder, however the path is written, in the plan itself: a rerun of some stages after
    cont_rep ran plans the same. An encoder of another run lends its run's split, over the
    pipeline-wide options (the smoke preset's --limit) but under the stage's own flags."""
    import json

    from reprlab.cli import _parser
    from reprlab.pipeline import plan_stages, resolve_options

    monkeypatch.setenv("REPRLAB_DATA", str(tmp_path / "default.npz"))  # the default data
    (tmp_path / "default.npz").write_bytes(b"")

    def plan(*argv: str) -> dict[str, dict]:
        ns = _parser("pipeline").parse_args(["pipeline", "--preset", "smoke", *argv])
        return {s.name: s.config for s in plan_stages(*resolve_options(ns), tmp_path / "p")}

    argv = ["--set", "cont_rep.seed=5", "--set", "cont_rep.val_fraction=0.25",
            "--set", "fine_tune_nn.seed=2",
            "--set", f"fine_tune_linear.encoder_path={tmp_path / 'p' / 'cont_rep'}"]  # fmt: skip
    first = plan(*argv)
    assert (first["fine_tune_linear"]["seed"], first["fine_tune_linear"]["val_fraction"]) == (
        5, 0.25)  # fmt: skip
    assert (first["fine_tune_nn"]["seed"], first["fine_tune_nn"]["val_fraction"]) == (2, 0.25)
    assert first["softmax"]["seed"] == 0 and first["softmax"]["val_fraction"] == 0.2
    # cont_rep ran (its record as a run writes it), then a rerun of the fine-tuning stages
    enc = tmp_path / "p" / "cont_rep"
    enc.mkdir(parents=True)
    (enc / "encoder.pt").write_bytes(b"")
    record = {"mode": "cont_rep", "config": first["cont_rep"],
              "inputs": {"data": {"path": str(tmp_path / "default.npz"), "bytes": 0}}}  # fmt: skip
    (enc / "config.json").write_text(json.dumps(record))
    again = plan(*argv, "--stages", "fine_tune_linear,fine_tune_nn")
    assert again == {k: first[k] for k in ("fine_tune_linear", "fine_tune_nn")}

    other = tmp_path / "elsewhere"  # another pipeline's cont_rep run, on record
    other.mkdir()
    record = {"mode": "cont_rep", "config": {"seed": 3, "val_fraction": 0.3, "limit": 900,
                                              "data": None}}  # fmt: skip
    (other / "config.json").write_text(json.dumps(record))
    (other / "encoder.pt").write_bytes(b"")  # planning only checks that it is there
    ext = ["--stages", "fine_tune_linear", "--set", f"fine_tune_linear.encoder_path={other}"]
    ftl = plan(*ext)["fine_tune_linear"]
    assert (ftl["seed"], ftl["val_fraction"], ftl["limit"], ftl["data"]) == (3, 0.3, 900, None)
    assert plan(*ext, "--set", "fine_tune_linear.limit=700")["fine_tune_linear"]["limit"] == 700
    assert plan(*ext, "--seed", "7")["fine_tune_linear"]["seed"] == 7  # given: it wins (warned)


def test_no_progress_reaches_every_stage(tmp_path: Path) -> None:
    from reprlab.cli import _parser
    from reprlab.pipeline import plan_stages, resolve_options

    ns = _parser("pipeline").parse_args(["pipeline", "--preset", "smoke", "--no-progress"])
    plan = plan_stages(*resolve_options(ns), tmp_path / "p")
    assert [s.config["progress"] for s in plan] == [False] * len(STAGES)


def test_a_none_on_the_command_line_beats_the_config_file(tmp_path: Path) -> None:
    from reprlab.cli import _parser
    from reprlab.pipeline import resolve_options

    toml = tmp_path / "p.toml"
    toml.write_text("limit = 1000\nseed = 4\n")
    ns = _parser("pipeline").parse_args(["pipeline", "--config", str(toml), "--limit", "none"])
    opts, _ = resolve_options(ns)
    assert opts.limit is None and opts.seed == 4


def test_seed_preset_linear_stages_use_the_reports_plain_pixels(tmp_path: Path) -> None:
    """The seed preset reproduces the report: no pixel encoding, mirroring or translation,
    and no test-time averaging, whatever the modes' own (fast) defaults are."""
    from reprlab.cli import _parser
    from reprlab.pipeline import plan_stages, resolve_options

    ns = _parser("pipeline").parse_args(["pipeline", "--preset", "seed"])
    plan = {s.name: s.config for s in plan_stages(*resolve_options(ns), tmp_path / "p")}
    fast = {s.name: s.config for s in plan_stages(
        *resolve_options(_parser("pipeline").parse_args(["pipeline"])), tmp_path / "p"
    )}
    for stage in ("logistic", "softmax"):
        assert list(plan[stage]["gamma"]) == [1.0] and plan[stage]["translate"] == 0
        assert plan[stage]["flip_augment"] is False
        assert min(fast[stage]["gamma"]) < 1.0  # the fast defaults do re-encode the pixels
    assert fast["softmax"]["translate"] == 1
    for stage in ("cont_rep", "fine_tune_linear", "fine_tune_nn"):  # the report had no TTA
        assert plan[stage]["flip_tta"] is False and plan[stage]["translate_tta"] is False
        assert fast[stage]["flip_tta"] is True and fast[stage]["translate_tta"] is True
    # every stage of the pipeline's seed preset is its mode's own seed preset: `reprlab softmax
    # --preset seed` runs the report's Table 2 alone
    from reprlab.io import comparable
    from reprlab.modes import config_for

    for stage in STAGES:
        given = {k: v for k, v in plan[stage].items() if k == "encoder_path"}
        alone = comparable(config_for(stage, given, "seed").to_dict())
        assert {k: v for k, v in plan[stage].items() if k not in ("data", "test_data")} == {
            k: v for k, v in alone.items() if k not in ("data", "test_data")
        }, stage
    assert (plan["logistic"]["lr"], plan["logistic"]["l2_lambda"]) == (1e-3, 0.1)
    assert (plan["softmax"]["lr"], plan["softmax"]["l2_lambda"]) == (1e-4, 0.2)


class FakeModes:
    """``reprlab.modes.run_mode`` stood in for: each call writes a finished stage (and cont_rep's
    ``encoder.pt``) and is recorded as ``(mode, overrides, runtime)``."""

    def __init__(self, monkeypatch) -> None:
        import reprlab.modes

        self.calls: list[tuple[str, dict, dict]] = []
        monkeypatch.setattr(reprlab.modes, "run_mode", self)

    def __call__(self, mode: str, overrides: dict, preset: str | None = None, **runtime) -> dict:
        from reprlab.io import write_json

        self.calls.append((mode, overrides, runtime))
        run = Path(overrides["out"])
        run.mkdir(parents=True, exist_ok=True)
        write_json(run / "config.json", {"mode": mode, "config": {}})
        write_json(run / "summary.json", {"status": "finished", "wall_time_s": 0.5})
        if mode == "cont_rep":
            (run / "encoder.pt").write_bytes(b"weights")
        return {"status": "finished", "wall_time_s": 0.5}

    @property
    def modes(self) -> list[str]:
        return [m for m, _, _ in self.calls]


def test_interrupted_stage_resumes(tmp_path: Path, monkeypatch) -> None:
    """A stage folder without a finished summary is rerun with resume=True (where supported)."""
    out = tmp_path / "p"
    fake = FakeModes(monkeypatch)
    argv = ["pipeline", "--preset", "smoke", "--stages", "softmax,cont_rep", "--out", str(out)]
    assert main(argv) == 0
    assert fake.modes == ["softmax", "cont_rep"]
    assert not any(o.get("resume") for _, o, _ in fake.calls)
    # cont_rep was interrupted: its folder has a config but no finished summary
    (out / "cont_rep" / "summary.json").unlink()
    fake.calls.clear()
    assert main(argv) == 0
    assert fake.modes == ["cont_rep"]
    assert fake.calls[0][1]["resume"] is True


def test_a_moved_pipeline_folder_is_the_same_pipeline(tmp_path: Path, monkeypatch, capsys) -> None:
    """pipeline.json names the pipeline's own encoder ``<pipeline>/cont_rep/encoder.pt``, so the
    folder can be moved, renamed or named by its absolute path and still resume; an encoder
    given explicitly is still compared by its path."""
    from reprlab.io import release_folder

    fake = FakeModes(monkeypatch)
    argv = ["pipeline", "--preset", "smoke", "--stages", "cont_rep,fine_tune_linear"]
    assert main([*argv, "--out", str(tmp_path / "p")]) == 0
    assert fake.modes == ["cont_rep", "fine_tune_linear"]
    stages = json.loads((tmp_path / "p" / "pipeline.json").read_text())["stages"]
    assert stages["fine_tune_linear"]["encoder_path"] == "<pipeline>/cont_rep/encoder.pt"
    release_folder(tmp_path / "p")  # as when that process ended
    (tmp_path / "p").rename(tmp_path / "q")
    monkeypatch.chdir(tmp_path)
    fake.calls.clear()
    for out in ("q", str(tmp_path / "q")):  # moved, then named by its absolute path
        assert main([*argv, "--out", out]) == 0
    assert fake.calls == []  # every stage finished earlier: skipped
    # an explicit encoder elsewhere is another configuration
    capsys.readouterr()
    other = ["--set", "fine_tune_linear.encoder_path=q/cont_rep/encoder.pt"]
    assert main([*argv, "--out", "q", *other]) == 0  # the same file, as the pipeline names it
    assert main([*argv, "--stages", "fine_tune_linear", "--out", "q",
                 "--set", f"fine_tune_linear.encoder_path={tmp_path / 'q/cont_rep/encoder.pt'}",
                 ]) == 0  # fmt: skip
    (tmp_path / "enc.pt").write_bytes(b"other")
    argv2 = [*argv, "--out", "q", "--set", "fine_tune_linear.encoder_path=enc.pt"]
    assert main(argv2) == 2
    assert "encoder_path <pipeline>/cont_rep/encoder.pt -> enc.pt" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, one line naming the problem, nothing written
# ---------------------------------------------------------------------------------------------


BAD_CONFIGS = {
    "unknown_key": ("[softmax]\nlrr = 0.1\n", "'lrr'"),
    "wrong_type": ('[softmax]\nlr = "fast"\n', "'lr'"),
    "wrong_list_type": ('[softmax]\ngamma = [0.5, "x"]\n', "'gamma'"),
    "wrong_scalar_for_list": ('[softmax]\ngamma = "0.5"\n', "'gamma'"),
    "unknown_top": ("limt = 3\n", "'limt'"),
    "top_wrong_type": ('limit = "3"\n', "'limit'"),
    "unknown_table": ("[softmaxx]\nlr = 0.1\n", "'softmaxx'"),
    "bad_stage": ('stages = ["softmax", "nope"]\n', "'nope'"),
    "not_toml": ("lr = [\n", "not valid TOML"),
}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--preset", "nope"], "--preset"),
        (["--stages", "softmax,nope"], "'nope'"),
        (["--set", "softmax.lr=abc"], "softmax.lr"),
        (["--set", "softmax.gamma=0.5,x"], "softmax.gamma"),
        (["--set", "softmax.gamma=0.5,-1"], "--gamma"),
        (["--set", "softmax.nope=1"], "'nope'"),
        (["--set", "nope.lr=1"], "'nope'"),
        (["--set", "lr=1"], "STAGE.FIELD=VALUE"),
        (["--set", "softmax.out=x"], "softmax.out"),
        (["--limit", "x"], "--limit"),
        (["--stages", "fine_tune_nn"], "cont_rep"),
        (["--config", "missing.toml"], "missing.toml"),
        *[(["--config", name], needle) for name, (_, needle) in BAD_CONFIGS.items()],
    ],
)
def test_bad_input(argv: list[str], needle: str, tmp_path: Path, capsys) -> None:
    argv = list(argv)
    if argv[0] == "--config" and argv[1] in BAD_CONFIGS:
        path = tmp_path / f"{argv[1]}.toml"
        path.write_text(BAD_CONFIGS[argv[1]][0])
        argv[1] = str(path)
    elif argv[0] == "--config":
        argv[1] = str(tmp_path / argv[1])
    out = tmp_path / "p"
    assert main(["pipeline", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("reprlab: error:") and needle in lines[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_refuses_a_folder_that_is_not_a_pipeline(tmp_path: Path, capsys) -> None:
    out = tmp_path / "p"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    assert main(["pipeline", "--preset", "smoke", "--out", str(out), "--overwrite"]) == 2
    assert "not a reprlab pipeline" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine\n"


def test_the_pipeline_time_budget_sets_each_timed_stage_a_deadline(tmp_path, monkeypatch):
    """``pipeline --time_budget S``: a stage with a --time_budget must be done S seconds after
    the start, less the budgets of the timed stages after it; the others get no deadline."""
    import reprlab.cli
    from reprlab.pipeline import pipeline_time_budget, resolve_options

    fake = FakeModes(monkeypatch)

    def deadlines() -> dict[str, dict]:
        return {mode: runtime for mode, _, runtime in fake.calls}

    out = tmp_path / "p"
    argv = ["pipeline", "--preset", "smoke", "--stages", "softmax,cont_rep,fine_tune_nn",
            "--set", "cont_rep.time_budget=100", "--set", "fine_tune_nn.time_budget=50",
            "--out", str(out)]  # fmt: skip
    t0 = time.time()
    assert main([*argv, "--time_budget", "600"]) == 0
    calls = deadlines()
    assert calls["softmax"] == {}  # a linear stage counts its iterations
    assert abs(calls["cont_rep"]["deadline"] - (t0 + 600 - 50)) < 5
    assert abs(calls["fine_tune_nn"]["deadline"] - (t0 + 600)) < 5
    assert json.loads((out / "pipeline_summary.json").read_text())["time_budget_s"] == 600
    # rerun after fine_tune_nn was interrupted: no reserve for the finished cont_rep
    (out / "fine_tune_nn" / "summary.json").unlink()
    fake.calls.clear()
    assert main([*argv, "--time_budget", "600"]) == 0
    assert fake.modes == ["fine_tune_nn"] and deadlines()["fine_tune_nn"]["deadline"] < t0 + 605
    # the seconds an interrupted stage logged count against the limit and in its wall time
    (out / "fine_tune_nn" / "summary.json").unlink()
    (out / "fine_tune_nn" / "metrics.jsonl").write_text('{"iter": 10, "elapsed_s": 100.0}\n')
    fake.calls.clear()
    t1 = time.time()
    assert main([*argv, "--time_budget", "600"]) == 0
    assert abs(deadlines()["fine_tune_nn"]["deadline"] - (t1 + 600 - 100)) < 5
    walls = json.loads((out / "pipeline_summary.json").read_text())["stages"]
    assert walls["fine_tune_nn"]["wall_time_s"] >= 100
    # without one there is no deadline; the timed preset brings its own
    fake.calls.clear()
    assert main([*argv[:-1], str(tmp_path / "q")]) == 0 and deadlines()["cont_rep"] == {}

    def budget(*extra: str) -> float:
        ns = reprlab.cli._parser("pipeline").parse_args(["pipeline", *extra])
        return pipeline_time_budget(resolve_options(ns)[0])

    assert budget("--preset", "timed") == 1170 and budget("--preset", "fast") == 0
    assert budget("--preset", "timed", "--time_budget", "0") == 0
    toml = tmp_path / "p.toml"  # a config file's top level holds it too; the command line wins
    toml.write_text('preset = "timed"\ntime_budget = 900\n')
    assert budget("--config", str(toml)) == 900
    assert budget("--config", str(toml), "--time_budget", "60") == 60
    assert main([*argv, "--time_budget", "-5"]) == 2


def test_the_default_preset_is_fast_or_timed_by_the_cpu(tmp_path, monkeypatch, capsys) -> None:
    """``--preset auto`` (the default): fast where the CPU has native bf16, timed (with its
    1170 s limit) where it has not; a folder holding a fast or timed pipeline keeps its preset,
    so the same command resumes it on either kind of machine."""
    import torch

    import reprlab.train
    from reprlab.io import release_folder

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU decides
    fake = FakeModes(monkeypatch)
    argv = ["pipeline", "--stages", "softmax,cont_rep"]

    def run(out: str, bf16: str) -> dict:
        monkeypatch.setattr(reprlab.train, "cpu_has_native_bf16", lambda: bf16 == "1")
        fake.calls.clear()
        assert main([*argv, "--out", str(tmp_path / out)]) == 0
        release_folder(tmp_path / out)  # as when that process ended
        return json.loads((tmp_path / out / "pipeline_summary.json").read_text())

    slow = run("slow", "0")
    assert slow["preset"] == "timed" and slow["time_budget_s"] == 1170
    assert "deadline" in fake.calls[1][2]  # cont_rep is given the limit's deadline
    assert "(preset timed by --preset auto: this CPU has no native bf16" in capsys.readouterr().err
    fast = run("fast", "1")
    assert fast["preset"] == "fast" and fast["time_budget_s"] == 0 and fake.calls[1][2] == {}
    # the same command on the other kind of CPU resumes each folder with its own preset
    (tmp_path / "slow" / "cont_rep" / "summary.json").unlink()
    assert run("slow", "1")["preset"] == "timed" and fake.modes == ["cont_rep"]
    assert fake.calls[0][1]["resume"] is True and "deadline" in fake.calls[0][2]
    err = capsys.readouterr().err
    assert "(preset timed by --preset auto: the preset of the pipeline in" in err
    # on a CUDA GPU: the gpu preset (the wide encoder, no time limit)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = run("gpu", "0")
    assert gpu["preset"] == "gpu" and gpu["time_budget_s"] == 0
    assert fake.calls[1][1]["encoder"] == "airbench_wide"
    assert "(preset gpu by --preset auto: the default device is a CUDA GPU" in (
        capsys.readouterr().err
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # ... and the same command on a CPU resumes it as a gpu pipeline
    (tmp_path / "gpu" / "cont_rep" / "summary.json").unlink()
    assert run("gpu", "1")["preset"] == "gpu" and fake.modes == ["cont_rep"]
    # a folder of another preset is still another pipeline
    assert main([*argv, "--preset", "smoke", "--out", str(tmp_path / "s")]) == 0
    release_folder(tmp_path / "s")
    assert main([*argv, "--out", str(tmp_path / "s")]) == 2
    assert "holds a pipeline with another configuration" in capsys.readouterr().err


def test_config_file_keys_are_spelt_as_the_flags(tmp_path: Path) -> None:
    """A stage table accepts what the flags accept: kebab-case and an option's earlier name
    (``tta_flip``), which raised an AttributeError traceback."""
    from reprlab.pipeline import load_config_file

    toml = tmp_path / "p.toml"
    toml.write_text('test-data = "t.npz"\n[fine_tune_nn]\ntta_flip = false\nnum-iters = 7\n')
    given, tables = load_config_file(toml)
    assert given == {"test_data": "t.npz"}
    assert tables == {"fine_tune_nn": {"flip_tta": False, "num_iters": 7}}


def test_device_reaches_the_neural_stages_and_auto_picks_by_it(tmp_path: Path, monkeypatch) -> None:
    """``pipeline --device cpu`` on a GPU machine: every neural stage runs on the CPU, and
    ``--preset auto`` chooses as for a CPU (it chose ``gpu``, hours on a CPU)."""
    import torch

    from reprlab.cli import _parser
    from reprlab.pipeline import concrete_preset, plan_stages, resolve_options

    def plan(*argv: str) -> tuple[dict[str, dict], str]:
        ns = _parser("pipeline").parse_args(["pipeline", *argv])
        opts, over = resolve_options(ns)
        stages = {s.name: s.config for s in plan_stages(opts, over, tmp_path / "p")}
        return stages, concrete_preset(opts)[0]

    stages, _ = plan("--preset", "smoke", "--device", "cpu")
    assert {n: c.get("device") for n, c in stages.items()} == {
        "logistic": None, "softmax": None,
        "cont_rep": "cpu", "fine_tune_linear": "cpu", "fine_tune_nn": "cpu",
    }  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert plan()[1] == "gpu"
    assert plan("--device", "cpu")[1] in ("fast", "timed")
    stages, _ = plan("--device", "cpu", "--set", "cont_rep.device=cuda")  # a stage's own wins
    assert stages["cont_rep"]["device"] == "cuda" and stages["fine_tune_nn"]["device"] == "cpu"
