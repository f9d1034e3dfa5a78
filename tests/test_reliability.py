"""Reliability: malformed inputs fail cleanly, pickled code never runs, nothing is overwritten.

The corpus is :mod:`badinputs`; every case runs the CLI in-process (``reprlab.cli.main``), and a
handful run as a real ``python -m reprlab`` subprocess to prove that no traceback reaches stderr.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from badinputs import CORPUS, MARKER, BadInput, by_name

from reprlab.cli import main
from reprlab.io import release_folder

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, str] | None:
    """Every file under ``folder`` with its SHA-256 (None if the folder does not exist)."""
    if not folder.exists():
        return None
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(folder.rglob("*"))
    }


def check_one_line(err: str, case: BadInput) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"{case.name}: expected one line on stderr, got:\n{err}"
    line = lines[0]
    assert line.startswith("reprlab: error: "), line
    assert "Traceback" not in err
    for s in case.expect:
        assert s in line, f"{case.name}: {s!r} not in {line!r}"


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # decoded-array cache off: a bad archive must be judged on its own bytes
    monkeypatch.setenv("REPRLAB_CACHE", "off")


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
@pytest.mark.parametrize("out_exists", [False, True], ids=["new_out", "empty_out"])
def test_bad_input_fails_cleanly(
    case: BadInput, out_exists: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = case.build(tmp_path)
    out = tmp_path / "out"
    if out_exists:
        out.mkdir()
        (out / "keep.txt").write_text("weeks of work\n")
    capsys.readouterr()
    before = snapshot(out)
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 2, f"{case.name}: exit code {rc}\n{captured.err}"
    check_one_line(captured.err, case)
    assert snapshot(out) == before, f"{case.name}: the output folder changed"
    assert not (tmp_path / MARKER).exists(), f"{case.name}: pickled code ran"


def test_corpus_is_large_and_covers_every_entry_point() -> None:
    assert len(CORPUS) >= 40
    assert {c.entry for c in CORPUS} >= {"logistic", "softmax", "cont_rep", "pipeline", "sweep"}
    assert len({c.name for c in CORPUS}) == len(CORPUS)


SUBPROCESS_CASES = [
    "npz_bomb_header",
    "tar_member_dotdot",
    "cifar_payload",
    "cont_encoder_payload",
    "toml_invalid",
    "grid_unparseable",
    "unknown_flag",
]


def run_cli(argv: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "REPRLAB_CACHE": "off", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "reprlab", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_subprocess_has_no_traceback(name: str, tmp_path: Path) -> None:
    case = by_name(name)
    argv = case.build(tmp_path)
    proc = run_cli(argv, tmp_path)
    assert proc.returncode == 2, proc.stderr
    check_one_line(proc.stderr, case)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("mode", ["cont_rep", "fine_tune_nn"])
def test_resume_from_a_payload_checkpoint_runs_no_code(
    mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--resume`` reads the run folder's checkpoint.pt: a pickle payload there is refused."""
    from badinputs import encoder_file, good_npz, torch_payload

    from reprlab.io import RunDir
    from reprlab.modes import config_for

    (tmp_path / "d").mkdir()
    data = good_npz(tmp_path / "d", size=32)
    out = tmp_path / "out"
    flags = {"data": str(data), "out": str(out), "batch_size": 8, "num_iters": 4,
             "progress": False, "autocast": False}  # fmt: skip
    if mode == "cont_rep":
        flags.update(encoder="airbench_small", z_dim=8)
    else:
        flags.update(encoder_path=str(encoder_file(tmp_path, z_dim=8)))
    cfg = config_for(mode, flags)
    RunDir.open(out, mode, cfg.to_dict())  # the folder of an interrupted run of this config
    (out / "checkpoint.pt").write_bytes(torch_payload(tmp_path).read_bytes())
    argv = [mode, "--resume", "--no-progress", "--no-autocast", "--batch_size", "8",
            "--num_iters", "4", "--data", str(data), "--out", str(out)]  # fmt: skip
    argv += (["--encoder", "airbench_small", "--z_dim", "8"] if mode == "cont_rep"
             else ["--encoder_path", flags["encoder_path"]])  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "checkpoint.pt" in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / MARKER).exists()
    assert (out / "checkpoint.pt").read_bytes() == torch_payload(tmp_path).read_bytes()


def test_payload_cases_in_corpus() -> None:
    """Pickled code is tried as a CIFAR batch and meta, in an .npz, as a checkpoint / encoder /
    model .pt (torch.save and a bare pickle) and as a run folder's model (.npz and .pt)."""
    names = {c.name for c in CORPUS if c.payload}
    assert len(names) >= 8


@pytest.mark.parametrize("damage", ["truncate_images", "garbage_meta", "labels_pickle"])
def test_corrupt_data_cache_is_rebuilt(
    damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A damaged decoded-array cache entry is ignored and rebuilt, never trusted or unpickled."""
    import numpy as np
    from badinputs import Payload
    from fixtures_data import image_folder_files, write_tar

    from reprlab.data import load_images

    cache = tmp_path / "cache"
    monkeypatch.setenv("REPRLAB_CACHE", str(cache))
    files, images, labels = image_folder_files(per_class=3, prefix="train/")
    tar = write_tar(tmp_path / "imgs.tar", files)
    first = load_images(tar, require_labels=True)
    entry = next((cache / "decoded").glob("*.images.npy"))
    if damage == "truncate_images":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "garbage_meta":
        next((cache / "decoded").glob("*.json")).write_text("{broken")
    else:
        lab = next((cache / "decoded").glob("*.labels.npy"))
        arr = np.empty(len(labels), dtype=object)
        arr[:] = [Payload(tmp_path)] * len(labels)
        np.save(lab, arr, allow_pickle=True)
    again = load_images(tar, require_labels=True)
    assert np.array_equal(again.images, first.images) and np.array_equal(again.images, images)
    assert np.array_equal(again.labels, labels)
    assert not (tmp_path / MARKER).exists()


def test_library_messages_become_one_line() -> None:
    """torch's state-dict errors span lines: the CLI and the loaders print them on one line;
    first_line keeps the first, without a memory address or a dangling colon."""
    from reprlab.errors import first_line, one_line

    e = RuntimeError("Error(s) in loading state_dict for Net:\n\tMissing key(s): fc.weight")
    assert one_line(e) == "Error(s) in loading state_dict for Net: Missing key(s): fc.weight"
    assert one_line(e, 20) == "Error(s) in loading "
    assert first_line(e) == "Error(s) in loading state_dict for Net"
    assert first_line(ValueError("<object at 0x7f00ab12>:\nmore")) == "<object>"
    assert first_line(KeyError()) == "KeyError" and one_line("") == ""


def test_config_diff_names_what_differs() -> None:
    from reprlab.io import config_diff

    old = {"lr": 0.1, "batch_size": 32, "warmup_iters": 420, "hidden": [512]}
    new = {"lr": 0.5, "batch_size": 32, "warmup_frac": 0.2, "hidden": [512]}
    assert config_diff(old, new) == "lr 0.1 -> 0.5, warmup_iters gone, warmup_frac new"
    assert config_diff(old, new, most=1) == "lr 0.1 -> 0.5 and 2 more"
    assert config_diff(old, dict(old)) == ""
    # a flag that became list-valued: the number an earlier release stored is the same setting
    assert config_diff({"gamma": 0.25}, {"gamma": [0.25]}) == ""
    assert config_diff({"gamma": 0.25}, {"gamma": [0.25, 1.0]}) == "gamma 0.25 -> [0.25, 1.0]"
    # nested, as in sweep.json: base flags, and grid values that became lists
    old_sweep = {"base": {"gamma": 0.5, "lr": 0.1}, "grid": {"gamma": [0.5, 1.0]}}
    new_sweep = {"base": {"gamma": [0.5], "lr": 0.1}, "grid": {"gamma": [[0.5], [1.0]]}}
    assert config_diff(old_sweep, new_sweep) == ""
    assert (
        config_diff(old_sweep, {**new_sweep, "grid": {"gamma": [[0.5], [2.0]]}})
        == "grid.gamma [0.5, 1.0] -> [[0.5], [2.0]]"
    )
    assert config_diff(old_sweep, {"base": {"lr": 0.2}}) == (
        "base.gamma gone, base.lr 0.1 -> 0.2, grid gone"
    )
    assert config_diff({"grid": {"lr": [0.1]}}, {"grid": {"lr": [0.1, 0.2]}}) == (
        "grid.lr [0.1] -> [0.1, 0.2]"
    )
    assert config_diff({"data": "a" * 60}, {"data": "b"}).endswith("... -> b")
    # a flag added since, at the value that does what earlier releases did: the same run
    assert config_diff({"lr": 0.1}, {"lr": 0.1, "time_budget": 0.0}) == ""
    assert config_diff({"base": {"lr": 0.1}}, {"base": {"reuse_embeddings": True, "lr": 0.1}}) == ""
    assert config_diff({"lr": 0.1}, {"lr": 0.1, "early_stop_from": 0.0}) == ""  # v19
    assert config_diff({"lr": 0.1}, {"lr": 0.1, "time_budget": 60.0}) == (
        "time_budget 0.0 (earlier release) -> 60.0"
    )
    assert config_diff({"lr": 0.1}, {"lr": 0.1, "early_stop_from": 0.5}) == (
        "early_stop_from 0.0 (earlier release) -> 0.5"
    )


def test_run_folder_of_another_configuration_names_the_difference(tmp_path: Path) -> None:
    from reprlab.errors import ReprlabError
    from reprlab.io import RunDir

    RunDir.open(tmp_path / "r", "softmax", {"lr": 0.1, "out": "x"})
    with pytest.raises(ReprlabError, match=r"another configuration \(lr 0.1 -> 0.2\)"):
        RunDir.open(tmp_path / "r", "softmax", {"lr": 0.2, "out": "x"})
    with pytest.raises(ReprlabError, match="holds a softmax run, not logistic"):
        RunDir.open(tmp_path / "r", "logistic", {"lr": 0.1, "out": "x"})
    RunDir.open(tmp_path / "r", "softmax", {"lr": 0.1, "out": "y"})  # same: reused


@pytest.mark.parametrize(
    ("mode", "key", "value"),
    [
        ("softmax", "lr_schedule", "wavy"),
        ("logistic", "early_stop_metric", "luck"),
        ("cont_rep", "mining", "lucky"),
        ("cont_rep", "optimizer", "lion"),
        ("fine_tune_linear", "features", "pixels"),
        ("fine_tune_linear", "early_stop_metric", "knn_acc"),
        ("fine_tune_nn", "head", "transformer"),
        ("fine_tune_nn", "schedule", "wavy"),
    ],
)
def test_every_choices_field_is_checked_outside_argparse(mode: str, key: str, value: str) -> None:
    """A config file or code bypasses argparse's choices: RunConfig.validate checks them."""
    from reprlab.config import from_mapping
    from reprlab.errors import ReprlabError
    from reprlab.modes import MODES

    cls, _ = MODES[mode].load()
    extra = {"encoder_path": "e.pt"} if mode.startswith("fine_tune") else {}
    cfg = from_mapping(cls, {key: value, **extra})
    with pytest.raises(ReprlabError, match=rf"--{key} must be one of .*got '{value}'"):
        cfg.validate()


def _hold_in_another_process(folder: Path) -> subprocess.Popen:
    """A second process that holds ``folder``'s lock (as a running reprlab would)."""
    code = (
        "import fcntl, sys, time\n"
        f"f = open({str(folder / '.reprlab.lock')!r}, 'a')\n"
        "fcntl.flock(f.fileno(), fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_folder_in_use_by_another_process_is_refused(
    tmp_path: Path,
    cifar_train: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two reprlab processes on one folder (``make run`` started twice): the second is refused
    with one line and touches nothing, even with --overwrite; once the first is gone (killed:
    the lock dies with it), the folder is usable again."""
    # the decoded-array cache back on: this test reads the real training archive nine times
    # (~22 s each to decode on a slow 2-core CPU), and is not about archives
    monkeypatch.delenv("REPRLAB_CACHE")
    run = tmp_path / "run"
    argv = ["softmax", "--data", str(cifar_train), "--limit", "300", "--num_iters", "4",
            "--eval_every", "2", "--batch_size", "32", "--out", str(run)]
    assert main(argv) == 0
    pipe = tmp_path / "pipe"
    pargv = ["pipeline", "--data", str(cifar_train), "--limit", "300", "--stages", "softmax",
             "--set", "softmax.num_iters=4", "--set", "softmax.batch_size=32", "--out", str(pipe)]
    assert main(pargv) == 0
    capsys.readouterr()
    for folder, args in ((run, argv), (pipe, pargv)):
        release_folder(folder)  # this process is done with it; another one takes it
        release_folder(folder / "softmax")
        holder = _hold_in_another_process(folder)
        try:
            before = snapshot(folder)
            for extra in ([], ["--overwrite", "--seed", "1"]):
                assert main([*args, *extra]) == 2
                err = capsys.readouterr().err
                assert "in use by another reprlab process" in err and str(folder) in err
                assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
                assert snapshot(folder) == before
        finally:
            holder.kill()
            holder.wait()
        assert main([*args, "--overwrite", "--seed", "1"]) == 0
        capsys.readouterr()


def test_a_run_folder_inside_its_image_folder_is_refused(tmp_path: Path, capsys) -> None:
    """``--out photos/run`` with ``--data photos``: the next read took the run's plots for
    images of a class ``run``; refused for a mode, a pipeline and a sweep, nothing made."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(6):
            pix = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pix).save(tmp_path / "photos" / cls / f"{i}.png")
    data = str(tmp_path / "photos")
    for argv in (
        ["softmax", "--data", data, "--batch_size", "4", "--out", f"{data}/cat/run"],
        ["softmax", "--data", data, "--batch_size", "4", "--test_data", data,
         "--out", f"{data}/run"],
        ["pipeline", "--preset", "smoke", "--data", data, "--out", f"{data}/pipe"],
        ["sweep", "softmax", "--grid", "lr=0.1,0.2", "--data", data, "--batch_size", "4",
         "--out", f"{data}/sw"],
    ):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is inside the --data folder" in err[0], err
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["cat", "dog"]
    assert sorted(p.name for p in (tmp_path / "photos" / "cat").iterdir())[-1] == "5.png"
