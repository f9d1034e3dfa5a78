"""CLI modes ``logistic`` and ``softmax`` on a small subset of the real CIFAR-10 copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reprlab.cli import main
from reprlab.errors import ReprlabError
from reprlab.linear_modes import load_linear_model
from reprlab.metrics import score_test_set, score_text

FILES = [
    "config.json",
    "metrics.jsonl",
    "loss.png",
    "accuracy.png",
    "model.npz",
    "summary.json",
    "confusion.png",
    "predictions.csv",
]


def _quick(mode, cifar_train, out, *extra):
    return [
        mode,
        "--data",
        str(cifar_train),
        "--limit",
        "1000",
        "--num_iters",
        "50",
        "--eval_every",
        "10",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize("mode,n_classes", [("logistic", 2), ("softmax", 10)])
def test_mode_writes_the_run_folder(mode, n_classes, cifar_train, cifar_test, tmp_path, capsys):
    out = tmp_path / mode
    assert main(_quick(mode, cifar_train, out, "--test_data", str(cifar_test))) == 0
    for f in FILES:
        assert (out / f).is_file(), f
    stdout = capsys.readouterr().out
    assert f"{mode}: val_acc" in stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["iterations"] == 50 and summary["stop_reason"] == "num_iters"
    assert summary["n_train"] + summary["n_val"] == 1000 and summary["n_val"] == 200
    for k in ("best_val_acc", "final_val_acc", "best_val_loss", "final_train_loss", "wall_time_s"):
        assert np.isfinite(summary[k]), k
    rep = summary["classification_report"]
    assert len(rep["class_names"]) == n_classes
    assert np.array(rep["confusion_matrix"]).sum() == 200
    assert summary["val_acc"] == pytest.approx(rep["accuracy"])
    assert summary["val_acc"] > (0.6 if mode == "logistic" else 0.2)  # well above chance

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [10, 20, 30, 40, 50]
    assert {"train_loss", "train_acc", "val_loss", "val_acc"} <= set(rows[0])

    lines = (out / "predictions.csv").read_text().splitlines()
    assert len(lines) == 10000
    labels = np.array([int(v) for v in lines])
    allowed = {0, 1} if mode == "logistic" else set(range(10))
    assert set(labels) <= allowed and len(set(labels)) > 1

    # the saved model reproduces the predictions, and the file holds no pickles
    model = load_linear_model(out)
    test = np.load(cifar_test)["images"]
    np.testing.assert_array_equal(model.predict(test[:500]), labels[:500])
    with np.load(out / "model.npz", allow_pickle=False) as z:
        assert {"W", "b", "mean", "std", "classes"} <= set(z.files)

    # a second identical run is recognised as finished and does no work
    before = (out / "summary.json").stat().st_mtime_ns
    assert main(_quick(mode, cifar_train, out, "--test_data", str(cifar_test))) == 0
    assert "already holds" in capsys.readouterr().out
    assert (out / "summary.json").stat().st_mtime_ns == before


def test_logistic_other_pair_predicts_original_indices(cifar_train, cifar_test, tmp_path):
    out = tmp_path / "pair"
    args = _quick("logistic", cifar_train, out, "--classes", "cat,dog", "--test_data")
    assert main([*args, str(cifar_test)]) == 0
    labels = {int(v) for v in (out / "predictions.csv").read_text().split()}
    assert labels <= {3, 5}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["cat", "dog"] and summary["class_ids"] == [3, 5]


@pytest.mark.parametrize(
    "mode,extra,needle",
    [
        ("logistic", ["--lr", "-1"], "--lr"),
        ("logistic", ["--lr", "0"], "--lr"),
        ("softmax", ["--batch_size", "0"], "--batch_size"),
        ("softmax", ["--num_iters", "-5"], "--num_iters"),
        ("softmax", ["--l2_lambda", "-0.1"], "--l2_lambda"),
        ("softmax", ["--eval_every", "0"], "--eval_every"),
        ("softmax", ["--early_stop_metric", "f1"], "early_stop_metric"),
        ("softmax", ["--momentum", "1.5"], "--momentum"),
        ("logistic", ["--batch_size", "900"], "--batch_size"),  # > 800 training images
        ("logistic", ["--classes", "3,3"], "--classes"),
        ("logistic", ["--classes", "3"], "--classes"),
        ("logistic", ["--classes", "airplane,unicorn"], "unicorn"),
        ("softmax", ["--limit", "1"], "--limit"),
        ("softmax", ["--lr", "abc"], "--lr"),
        ("softmax", ["--gamma", "0"], "--gamma"),
        ("softmax", ["--gamma", "0.5,-1"], "--gamma must be positive finite numbers, got 0.5,-1.0"),
        ("softmax", ["--gamma", ","], "--gamma must be positive finite numbers, got none"),
        ("softmax", ["--gamma", "0.5,1,0.5"], "--gamma lists a power twice: 0.5,1.0,0.5"),
        ("logistic", ["--gamma", "nan"], "--gamma"),
        ("logistic", ["--gamma", "inf"], "--gamma"),
        ("softmax", ["--translate", "-1"], "--translate"),
        ("softmax", ["--translate", "32"], "--translate"),  # not smaller than the 32x32 images
    ],
)
def test_bad_flags_exit_2_and_write_nothing(mode, extra, needle, cifar_train, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_quick(mode, cifar_train, out, *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("reprlab: error:")
    assert needle in err and "Traceback" not in err
    assert not out.exists()


def test_test_data_of_another_shape_is_refused(cifar_train, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 16, 16, 3), np.uint8))
    out = tmp_path / "run"
    assert main(_quick("softmax", cifar_train, out, "--test_data", str(bad))) == 2
    err = capsys.readouterr().err
    assert "bad.npz" in err and not out.exists()


def test_single_class_data_is_refused(tmp_path, capsys):
    data = tmp_path / "one.npz"
    rng = np.random.default_rng(0)
    np.savez(
        data,
        images=rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8),
        labels=np.zeros(40, np.int64),
    )
    out = tmp_path / "run"
    argv = ["softmax", "--data", str(data), "--batch_size", "8", "--out", str(out)]
    assert main(argv) == 2
    assert "two classes" in capsys.readouterr().err
    assert not out.exists()
    # logistic said "--classes: unknown class '1'", naming a flag the user had not given
    assert main(["logistic", *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert "one.npz: logistic needs images of two classes; it holds one" in err, err
    assert "--classes" not in err and not out.exists()


def test_an_out_folder_below_a_file_is_one_line(cifar_train, tmp_path, capsys):
    """``--out notes.txt/run`` was "Not a directory" with exit 1 (v20): now the file is named."""
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    assert main(_quick("softmax", cifar_train, notes / "run")) == 2
    assert f"{notes} is a file, not a folder" in capsys.readouterr().err
    assert notes.read_text() == "keep me\n"


def test_load_linear_model_rejects_other_files(tmp_path):
    from reprlab.errors import ReprlabError

    with pytest.raises(ReprlabError, match="not found"):
        load_linear_model(tmp_path / "nope.npz")
    other = tmp_path / "other.npz"
    np.savez(other, W=np.zeros((3, 2)))
    with pytest.raises(ReprlabError, match="not a reprlab linear model"):
        load_linear_model(other)
    objects = tmp_path / "objects.npz"  # numpy's own error advised allow_pickle=True
    np.savez(objects, W=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ReprlabError, match="holds Python objects, which are never loaded"):
        load_linear_model(objects)
    junk = tmp_path / "junk.npz"
    Path(junk).write_bytes(b"not a zip")
    with pytest.raises(ReprlabError, match="not a readable"):
        load_linear_model(junk)


def test_saved_model_applies_the_runs_pixel_encoding(cifar_train, cifar_test, tmp_path):
    """``model.npz`` keeps ``--gamma``, and prediction re-encodes the pixels with it."""
    from reprlab import data as D
    from reprlab.linear import softmax

    out = tmp_path / "sm"
    assert main(_quick("softmax", cifar_train, out, "--gamma", "0.3", "--translate", "2")) == 0
    model = load_linear_model(out)
    assert model.gamma == pytest.approx((0.3,))
    images = np.load(cifar_test)["images"][:64]
    x = D.flatten(model.scaler.transform(D.to_float(images) ** np.float32(0.3)))
    np.testing.assert_allclose(
        model.predict_proba(images), softmax(x @ model.W + model.b), rtol=1e-4, atol=1e-6
    )
    # a model file written before --gamma existed is read as gamma 1 (no re-encoding), and one
    # written when gamma was a single number (0-d) as that number
    with np.load(out / "model.npz", allow_pickle=False) as z:
        old = {k: z[k] for k in z.files if k != "gamma"}
    np.savez(tmp_path / "old.npz", **old)
    assert load_linear_model(tmp_path / "old.npz").gamma == (1.0,)
    np.savez(tmp_path / "scalar.npz", **old, gamma=np.array(0.3))
    assert load_linear_model(tmp_path / "scalar.npz").gamma == pytest.approx((0.3,))
    from reprlab.errors import ReprlabError

    for bad in (np.array(-1.0), np.array([]), np.array(np.nan), np.array("x")):
        np.savez(tmp_path / "bad.npz", **old, gamma=bad)
        with pytest.raises(ReprlabError, match="bad.npz: gamma must be positive numbers"):
            load_linear_model(tmp_path / "bad.npz")
    # two powers where the weights were trained for one: the shapes disagree
    np.savez(tmp_path / "bad.npz", **old, gamma=np.array([0.5, 0.5]))
    with pytest.raises(ReprlabError, match="bad.npz: inconsistent shapes"):
        load_linear_model(tmp_path / "bad.npz")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["gamma"] == [0.3] and cfg["config"]["translate"] == 2


def test_a_run_of_the_release_before_list_valued_gamma_is_the_same_run(
    cifar_train, tmp_path, capsys
):
    """v11 stored ``"gamma": 0.25`` in config.json; now the flag is a list. Rerunning the same
    command on such a finished folder does nothing instead of calling it another configuration,
    and another gamma is still told apart."""
    out = tmp_path / "lr"
    args = _quick("logistic", cifar_train, out)
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["gamma"] == [0.25]
    cfg["config"]["gamma"] = 0.25  # as the earlier release wrote it
    (out / "config.json").write_text(json.dumps(cfg))
    before = (out / "summary.json").read_bytes()
    capsys.readouterr()
    assert main(args) == 0
    assert "already holds this finished run" in capsys.readouterr().out
    assert (out / "summary.json").read_bytes() == before
    assert main([*args, "--gamma", "0.25,1"]) == 2
    assert "gamma 0.25 -> [0.25, 1.0]" in capsys.readouterr().err


def test_no_progress_silences_the_bars_and_is_not_part_of_the_configuration(
    cifar_train, tmp_path, capsys
):
    """``--no-progress`` works in the linear modes as in the others (v20); a run stored before
    the linear modes had the flag, or run with the bars, is still the same run."""
    out = tmp_path / "lr"
    args = _quick("logistic", cifar_train, out)
    assert main([*args, "--no-progress"]) == 0
    assert "%|" not in capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["progress"] is False
    del cfg["config"]["progress"]  # as the releases before v20 wrote it
    (out / "config.json").write_text(json.dumps(cfg))
    assert main(args) == 0
    assert "already holds this finished run" in capsys.readouterr().out
    assert main([*_quick("logistic", cifar_train, tmp_path / "bars")]) == 0
    assert "%|" in capsys.readouterr().err  # the bars are on by default


def test_several_gammas_give_each_pixel_one_feature_per_power(cifar_train, cifar_test, tmp_path):
    """``--gamma 0.5,1,2``: the model has 3x the weights, one per pixel, channel and power, in
    the layout ``data.gamma_encode`` concatenates (powers as extra channels); mirroring and
    translations act on that layout, and ``predict`` reproduces the run's own predictions."""
    from reprlab import data as D
    from reprlab.linear import softmax

    out = tmp_path / "sm3"
    args = _quick("softmax", cifar_train, out, "--gamma", "0.5,1,2", "--translate", "1")
    assert main([*args, "--test_data", str(cifar_test)]) == 0
    model = load_linear_model(out)
    assert model.gamma == (0.5, 1.0, 2.0)
    assert model.W.shape[0] == 32 * 32 * 3 * 3 and len(model.scaler.mean_) == 9
    images = np.load(cifar_test)["images"]
    f = D.to_float(images[:64])
    x = D.flatten(model.scaler.transform(np.concatenate([f**0.5, f, f**2], axis=3)))
    np.testing.assert_allclose(
        model.predict_proba(images[:64]), softmax(x @ model.W + model.b), rtol=1e-4, atol=1e-6
    )
    written = np.loadtxt(out / "predictions.csv", dtype=np.int64)
    np.testing.assert_array_equal(written, model.predict(images))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["gamma"] == [0.5, 1.0, 2.0]


def test_test_scores_match_labels_by_name_then_by_index() -> None:
    """metrics.score_test_set: test labels are matched to the run's classes by name (order and
    extra classes do not matter); with no name in common, by index; else not scored."""
    run_classes = ["cat", "dog"]
    pred = np.array([0, 1, 1, 0, 1])
    # test names in another order, plus a class the run does not know (image 4: not scored)
    s = score_test_set(pred, np.array([1, 0, 0, 0, 2]), ["dog", "cat", "bird"], run_classes)
    assert s["test_n"] == 4 and s["test_matched_by"] == "class name"
    assert s["test_acc"] == pytest.approx(np.mean(np.array([0, 1, 1, 1]) == pred[:4]))
    assert np.sum(s["test_classification_report"]["confusion_matrix"]) == 4
    # bare integer labels (auto names "0", "1") against named classes: label i is class i
    s = score_test_set(pred, np.array([0, 1, 0, 0, 1]), ["0", "1"], run_classes)
    assert s["test_matched_by"].startswith("label index") and s["test_acc"] == pytest.approx(0.8)
    assert "matched by index" in score_text(s)
    # a named class the run does not have (an image folder's "mixed/"): not scored by index
    assert "test_acc" not in score_test_set(pred, np.zeros(5, np.int64), ["mixed"], run_classes)
    # more test classes than the run's and none in common: not scored
    s = score_test_set(pred, np.array([0, 1, 2, 0, 1]), ["a", "b", "c"], run_classes)
    assert "test_acc" not in s and "not scored" in s["test_note"]
    assert score_test_set(pred, None, [], run_classes) == {}
    # folders named by label, "3/" (cats) and "5/" (dogs), against a CIFAR-10 run: label 3 is
    # cat and 5 dog (they were matched by their sorted position: airplane and automobile)
    cifar = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]  # fmt: skip
    s = score_test_set(np.array([3, 5, 5, 3]), np.array([0, 1, 1, 0]), ["3", "5"], cifar)
    assert s["test_acc"] == 1.0 and s["test_n"] == 4
    # ... and against logistic's cat/dog pair, whose classes are labels 3 and 5 of its data
    s = score_test_set(np.array([0, 1, 0]), np.array([0, 1, 1]), ["3", "5"], ["cat", "dog"],
                       class_ids=np.array([3, 5]))  # fmt: skip
    assert s["test_acc"] == pytest.approx(2 / 3) and s["test_n"] == 3
    # a run on folders "10", "11": test folders "0", "1" are not its classes (they were 10, 11)
    s = score_test_set(np.array([0, 1]), np.array([0, 1]), ["0", "1"], ["10", "11"])
    assert "test_acc" not in s
    s = score_test_set(np.array([0, 1]), np.array([1, 0]), ["10", "11"], ["11", "10"])
    assert s["test_acc"] == 1.0 and s["test_matched_by"] == "class name"


def test_help_lists_choices_and_meaningful_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["softmax", "--help"])
    text = capsys.readouterr().out
    assert "--lr_schedule {constant,cosine,linear}" in text
    assert "--early_stop_metric {val_loss,val_acc}" in text
    assert "(default: None)" not in text and "(default: 0.03)" in text


def test_classes_named_by_digits_are_chosen_by_name() -> None:
    """``--classes 1,2`` on a data set whose class folders are named 1, 2, 3 picks those
    folders; on names that are not digits, digits are label indices."""
    from reprlab.data import ImageSet, select_classes
    from reprlab.linear_modes import LogisticConfig

    images = np.zeros((6, 4, 4, 3), np.uint8)
    digits = ImageSet(images, np.array([0, 0, 1, 1, 2, 2]), ["1", "2", "3"], "d")
    assert select_classes(digits, LogisticConfig(classes="1,2").class_list()).classes == ["1", "2"]
    assert select_classes(digits, LogisticConfig(classes="3,1").class_list()).classes == ["3", "1"]
    named = ImageSet(images, np.array([0, 0, 1, 1, 2, 2]), ["cat", "dog", "emu"], "n")
    assert select_classes(named, LogisticConfig(classes="2,0").class_list()).classes == [
        "emu", "cat"]


def test_a_library_call_validates_its_configuration(tmp_path: Path) -> None:
    """``run_softmax(SoftmaxConfig(gamma=()))`` failed deep in NumPy; the commands always
    validated, the library functions now do too (as ``run_cont_rep`` and the fine-tuning modes)."""
    from reprlab.linear_modes import LogisticConfig, SoftmaxConfig, run_logistic, run_softmax

    with pytest.raises(ReprlabError, match="--gamma"):
        run_softmax(SoftmaxConfig(gamma=(), out=str(tmp_path / "s")))
    with pytest.raises(ReprlabError, match="--batch_size"):
        run_logistic(LogisticConfig(batch_size=0, out=str(tmp_path / "l")))
    assert not (tmp_path / "s").exists() and not (tmp_path / "l").exists()
