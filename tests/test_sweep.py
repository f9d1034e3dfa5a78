"""``reprlab sweep``: every combination runs, results table and overlay plots, resume, errors."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from PIL import Image

from reprlab import io
from reprlab.cli import main
from reprlab.sweep import by_setting, parse_grid, run_name, write_by_setting


def _mtimes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file() and p.parent != folder
    }


def test_sweep_softmax_grid(tmp_path: Path, cifar_train: Path, capsys) -> None:
    out = tmp_path / "sw"
    argv = [
        "sweep", "softmax",
        "--grid", "batch_size=32,128",
        "--grid", "l2_lambda=0,0.5",
        "--data", str(cifar_train), "--limit", "400", "--num_iters", "30", "--eval_every", "10",
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    # each run's folder lock is let go when it ends (a sweep of a thousand runs held a thousand
    # open lock files); the sweep's own folder stays held for the life of the process
    assert out.resolve() in io._HELD
    assert not [p for p in io._HELD if p.parent == out.resolve()]
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == [
        "batch_size=128,l2_lambda=0",
        "batch_size=128,l2_lambda=0.5",
        "batch_size=32,l2_lambda=0",
        "batch_size=32,l2_lambda=0.5",
    ]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for r in rows:
        cfg = json.loads((out / r["run"] / "config.json").read_text())["config"]
        summary = json.loads((out / r["run"] / "summary.json").read_text())
        # the grid values reached the run, the shared flags too
        assert cfg["batch_size"] == int(r["batch_size"])
        assert cfg["l2_lambda"] == float(r["l2_lambda"])
        assert cfg["num_iters"] == 30 and cfg["limit"] == 400
        assert r["status"] == "finished" == summary["status"]
        final = summary.get("final", {}).get("val_acc", summary.get("final_val_acc"))
        assert float(r["final_val_acc"]) == pytest.approx(final)
    # a stronger L2 penalty gives a larger training loss (same batches: same seed)
    loss = {(r["batch_size"], r["l2_lambda"]): float(r["final_train_loss"]) for r in rows}
    assert loss[("32", "0.5")] > loss[("32", "0")]
    md = (out / "results.md").read_text().splitlines()
    assert len(md) == 2 + 4 and md[0].startswith("| run | batch_size | l2_lambda |")
    for key in ("val_acc", "val_loss", "train_loss"):
        with Image.open(out / f"{key}.png") as im:
            assert im.format == "PNG" and im.size[0] > 200
    assert (out / "report.html").is_file()
    assert "batch_size=32,l2_lambda=0.5" in capsys.readouterr().out  # the table on stdout

    # rerun: every run is skipped, nothing recomputed
    before = _mtimes(out)
    assert main(argv) == 0
    assert _mtimes(out) == before
    assert capsys.readouterr().err.count("finished earlier, skipped") == 4


def test_sweep_logistic_with_preset_flags(tmp_path: Path, cifar_train: Path) -> None:
    out = tmp_path / "sw"
    argv = [
        "sweep", "logistic", "--grid", "lr=0.001,0.01",
        "--data", str(cifar_train), "--limit", "400", "--num_iters", "30", "--eval_every", "10",
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["lr"] for r in rows] == ["0.001", "0.01"]
    assert all(r["status"] == "finished" for r in rows)
    for r in rows:
        last = (out / r["run"] / "metrics.jsonl").read_text().splitlines()[-1]
        assert "val_acc" in json.loads(last)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--grid", "batch_size=32,x"], "batch_size"),
        (["--grid", "nope=1,2"], "nope"),
        (["--grid", "batch_size"], "FLAG=V1"),
        (["--grid", "batch_size=32,32"], "repeated"),
        (["--grid", "out=a,b"], "out"),
        (["--grid", "progress=true,false"], "changes no result"),
        (["--grid", "preset=fast,seed"], "presets are not swept"),
        (["--grid", "batch_size=32", "--nope", "3"], "--nope"),
        (["--grid", "batch_size=0,32"], "batch_size"),
        ([], "--grid"),
    ],
)
def test_sweep_bad_input(args: list[str], needle: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sw"
    assert main(["sweep", "softmax", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reprlab: error:") and needle in lines[0], err
    assert not out.exists()


def test_sweep_refuses_another_configuration(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sw"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"mode": "softmax", "grid": {"lr": [1.0]}}))
    argv = ["sweep", "softmax", "--grid", "lr=0.1,0.2", "--grid", "l2_lambda=0,1", "--out",
            str(out)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "another configuration (grid.lr [1.0] -> [0.1, 0.2], grid.l2_lambda new" in err
    assert sorted(p.name for p in out.iterdir()) == ["sweep.json"]


def test_a_sweep_over_other_values_of_its_flags_keeps_the_runs_it_has(
    tmp_path: Path, cifar_train: Path, capsys
) -> None:
    """Adding a value to a grid runs only the new settings; the others are the same runs."""
    out = tmp_path / "sw"
    base = ["--data", str(cifar_train), "--limit", "400", "--num_iters", "20",
            "--eval_every", "10", "--out", str(out)]  # fmt: skip
    assert main(["sweep", "softmax", "--grid", "lr=0.01,0.1", *base]) == 0
    stamps = _mtimes(out)
    capsys.readouterr()
    assert main(["sweep", "softmax", "--grid", "lr=0.1,0.3,0.01", *base]) == 0
    err = capsys.readouterr().err
    assert "the grid changed (grid.lr [0.01, 0.1] -> [0.1, 0.3, 0.01])" in err
    assert err.count("finished earlier, skipped") == 2 and err.count(": running") == 1
    assert all(_mtimes(out)[k] == v for k, v in stamps.items())  # nothing redone or rewritten
    with (out / "results.csv").open() as f:
        assert [r["lr"] for r in csv.DictReader(f)] == ["0.1", "0.3", "0.01"]
    # another flag is another sweep
    assert main(["sweep", "softmax", "--grid", "l2_lambda=0,1", *base]) == 2


def test_sweep_over_seeds_writes_mean_and_spread(tmp_path: Path, cifar_train: Path) -> None:
    out = tmp_path / "sw"
    argv = [
        "sweep", "softmax", "--grid", "l2_lambda=0,0.5", "--grid", "seed=0,1,2",
        "--data", str(cifar_train), "--limit", "300", "--num_iters", "20", "--eval_every", "10",
        "--batch_size", "64",
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    with open(out / "results.csv") as f:
        runs = list(csv.DictReader(f))
    with open(out / "by_setting.csv") as f:
        groups = list(csv.DictReader(f))
    assert [g["l2_lambda"] for g in groups] == ["0", "0.5"]
    for g in groups:
        accs = [float(r["final_val_acc"]) for r in runs if r["l2_lambda"] == g["l2_lambda"]]
        assert g["n"] == "3" and g["seeds"] == "0+1+2"
        assert float(g["final_val_acc_mean"]) == pytest.approx(statistics.mean(accs))
        assert float(g["final_val_acc_std"]) == pytest.approx(statistics.stdev(accs))
        assert float(g["final_val_acc_min"]) == min(accs)
    # seeds draw different splits and batches: the runs of one setting differ
    assert len({r["final_val_loss"] for r in runs if r["l2_lambda"] == "0"}) == 3
    md = (out / "by_setting.md").read_text().splitlines()
    assert md[0].startswith("| l2_lambda | n | val_acc | final_train_acc |") and " ± " in md[2]
    # val_acc is the returned model's, as each run's summary.json has it
    for r in runs:
        summary = json.loads((out / r["run"] / "summary.json").read_text())
        assert float(r["val_acc"]) == pytest.approx(summary["val_acc"])
    assert "over seeds" in (out / "report.html").read_text()
    # the same sweep on one seed: the runs it has are kept, and neither the statistics of three
    # seeds nor the runs of the other seeds stay in its files or its report
    one = [a if a != "seed=0,1,2" else "seed=0" for a in argv]
    assert main(one) == 0
    assert not (out / "by_setting.csv").exists() and not (out / "by_setting.md").exists()
    report = (out / "report.html").read_text()
    assert "over seeds" not in report and "seed=1" not in report and "seed=0" in report


def test_by_setting_counts_only_finished_runs() -> None:
    grid = {"lr": [0.1], "seed": [0, 1, 2]}
    rows = [
        {"run": "a", "lr": 0.1, "seed": 0, "status": "finished", "final_val_acc": 0.5},
        {"run": "b", "lr": 0.1, "seed": 1, "status": "failed", "final_val_acc": 0.1},
        {"run": "c", "lr": 0.1, "seed": 2, "status": "finished", "final_val_acc": 0.7},
    ]
    (g,) = by_setting(grid, rows)
    assert g["n"] == 2 and g["seeds"] == [0, 2]
    assert g["final_val_acc_mean"] == pytest.approx(0.6)
    assert g["final_val_acc_std"] == pytest.approx(statistics.stdev([0.5, 0.7]))


def test_by_setting_with_no_finished_run(tmp_path: Path) -> None:
    grid = {"lr": [0.1, 0.2], "seed": [0, 1]}
    rows = [
        {"run": "a", "lr": 0.1, "seed": 0, "status": "failed", "final_val_acc": None},
        {"run": "b", "lr": 0.1, "seed": 1, "status": "failed", "final_val_acc": None},
        {"run": "c", "lr": 0.2, "seed": 0, "status": "finished", "final_val_acc": 0.4},
        {"run": "d", "lr": 0.2, "seed": 1, "status": "finished", "final_val_acc": None},
    ]
    failed, ok = by_setting(grid, rows)
    assert failed == {"lr": 0.1, "n": 0, "seeds": []}
    assert ok["n"] == 2 and ok["final_val_acc_mean"] == 0.4 and ok["final_val_acc_std"] == 0.0
    write_by_setting(tmp_path, grid, [failed, ok])
    md = (tmp_path / "by_setting.md").read_text().splitlines()
    assert md[2] == "| 0.1 | 0 |  |" and md[3].startswith("| 0.2 | 2 | 0.4 ± 0")


def test_run_names_keep_every_value_apart() -> None:
    """Folder names are short (``lr=0.1``, ``l2_lambda=0``) but never merge two values."""
    assert run_name({"lr": 0.1, "l2_lambda": 0.0}) == "lr=0.1,l2_lambda=0"
    assert run_name({"lr": 0.1000001}) == "lr=0.1000001" != run_name({"lr": 0.1})
    assert run_name({"lr": 1e-5}) == "lr=1e-05"


def test_sweep_help_describes_the_sweep_folder(capsys) -> None:
    """``--out`` and ``--overwrite`` of a sweep name the sweep's folder, not one run's."""
    with pytest.raises(SystemExit) as e:
        main(["sweep", "softmax", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--out OUT sweep folder, one run folder per setting inside" in text
    assert "replace an existing sweep folder of another configuration" in text
    assert "run folder (default: runs/<mode>-<time>)" not in text


def test_grid_values_with_commas_are_split_at_semicolons() -> None:
    assert parse_grid("logistic", ["classes=cat,dog;airplane,ship"]) == {
        "classes": ["cat,dog", "airplane,ship"]
    }
    assert parse_grid("logistic", ["lr=0.1,0.2"]) == {"lr": [0.1, 0.2]}
    assert run_name({"classes": "cat,dog"}) == "classes=cat,dog"
    # a list-valued flag: each ;-separated value is one list (one power per pixel, or three)
    grid = parse_grid("softmax", ["gamma=0.5;0.5,1,2"])
    assert grid == {"gamma": [(0.5,), (0.5, 1.0, 2.0)]}
    names = [run_name({"gamma": g}) for g in grid["gamma"]]
    assert names[0] != names[1] and all("/" not in n for n in names)


def test_a_setting_that_does_not_fit_the_data_is_refused_and_the_others_run(
    tmp_path: Path, capsys
) -> None:
    """batch_size 1000 on 32 training images: that setting is refused (one line), the other
    runs, the table says which, and the sweep exits 1."""
    from badinputs import good_npz

    out = tmp_path / "sw"
    argv = ["sweep", "softmax", "--data", str(good_npz(tmp_path)), "--num_iters", "5",
            "--grid", "batch_size=1000,8", "--out", str(out)]  # fmt: skip
    assert main(argv) == 1
    assert "batch_size=1000: refused: --batch_size" in capsys.readouterr().err
    with open(out / "results.csv") as f:
        status = {r["run"]: r["status"] for r in csv.DictReader(f)}
    assert status == {"batch_size=1000": "refused", "batch_size=8": "finished"}


def test_a_sweep_of_the_release_before_list_valued_gamma_resumes(
    tmp_path: Path, cifar_train: Path, capsys
) -> None:
    """v11 stored --gamma as one number in sweep.json (base flags and grid values) and in each
    run's config.json; the same command now is the same sweep, and its runs are skipped."""
    out = tmp_path / "sw"
    argv = [
        "sweep", "logistic", "--grid", "gamma=0.5;1", "--grid", "seed=0", "--gamma", "0.5",
        "--data", str(cifar_train), "--limit", "300", "--num_iters", "10", "--eval_every", "10",
        "--batch_size", "32", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert record["grid"]["gamma"] == [[0.5], [1.0]]
    assert record["base"]["gamma"] == [0.5]
    record["grid"]["gamma"], record["base"]["gamma"] = [0.5, 1.0], 0.5  # as v11 wrote them
    (out / "sweep.json").write_text(json.dumps(record))
    for run in out.glob("gamma=*/config.json"):
        cfg = json.loads(run.read_text())
        cfg["config"]["gamma"] = cfg["config"]["gamma"][0]
        run.write_text(json.dumps(cfg))
    capsys.readouterr()
    before = _mtimes(out)
    assert main(argv) == 0
    assert capsys.readouterr().err.count("finished earlier, skipped") == 2
    assert {k: v for k, v in _mtimes(out).items() if k.startswith("gamma=")} == {
        k: v for k, v in before.items() if k.startswith("gamma=")
    }
    record["base"]["num_iters"] = 99  # a real difference is still refused
    (out / "sweep.json").write_text(json.dumps(record))
    assert main(argv) == 2
    assert "another configuration (base.num_iters 99 -> 10)" in (
        capsys.readouterr().err
    )


def test_no_data_and_no_network_is_one_error_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Without ``--data`` the default CIFAR-10 is fetched once, before the folder is made; when
    that fails, one line and exit 2 (a sweep used to try again, and print the refusal, for every
    run, then end with a misleading "no reprlab run found")."""
    import urllib.error
    import urllib.request

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("REPRLAB_DATA", str(tmp_path / "empty"))
    out = tmp_path / "out"
    assert main(["sweep", "softmax", "--grid", "lr=0.01,0.1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("could not download CIFAR-10") == 1 and "--data" in err
    assert not out.exists()
