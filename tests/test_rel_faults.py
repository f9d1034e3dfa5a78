"""Faults: NaN/Inf losses, runs and files that must not be overwritten, a full disk, memory.

Runs use tiny real-format data (an .npz of 8x8 images) except the memory test, which embeds the
60k shared CIFAR-10 images.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from badinputs import encoder_file, good_npz

from reprlab.cli import main
from reprlab.errors import ReprlabError
from reprlab.io import LOCK_NAME

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line(err: str, prefix: str) -> str:
    """The one ``reprlab:`` line of stderr, which must be its last line (progress bars, written
    with carriage returns, and a resumed run's "resuming at iteration" may come before it); no
    traceback."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith("reprlab:")]
    assert len(ours) == 1 and lines[-1] == ours[0], err
    said = ("it/s", "|", ": resuming at iteration ")  # bars, and where a run resumed
    bars = [ln for ln in lines[:-1] if not any(s in ln for s in said)]
    assert not bars, f"unexpected stderr lines: {bars}"
    assert ours[0].startswith(prefix), ours[0]
    return ours[0]


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPRLAB_CACHE", "off")


LINEAR = ["--num_iters", "20", "--batch_size", "8", "--eval_every", "5"]
CONT = [
    "--encoder", "airbench_small", "--z_dim", "8", "--batch_size", "8", "--num_iters", "12",
    "--eval_every", "6", "--checkpoint_every", "2", "--knn_k", "3", "--no-tsne",
    "--no-progress", "--no-autocast", "--warmup_iters", "0",
]  # fmt: skip
NN = [
    "--batch_size", "8", "--num_iters", "12", "--eval_every", "6", "--checkpoint_every", "2",
    "--no-progress", "--no-autocast", "--warmup_iters", "0",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# 4. NaN / Inf losses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["logistic", "softmax"])
def test_linear_nan_loss_fails_cleanly(mode: str, tmp_path: Path, capsys) -> None:
    data = good_npz(tmp_path)
    out = tmp_path / "out"
    argv = [mode, "--data", str(data), *LINEAR, "--lr", "1e300", "--grad_norm_clip", "0"]
    rc = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    line = one_line(err, "reprlab: training failed: ")
    assert "diverged" in line or "nan" in line.lower() or "inf" in line.lower()
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed"
    assert not (out / "model.npz").exists()  # no model of NaNs
    json.loads((out / "config.json").read_text())



@pytest.mark.parametrize("mode", ["logistic", "softmax"])
def test_a_linear_loss_that_diverges_after_a_good_evaluation_fails(
    mode: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loss that turns non-finite fails the run, as in fine_tune_linear and the neural
    modes, even though an earlier evaluation was good and its weights could be restored (the
    linear modes used to call such a run finished)."""
    from reprlab.linear import _LinearModel

    # a sane step for the first evaluation (iteration 5), then a step that blows up
    monkeypatch.setattr(_LinearModel, "_lr_at", lambda self, it: 0.01 if it < 5 else 1e300)
    out = tmp_path / "out"
    argv = [mode, "--data", str(good_npz(tmp_path)), *LINEAR, "--grad_norm_clip", "0"]
    assert main([*argv, "--out", str(out)]) == 1
    one_line(capsys.readouterr().err, "reprlab: training failed: ")
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed" and s["stop_reason"] == "diverged"
    assert math.isfinite(s["best_val_loss"])  # the first evaluation was good
    assert not (out / "model.npz").exists()

def test_linear_nan_loss_subprocess_stderr(tmp_path: Path) -> None:
    """A real process: no NumPy RuntimeWarning or traceback, just the one line (exit 1)."""
    data = good_npz(tmp_path)
    env = {**os.environ, "REPRLAB_CACHE": "off", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "reprlab", "softmax", "--data", str(data), *LINEAR,
         "--lr", "1e300", "--grad_norm_clip", "0", "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    one_line(proc.stderr, "reprlab: training failed: ")
    assert "Warning" not in proc.stderr


def test_cont_rep_nan_loss_keeps_last_good_checkpoint(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    data = good_npz(tmp_path, n=64, size=32)
    out = tmp_path / "out"
    # The loss turns NaN from the 26th training step on (evaluations, run without gradients,
    # stay finite): a checkpoint at iteration 20, the NaN found when iteration 30 is logged.
    # (Driving Adam to diverge instead gave Inf on one CPU and a collapse to a finite loss on
    # another, so the divergence itself is not the thing tested.)
    from reprlab import contrastive

    real, steps = contrastive.batch_triplet_loss, [0]

    def nan_after_25(*args: Any, **kw: Any) -> tuple[torch.Tensor, Any]:
        loss, info = real(*args, **kw)
        if torch.is_grad_enabled():
            steps[0] += 1
            if steps[0] > 25:
                loss = loss * float("nan")
        return loss, info

    monkeypatch.setattr(contrastive, "batch_triplet_loss", nan_after_25)
    argv = ["cont_rep", "--data", str(data), *CONT, "--num_iters", "60", "--eval_every", "30",
            "--checkpoint_every", "10", "--out", str(out)]  # fmt: skip
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err
    line = one_line(err, "reprlab: training failed: ")
    assert "checkpoint" in line
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed" and s["stop_reason"] == "nan_loss"
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in ck["model"].values() if t.is_floating_point())
    assert 10 <= ck["iter"] < 60 and str(ck["iter"]) not in line.split("iteration")[1][:4]
    assert s["iterations"] == 30 and "by iteration 30" in line  # the iterations it ran
    assert not (out / "encoder.pt").exists()
    # resuming it fails the same way, and the good checkpoint is still there
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 1
    one_line(capsys.readouterr().err, "reprlab: training failed: ")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iter"] == ck["iter"]


def test_fine_tune_nn_nan_loss_fails_cleanly(tmp_path: Path, capsys) -> None:
    data = good_npz(tmp_path, n=64, size=32)
    enc = encoder_file(tmp_path, z_dim=8)
    out = tmp_path / "out"
    argv = ["fine_tune_nn", "--data", str(data), "--encoder_path", str(enc), *NN,
            "--optimizer", "sgd", "--lr", "1e30", "--encoder_lr", "1e30",
            "--out", str(out)]  # fmt: skip
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err
    line = one_line(err, "reprlab: training failed: ")
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed"
    assert s["iterations"] > 0 and f"by iteration {s['iterations']} " in line
    if (out / "checkpoint.pt").exists():
        ck = torch.load(out / "checkpoint.pt", weights_only=True)
        assert all(torch.isfinite(t).all() for t in ck["model"].values() if t.is_floating_point())
    assert not (out / "model.pt").exists()


# ---------------------------------------------------------------------------------------------
# 5. No silent overwrite
# ---------------------------------------------------------------------------------------------


def test_mode_refuses_folder_of_another_configuration(tmp_path: Path, capsys) -> None:
    data = good_npz(tmp_path)
    data32 = good_npz(tmp_path / "d32", size=32) if (tmp_path / "d32").mkdir() is None else None
    out = tmp_path / "run"
    assert main(["softmax", "--data", str(data), *LINEAR, "--out", str(out)]) == 0
    before = snapshot(out)
    for argv in (
        ["softmax", "--data", str(data), *LINEAR, "--lr", "0.5"],
        ["logistic", "--data", str(data), *LINEAR],
        ["cont_rep", "--data", str(data32), *CONT],
        ["fine_tune_nn", "--data", str(data32), "--encoder_path",
         str(encoder_file(tmp_path, z_dim=8)), *NN],
        ["fine_tune_linear", "--data", str(data32), "--encoder_path",
         str(encoder_file(tmp_path, z_dim=8)), "--batch_size", "8", "--no-progress"],
    ):  # fmt: skip
        capsys.readouterr()
        assert main([*argv, "--out", str(out)]) == 2, argv[0]
        line = one_line(capsys.readouterr().err, "reprlab: error: ")
        assert str(out) in line and "--overwrite" in line, line
        assert snapshot(out) == before, argv[0]
    # the same configuration again: reused (finished, nothing to do), files unchanged
    assert main(["softmax", "--data", str(data), *LINEAR, "--out", str(out)]) == 0
    assert snapshot(out) == before
    # --overwrite replaces it
    argv = ["softmax", "--data", str(data), *LINEAR, "--lr", "0.5", "--overwrite"]
    assert main([*argv, "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["lr"] == 0.5


def test_same_command_on_other_data_is_not_taken_for_the_finished_run(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """``--data small.npz`` typed in another folder names another file: the finished run is
    not reused for it (its size differs), and a moved copy of the same file still is."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    good_npz(a), good_npz(b, n=48)
    out = tmp_path / "run"
    argv = ["softmax", "--data", "good.npz", *LINEAR, "--out", str(out)]
    monkeypatch.chdir(a)
    assert main(argv) == 0
    inputs = json.loads((out / "config.json").read_text())["inputs"]
    assert inputs["data"] == {"path": str(a / "good.npz"), "bytes": (a / "good.npz").stat().st_size}
    before = snapshot(out)
    monkeypatch.chdir(b)
    capsys.readouterr()
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err, "reprlab: error: ")
    assert "another --data" in line and str(b / "good.npz") in line, line
    assert snapshot(out) == before
    (b / "good.npz").write_bytes((a / "good.npz").read_bytes())  # the same file, elsewhere
    assert main(argv) == 0
    assert "already holds" in capsys.readouterr().out
    assert snapshot(out) == before
    # no --data: the file REPRLAB_DATA names is recorded and compared the same way
    env_run = ["softmax", *LINEAR, "--out", str(tmp_path / "env_run")]
    monkeypatch.setenv("REPRLAB_DATA", str(a / "good.npz"))
    assert main(env_run) == 0
    monkeypatch.setenv("REPRLAB_DATA", str(tmp_path / "c.npz"))
    good_npz(tmp_path, n=44).rename(tmp_path / "c.npz")
    capsys.readouterr()
    assert main(env_run) == 2
    assert "another --data" in one_line(capsys.readouterr().err, "reprlab: error: ")


def test_one_file_typed_relative_or_absolute_is_one_run(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """``--data good.npz`` and ``--data /abs/good.npz`` (or ``--encoder_path`` typed either
    way) name one file: the same run, not "another configuration"; another file still is."""
    from reprlab.io import differing_keys

    good_npz(tmp_path)
    (tmp_path / "o").mkdir()
    other = good_npz(tmp_path / "o")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["softmax", "--data", "good.npz", *LINEAR, "--out", str(out)]) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main(["softmax", "--data", str(tmp_path / "good.npz"), *LINEAR, "--out", "run"]) == 0
    assert "already holds" in capsys.readouterr().out
    assert snapshot(out) == before
    assert main(["softmax", "--data", str(other), *LINEAR, "--out", "run"]) == 2
    assert "data good.npz -> " in one_line(capsys.readouterr().err, "reprlab: error: ")
    assert snapshot(out) == before
    # the rule itself: path flags only, existing paths only, nested records too
    assert differing_keys({"data": "good.npz"}, {"data": str(tmp_path / "good.npz")}) == []
    assert differing_keys({"encoder_path": "./o/../good.npz"}, {"encoder_path": "good.npz"}) == []
    assert differing_keys({"out": "good.npz"}, {"out": str(tmp_path / "good.npz")}) == ["out"]
    assert differing_keys({"data": "gone.npz"}, {"data": str(tmp_path / "gone.npz")}) == ["data"]
    assert differing_keys({"base": {"data": "good.npz"}}, {"base": {"data": "./good.npz"}}) == []
    # how a run shows and saves its progress is not what it computes (a resume may change it)
    assert differing_keys({"progress": True, "checkpoint_every": 100},
                          {"progress": False, "checkpoint_every": 50}) == []  # fmt: skip


def test_a_folder_whose_images_changed_is_not_taken_for_the_finished_run(
    tmp_path: Path, capsys
) -> None:
    """An image folder is recorded by its total size: images added to it make it another
    --data (refused, the run kept); as it was, it is the same run again."""
    from fixtures_data import image_folder_files, write_dir

    files, _, _ = image_folder_files(per_class=8)
    data = write_dir(tmp_path / "imgs", files)
    out = tmp_path / "run"
    argv = ["softmax", "--data", str(data), *LINEAR, "--out", str(out)]
    assert main(argv) == 0
    inputs = json.loads((out / "config.json").read_text())["inputs"]
    assert inputs["data"]["bytes"] == sum(len(b) for b in files.values())
    before = snapshot(out)
    extra = data / "cat" / "extra.png"
    extra.write_bytes(next(iter(files.values())))
    capsys.readouterr()
    assert main(argv) == 2
    assert "another --data" in one_line(capsys.readouterr().err, "reprlab: error: ")
    assert snapshot(out) == before
    extra.unlink()
    assert main(argv) == 0
    assert "already holds" in capsys.readouterr().out
    # a run of the release before v13 stored no size for a folder: not compared
    cfg = json.loads((out / "config.json").read_text())
    cfg["inputs"]["data"]["bytes"] = None
    (out / "config.json").write_text(json.dumps(cfg))
    extra.write_bytes(next(iter(files.values())))
    assert main(argv) == 0
    assert "already holds" in capsys.readouterr().out


def test_out_of_memory_is_one_line(tmp_path: Path) -> None:
    """A 1 MB .npz that expands to 983 MB of images, read under a 1 GB address-space limit:
    one line and exit 1, no traceback, no run folder."""
    bomb = tmp_path / "zbomb.npz"
    n = 20000
    np.savez_compressed(bomb, images=np.zeros((n, 128, 128, 3), np.uint8), labels=np.arange(n) % 4)
    assert bomb.stat().st_size < 2_000_000

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1_000_000_000, 1_000_000_000))

    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "reprlab", "softmax", "--data", str(bomb), "--out", str(out)],
        capture_output=True, text=True, preexec_fn=limit, timeout=300,
        env={**os.environ, "REPRLAB_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc.stderr, "reprlab: error: out of memory")
    assert "--limit" in line
    assert not out.exists()


def test_rerun_removes_temporaries_of_a_killed_write(tmp_path: Path) -> None:
    """A SIGKILL during a write leaves ``.<name>.<random>.tmp``; reopening the run removes it
    (and nothing else)."""
    data = good_npz(tmp_path)
    out = tmp_path / "run"
    argv = ["softmax", "--data", str(data), *LINEAR, "--out", str(out)]
    assert main(argv) == 0
    (out / ".model.npz.reprlab-k2j4h5g6.tmp").write_bytes(b"half a model")
    (out / ".loss.png.reprlab-abcd_123.png").write_bytes(b"half a png")
    # a user's hidden files, two of them named like a temporary of releases before v17
    mine = [".notes", ".notes.20261127.md", ".env.backup01.txt", ".model.npz.k2j4h5g6.tmp"]
    for name in mine:
        (out / name).write_text("a user's hidden file\n")
    before = snapshot(out)
    assert main(argv) == 0
    after = snapshot(out)
    assert ".model.npz.reprlab-k2j4h5g6.tmp" not in after
    assert ".loss.png.reprlab-abcd_123.png" not in after
    assert all(after[name] == before[name] for name in mine)
    assert {k: v for k, v in before.items() if not k.startswith(".")} == {
        k: v for k, v in after.items() if not k.startswith(".")
    }


def tiny_pipeline(tmp_path: Path, data: Path) -> tuple[Path, list[str]]:
    """A finished one-stage pipeline (softmax, 5 updates) in tmp_path/pipe, and its command."""
    pipe = tmp_path / "pipe"
    argv = ["pipeline", "--data", str(data), "--stages", "softmax", "--set",
            "softmax.num_iters=5", "--set", "softmax.batch_size=8", "--out", str(pipe)]  # fmt: skip
    assert main(argv) == 0
    return pipe, argv


def test_pipeline_of_the_release_before_list_valued_gamma_resumes(tmp_path: Path, capsys) -> None:
    """pipeline.json and the stage's config.json of an earlier release store ``"gamma": 0.5``
    where this one has ``[0.5]``: the same command finds the same pipeline and does nothing."""
    data = good_npz(tmp_path)
    pipe, argv = tiny_pipeline(tmp_path, data)
    argv += ["--set", "softmax.gamma=0.5"]
    assert main(argv) == 2  # another configuration than [0.5, 1, 2]: refused, as before
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 0
    for name in ("pipeline.json", "softmax/config.json"):
        record = json.loads((pipe / name).read_text())
        cfg = record["stages"]["softmax"] if name == "pipeline.json" else record["config"]
        assert cfg["gamma"] == [0.5]
        cfg["gamma"] = 0.5
        (pipe / name).write_text(json.dumps(record))
    before = snapshot(pipe / "softmax")
    capsys.readouterr()
    assert main(argv) == 0
    assert "softmax: finished earlier, skipped" in capsys.readouterr().err
    assert snapshot(pipe / "softmax") == before


def test_mode_refuses_a_folder_of_user_files(tmp_path: Path, capsys) -> None:
    data = good_npz(tmp_path)
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("weeks of work\n")
    before = snapshot(out)
    for extra in ([], ["--overwrite"]):  # --overwrite replaces runs, never other folders
        assert main(["softmax", "--data", str(data), *LINEAR, "--out", str(out), *extra]) == 2
        line = one_line(capsys.readouterr().err, "reprlab: error: ")
        assert "not a reprlab run" in line, line
        assert snapshot(out) == before
    # nor a pipeline folder (a mode's --out is a run folder)
    pipe, argv = tiny_pipeline(tmp_path, data)
    before = snapshot(pipe)
    capsys.readouterr()
    assert main(["softmax", "--data", str(data), *LINEAR, "--out", str(pipe), "--overwrite"]) == 2
    one_line(capsys.readouterr().err, "reprlab: error: ")
    assert snapshot(pipe) == before


def test_overwrite_never_deletes_a_folder_whose_record_is_not_reprlabs(
    tmp_path: Path, capsys
) -> None:
    """A ``config.json``, ``sweep.json`` or ``pipeline.json`` that reprlab did not write (a
    Hugging Face model folder, a list, broken JSON) does not make a folder a run, sweep or
    pipeline: it is refused with one line, with or without --overwrite, and nothing in it
    changes."""
    data = good_npz(tmp_path)
    cases = [
        ("config.json", b'{"architectures": ["BertModel"]}',
         ["softmax", "--data", str(data), *LINEAR]),
        ("config.json", b"[1, 2]", ["softmax", "--data", str(data), *LINEAR]),
        ("config.json", b"{not json", ["logistic", "--data", str(data), *LINEAR]),
        ("sweep.json", b'{"my": "grid"}',
         ["sweep", "softmax", "--data", str(data), *LINEAR, "--grid", "lr=0.1,0.2"]),
        ("pipeline.json", b'{"my": "precious settings"}',
         ["pipeline", "--data", str(data), "--stages", "softmax", "--set", "softmax.batch_size=8"]),
    ]  # fmt: skip
    for i, (name, content, argv) in enumerate(cases):
        folder = tmp_path / f"mine{i}"
        (folder / "photos").mkdir(parents=True)
        (folder / name).write_bytes(content)
        (folder / "pytorch_model.bin").write_bytes(b"weights")
        (folder / "photos" / "a.jpg").write_bytes(b"jpeg")
        before = snapshot(folder)
        for extra in ([], ["--overwrite"]):
            capsys.readouterr()
            assert main([*argv, "--out", str(folder), *extra]) == 2, (name, content, extra)
            line = one_line(capsys.readouterr().err, "reprlab: error: ")
            assert "not a reprlab" in line, line
            assert snapshot(folder) == before, (name, content, extra)


def test_json_records_of_the_wrong_shape_are_one_line_errors(tmp_path: Path, capsys) -> None:
    """A run's summary.json or metrics.jsonl edited into something else: one line, exit 2."""
    data = good_npz(tmp_path)
    run = tmp_path / "run"
    argv = ["softmax", "--data", str(data), *LINEAR, "--out", str(run)]
    assert main(argv) == 0
    (run / "summary.json").write_text("null\n")
    capsys.readouterr()
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err, "reprlab: error: ")
    assert "summary.json" in line and "not an object" in line, line
    from reprlab.io import read_jsonl

    (run / "metrics.jsonl").write_text('{"iter": 1}\n{"iter": 2, "train_lo\n')
    with pytest.raises(Exception, match="metrics.jsonl: line 2 is not valid JSON"):
        read_jsonl(run / "metrics.jsonl")
    (run / "metrics.jsonl").write_bytes(b'{"iter": 1}\n\xff\xfe\x00binary\n')  # not UTF-8
    with pytest.raises(ReprlabError, match="metrics.jsonl: not a text file of JSON lines"):
        read_jsonl(run / "metrics.jsonl")


def test_resume_from_a_checkpoint_of_unexpected_contents_is_refused(
    tmp_path: Path, capsys
) -> None:
    """A checkpoint that loads (plain data only) but is not what reprlab writes: one line,
    exit 2, the folder unchanged; --resume on a folder without a checkpoint says so."""
    data = good_npz(tmp_path, size=32)
    out = tmp_path / "cr"
    argv = ["cont_rep", "--data", str(data), *CONT, "--out", str(out)]
    assert main(argv) == 0
    (out / "summary.json").unlink()  # as if interrupted after the last checkpoint
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    for change in ({"early_stopping": None}, {"rng": "abc"}, {"iter": -5}, {"iter": 10**12},
                   {"rows": "not rows"}):  # fmt: skip
        bad = {k: v for k, v in ck.items()}
        for k, v in change.items():
            if v is None:
                del bad[k]
            else:
                bad[k] = v
        torch.save(bad, out / "checkpoint.pt")
        before = snapshot(out)
        capsys.readouterr()
        assert main([*argv, "--resume"]) == 2, change
        line = one_line(capsys.readouterr().err, "reprlab: error: ")
        assert "checkpoint.pt: not a checkpoint of this run" in line, line
        assert snapshot(out) == before
    fresh = tmp_path / "fresh"
    assert main(["cont_rep", "--data", str(data), *CONT[:-5], "--progress", "--no-autocast",
                 "--warmup_iters", "0", "--out", str(fresh), "--resume"]) == 0  # fmt: skip
    assert "no checkpoint in" in capsys.readouterr().err


def test_predict_writes_through_a_link_and_to_a_pipe(tmp_path: Path, capsys) -> None:
    """``--out`` a symbolic link: the file it names gets the predictions, the link stays; a
    device or pipe (``/dev/stdout``) is written to, not replaced by a file."""
    data = good_npz(tmp_path)
    run = tmp_path / "run"
    assert main(["softmax", "--data", str(data), *LINEAR, "--out", str(run)]) == 0
    target = tmp_path / "subs" / "latest.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "preds.csv"
    link.symlink_to(target)
    argv = ["predict", str(run), "--data", str(data), "--out", str(link), "--overwrite"]
    assert main(argv) == 0
    assert link.is_symlink() and len(target.read_text().splitlines()) == 40
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    assert main(["predict", str(run), "--data", str(data), "--out", str(fifo)]) == 0
    got.append(reader.communicate(timeout=30)[0])
    assert len(got[0].decode().splitlines()) == 40 and fifo.is_fifo()


def test_overwrite_never_deletes_the_working_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    data = good_npz(tmp_path)
    run = tmp_path / "run"
    assert main(["softmax", "--data", str(data), *LINEAR, "--out", str(run)]) == 0
    (run / "notes.txt").write_text("mine\n")
    before = snapshot(run)
    monkeypatch.chdir(run)
    capsys.readouterr()
    argv = ["softmax", "--data", str(data), *LINEAR, "--lr", "0.5", "--out", ".", "--overwrite"]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err, "reprlab: error: ")
    assert "current folder" in line, line
    assert snapshot(run) == before


def test_predict_never_replaces_predictions(tmp_path: Path, capsys) -> None:
    data = good_npz(tmp_path)
    run = tmp_path / "run"
    assert main(["softmax", "--data", str(data), *LINEAR, "--out", str(run)]) == 0
    preds = tmp_path / "leaderboard.csv"
    preds.write_text("my best submission\n")
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(data), "--out", str(preds)]) == 2
    line = one_line(capsys.readouterr().err, "reprlab: error: ")
    assert "leaderboard.csv" in line and "--overwrite" in line
    assert preds.read_text() == "my best submission\n"
    argv = ["predict", str(run), "--data", str(data), "--out", str(preds), "--overwrite"]
    assert main(argv) == 0
    assert len(preds.read_text().splitlines()) == 40


def test_pipeline_and_sweep_refuse_folders_of_another_configuration(tmp_path: Path, capsys) -> None:
    data = good_npz(tmp_path)
    pipe, argv = tiny_pipeline(tmp_path, data)
    before = snapshot(pipe)
    capsys.readouterr()
    changed = [a.replace("num_iters=5", "num_iters=6") for a in argv]
    assert main(changed) == 2
    line = one_line(capsys.readouterr().err, "reprlab: error: ")
    assert "--overwrite" in line
    assert snapshot(pipe) == before

    sweep = tmp_path / "sweep"
    argv = ["sweep", "softmax", "--data", str(data), *LINEAR, "--grid", "lr=0.01,0.1",
            "--out", str(sweep)]  # fmt: skip
    assert main(argv) == 0
    before = snapshot(sweep)
    capsys.readouterr()
    # another base flag (another grid value would extend the sweep: test_sweep.py)
    assert main(["21" if a == "20" else a for a in argv]) == 2
    line = one_line(capsys.readouterr().err, "reprlab: error: ")
    assert "--overwrite" in line
    assert snapshot(sweep) == before


# ---------------------------------------------------------------------------------------------
# 6. Disk full (file-size limit)
# ---------------------------------------------------------------------------------------------


def _limit_fsize(nbytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


@pytest.mark.parametrize("limit", [6_000, 30_000])
def test_disk_full_fails_cleanly_and_keeps_earlier_files(tmp_path: Path, limit: int) -> None:
    data = good_npz(tmp_path)
    # weeks of earlier work in the same place: must survive untouched
    old = tmp_path / "old"
    assert main(["softmax", "--data", str(data), *LINEAR, "--out", str(old)]) == 0
    old_before = snapshot(old)
    out = tmp_path / "new"
    env = {**os.environ, "REPRLAB_CACHE": "off", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "reprlab", "softmax", "--data", str(data), *LINEAR,
         "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=120, preexec_fn=_limit_fsize(limit),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc.stderr, "reprlab: error: ")
    assert "too large" in line.lower() or "no space" in line.lower(), line
    assert str(out) in line, line  # names the file it could not write
    assert snapshot(old) == old_before
    written = sorted(p.name for p in out.iterdir())
    assert "config.json" in written
    temps = [n for n in written if n.startswith(".") and n != LOCK_NAME]
    assert not temps, written  # no half-written temp file
    for p in out.iterdir():  # every file there is complete
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            [json.loads(x) for x in p.read_text().splitlines()]
        elif p.suffix == ".png":
            from PIL import Image

            with Image.open(p) as im:
                im.verify()
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                [z[k] for k in z.files]
        assert p.stat().st_size <= limit


# ---------------------------------------------------------------------------------------------
# 7. Memory: 60k images embedded and evaluated
# ---------------------------------------------------------------------------------------------


def test_memory_embedding_60k_images(cifar_train: Path, cifar_test: Path, tmp_path: Path) -> None:
    out = tmp_path / "mem"
    argv = ["cont_rep", "--data", str(cifar_train), "--test_data", str(cifar_test),
            "--encoder", "airbench_small", "--z_dim", "16", "--batch_size", "16",
            "--num_iters", "1", "--eval_every", "1", "--knn_eval_size", "100", "--knn_k", "5",
            "--no-tsne", "--no-progress", "--no-flip_tta", "--no-translate_tta",
            "--out", str(out)]  # fmt: skip  (TTA works batch by batch: no memory, 6x the time)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("REPRLAB_CACHE", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprlab", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err
    peak = usage.ru_maxrss * 1024  # Linux: KiB
    decoded = (50_000 + 10_000) * 32 * 32 * 3
    s = json.loads((out / "summary.json").read_text())
    assert s["n_train"] + s["n_val"] == 50_000
    assert np.load(out / "test_embeddings.npy").shape == (10_000, 16)
    print(
        f"\npeak RSS {peak / 2**20:.0f} MiB for 60k images (decoded {decoded / 2**20:.0f} MiB, "
        f"limit {(decoded + 2 * 2**30) / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s"
    )
    assert peak < decoded + 2 * 2**30


@pytest.mark.parametrize(
    "argv,saved,hint",
    [
        (["cont_rep", "--out", "OUT"], True, "rerun the same command with --resume to continue"),
        (["fine_tune_nn"], True, "rerun the same command with --out CHOSEN --resume to continue"),
        (["cont_rep", "--out", "OUT", "--resume"], True, "rerun the same command to continue"),
        (["cont_rep"], False, "nothing was saved yet; rerun the same command to start again"),
        (["softmax"], False, "rerun the same command to start again"),
        (["fine_tune_linear"], False, "rerun the same command to start again"),
        (["pipeline"], False, "with the same --out, to continue"),
        (["sweep", "softmax", "--grid", "lr=0.1,0.2"], False, "with the same --out, to continue"),
        (["predict", "RUN", "--data", "x.npz"], False, "nothing was written"),
    ],
)
def test_ctrl_c_says_what_to_do_next(
    argv: list[str], saved: bool, hint: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    """Ctrl-C: exit 130, one line, and advice that the command accepts (the linear modes and
    sweep have no --resume flag): a run without --out resumes only in the folder reprlab
    chose, so the advice names it (it said --resume alone, which is refused without --out),
    and a run stopped before its first checkpoint has nothing to resume."""
    import importlib

    from reprlab.io import RunDir

    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    chosen = tmp_path / "runs" / f"{argv[0]}-20261206-101500"

    def interrupted(*_a, **_k):
        if saved:  # the run made its folder and saved a checkpoint before Ctrl-C
            folder = Path(argv[argv.index("--out") + 1]) if "--out" in argv else chosen
            folder.mkdir(parents=True)
            (folder / "checkpoint.pt").write_bytes(b"")
            RunDir.last_opened = folder
        raise KeyboardInterrupt

    monkeypatch.setattr("reprlab.modes.run_mode", interrupted)
    for module in ("pipeline", "sweep", "predict"):
        monkeypatch.setattr(importlib.import_module(f"reprlab.{module}"), "main", interrupted)
    assert main(argv) == 130
    line = one_line(capsys.readouterr().err, "reprlab: interrupted (")
    assert hint.replace("CHOSEN", str(chosen)) in line, line
