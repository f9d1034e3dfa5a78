"""``reprlab predict``: reproduces a run's own predictions; refuses bad input with exit 2."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from test_finetune import _fails, ftl_run, nn_run, small_test, tiny_encoder  # noqa: F401

from reprlab.cli import main
from reprlab.linear_modes import run_softmax
from reprlab.modes import config_for
from reprlab.report import render_report


@pytest.fixture(scope="module")
def softmax_run(cifar_train: Path, small_test: Path, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("sm") / "run"
    cfg = config_for(
        "softmax",
        {
            "data": str(cifar_train),
            "test_data": str(small_test),
            "out": str(out),
            "limit": 600,
            "num_iters": 50,
            "batch_size": 64,
            "eval_every": 25,
        },
    )
    run_softmax(cfg)
    return out


@pytest.fixture(scope="module")
def knn_run(cifar_train: Path, small_test: Path, tmp_path_factory) -> Path:  # noqa: F811
    """A short cont_rep run with test predictions (its kNN vote on the training embeddings)."""
    from reprlab.contrastive import run_cont_rep

    out = tmp_path_factory.mktemp("cr") / "run"
    cfg = config_for(
        "cont_rep",
        {
            "data": str(cifar_train),
            "test_data": str(small_test),
            "out": str(out),
            "limit": 600,
            "encoder": "airbench_small",
            "z_dim": 32,
            "batch_size": 64,
            "num_iters": 20,
            "eval_every": 20,
            "knn_k": 7,
            "tsne": False,
            "progress": False,
        },
    )
    run_cont_rep(cfg)
    return out


@pytest.mark.parametrize("which", ["softmax_run", "knn_run", "ftl_run", "nn_run"])
def test_predict_reproduces_the_runs_predictions(which, request, small_test, tmp_path):  # noqa: F811
    run = request.getfixturevalue(which)
    run = run[0] if isinstance(run, tuple) else run
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), "--data", str(small_test), "--out", str(out)]) == 0
    expected = (run / "predictions.csv").read_text()
    assert out.read_text() == expected
    labels = np.array(expected.split(), dtype=int)
    assert len(labels) == 64 and labels.min() >= 0 and labels.max() < 10


def test_predict_never_writes_over_what_it_reads(softmax_run, small_test, tmp_path, capsys):  # noqa: F811
    """--out the --data file, or a file of the run folder, was replaced under --overwrite (a
    user's image, the run's model.npz); a trailing slash made a file of the folder's name."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(softmax_run, run)
    data = tmp_path / "mine.npz"
    shutil.copy(small_test, data)
    before = {p.name: p.read_bytes() for p in (data, run / "model.npz")}
    base = ["predict", str(run), "--data", str(data), "--overwrite"]
    _fails([*base, "--out", str(data)], "is the --data file itself", capsys)
    _fails([*base, "--out", str(run / "model.npz")], "is inside the run folder", capsys)
    _fails([*base, "--out", str(tmp_path / "new") + "/"], "names a folder", capsys)
    assert {p.name: p.read_bytes() for p in (data, run / "model.npz")} == before
    assert not (tmp_path / "new").exists()
    _fails(["report", str(run), "--out", str(run / "summary.json"), "--overwrite"],
           "the report is an .html file", capsys)  # fmt: skip
    (tmp_path / "mine.html").symlink_to(run / "summary.json")  # the link's name is no excuse
    _fails(["report", str(run), "--out", str(tmp_path / "mine.html"), "--overwrite"],
           "the report is an .html file", capsys)  # fmt: skip


def test_predict_one_image_file(softmax_run, small_test, tmp_path, capsys):  # noqa: F811
    """An image file is one image: its label is the run's label for the same pixels, and the
    command says the class."""
    from PIL import Image

    with np.load(small_test) as z:
        first = z["images"][0]
    Image.fromarray(first).save(tmp_path / "first.png")
    out = tmp_path / "one.csv"
    assert main(["predict", str(softmax_run), "--data", str(tmp_path / "first.png"),
                 "--out", str(out)]) == 0  # fmt: skip
    label = int((softmax_run / "predictions.csv").read_text().split()[0])
    assert out.read_text().split() == [str(label)]
    classes = json.loads((softmax_run / "summary.json").read_text())["classes"]
    assert f"first.png: {label} {classes[label]} -> {out}" in capsys.readouterr().out
    # a larger photo: refused with a hint, then resized to the training size
    big = tmp_path / "big.jpg"
    Image.fromarray(first).resize((96, 80), Image.Resampling.NEAREST).save(big, quality=95)
    argv = ["predict", str(softmax_run), "--data", str(big), "--out", str(tmp_path / "b.csv")]
    _fails(argv, "images are 80x96x3 (HxWxC)", capsys)
    _fails(argv, "trained on 32x32x3 images (--resize resizes them)", capsys)
    assert main([*argv, "--resize"]) == 0
    assert len((tmp_path / "b.csv").read_text().split()) == 1
    # a folder of photos of different sizes: refused, then each resized as it is decoded (the
    # same labels as one file at a time; the 32x32 one is left as it is)
    photos = tmp_path / "photos"
    photos.mkdir()
    (tmp_path / "first.png").rename(photos / "a.png")
    big.rename(photos / "b.jpg")
    Image.fromarray(first).resize((40, 48)).save(photos / "c.png")
    argv = ["predict", str(softmax_run), "--data", str(photos), "--out", str(tmp_path / "p.csv")]
    _fails(argv, "all images must share a size", capsys)
    assert main([*argv, "--resize"]) == 0
    argv[-1] = str(tmp_path / "p2.csv")
    _fails(argv, "all images must share a size", capsys)  # the cache keeps them apart
    one_by_one = []
    for name in ("a.png", "b.jpg", "c.png"):
        out = tmp_path / f"{name}.csv"
        assert main(["predict", str(softmax_run), "--data", str(photos / name), "--resize",
                     "--no-progress", "--out", str(out)]) == 0  # fmt: skip
        one_by_one += out.read_text().split()
    assert (tmp_path / "p.csv").read_text().split() == one_by_one
    assert one_by_one[0] == str(label)
    # --names: which photo each label is for
    named = tmp_path / "named.csv"
    assert main([*argv, "--resize", "--names", "--out", str(named)]) == 0
    rows = [line.split(",") for line in named.read_text().splitlines()]
    assert rows[0] == ["file", "label", "class"]
    files = ("a.png", "b.jpg", "c.png")
    assert rows[1:] == [[f, v, classes[int(v)]] for f, v in zip(files, one_by_one, strict=True)]
    argv = ["predict", str(softmax_run), "--data", str(small_test), "--names",
            "--out", str(tmp_path / "n.csv")]  # fmt: skip
    _fails(argv, "--names: its images have no file names (an .npz or CIFAR batches)", capsys)
    (tmp_path / "empty.png").write_bytes(b"")
    argv = ["predict", str(softmax_run), "--data", str(tmp_path / "empty.png"),
            "--out", str(tmp_path / "e.csv")]  # fmt: skip
    _fails(argv, "empty.png: an empty file, not an image", capsys)


def test_sigterm_outside_training_is_one_line_and_exit_143(
    softmax_run, small_test, tmp_path  # noqa: F811
) -> None:
    """SIGTERM while loading or predicting ends as Ctrl-C does (training handles its own):
    one line, exit 143 (128 + SIGTERM), no output file; the handler is put back afterwards.
    (In a child process: without the handler, SIGTERM would end the test session itself.)"""
    import subprocess
    import sys

    out = tmp_path / "p.csv"
    code = f"""
import os, signal, sys, time
import reprlab.predict
from reprlab.cli import main

def killed(*args, **kw):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the handler interrupts this

reprlab.predict.predict_labels = killed
before = signal.getsignal(signal.SIGTERM)
rc = main(["predict", {str(softmax_run)!r}, "--data", {str(small_test)!r}, "--out", {str(out)!r}])
assert signal.getsignal(signal.SIGTERM) is before, "handler not put back"
sys.exit(rc)
"""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 143, (p.returncode, p.stderr[-500:])
    assert time.perf_counter() - t0 < 25 and not out.exists()
    assert p.stderr.strip().splitlines()[-1] == "reprlab: interrupted (nothing was written)"


def test_runs_from_before_translate_tta_predict_without_shifts(knn_run, ftl_run, tmp_path):  # noqa: F811
    """cont_rep config.json and fine_tune_linear model.npz files written before the option
    have no translate_tta: those runs embedded unshifted images, so they predict that way."""
    from reprlab.contrastive import load_knn_classifier
    from reprlab.finetune import load_fine_tune_linear
    from reprlab.io import read_json, read_npz, save_npz, write_json

    assert load_knn_classifier(knn_run).translate_tta is True  # the default now
    old_knn = tmp_path / "knn"
    shutil.copytree(knn_run, old_knn)
    cfg = read_json(old_knn / "config.json")
    del cfg["config"]["translate_tta"]
    write_json(old_knn / "config.json", cfg)
    assert load_knn_classifier(old_knn).translate_tta is False

    ftl = ftl_run[0]
    assert load_fine_tune_linear(ftl).translate_tta is True
    old_ftl = tmp_path / "ftl"
    shutil.copytree(ftl, old_ftl)
    arrays = {k: v for k, v in read_npz(old_ftl / "model.npz").items() if k != "translate_tta"}
    save_npz(old_ftl / "model.npz", **arrays)
    assert load_fine_tune_linear(old_ftl).translate_tta is False


def test_predict_tta_overrides_the_runs_averaging(knn_run, ftl_run, nn_run, small_test, tmp_path):  # noqa: F811
    """--tta none / flip: labels of the un-averaged / flip-only predictions, computed here
    through the library's own entry points; --tta run is the run's predictions.csv (above)."""
    from reprlab.contrastive import load_encoder
    from reprlab.embed import embed, knn_predict
    from reprlab.finetune import load_classifier, load_fine_tune_linear

    with np.load(small_test) as z:
        images = z["images"]

    def labels(run: Path, tta: str) -> np.ndarray:
        out = tmp_path / f"{run.parent.name}-{tta}.csv"
        assert main(["predict", str(run), "--data", str(small_test), "--out", str(out),
                     "--tta", tta]) == 0
        return np.array(out.read_text().split(), dtype=np.int64)

    enc, meta = load_encoder(knn_run / "encoder.pt")
    for tta, flip in (("none", False), ("flip", True)):
        z = embed(enc, images, meta["mean"], meta["std"], flip_tta=flip, progress=False)
        ref = np.load(knn_run / "train_embeddings.npy"), np.load(knn_run / "train_labels.npy")
        assert np.array_equal(labels(knn_run, tta), knn_predict(*ref, z, k=7)), tta

    ftl = load_fine_tune_linear(ftl_run[0])
    z = embed(ftl.encoder, images, ftl.enc_meta["mean"], ftl.enc_meta["std"], progress=False)
    want = (ftl.transform(z) @ ftl.W + ftl.b).argmax(1)
    assert np.array_equal(labels(ftl_run[0], "none"), want)

    nn = load_classifier(nn_run[0])
    for tta, flip in (("none", False), ("flip", True)):
        p = nn.predict_proba(images, flip_tta=flip, translate_tta=False)
        assert np.array_equal(labels(nn_run[0], tta), p.argmax(1)), tta


@pytest.mark.parametrize("key,value", [
    ("translate_tta", np.array([1, 0])), ("flip_tta", np.array("yes")),
    ("normalize", np.array(2)), ("binary", np.array([True])),
])
def test_model_file_with_a_malformed_flag_is_one_line_error(
    key, value, softmax_run, ftl_run, small_test, tmp_path, capsys  # noqa: F811
):
    """A true/false field of a model.npz that is not one boolean: exit 2, naming file and key."""
    from reprlab.io import read_npz, save_npz

    run = tmp_path / "run"
    shutil.copytree(softmax_run if key == "binary" else ftl_run[0], run)
    save_npz(run / "model.npz", **{**read_npz(run / "model.npz"), key: value})
    argv = ["predict", str(run), "--data", str(small_test), "--out", str(tmp_path / "p.csv")]
    _fails(argv, f"model.npz: {key} must be true or false", capsys)
    assert not (tmp_path / "p.csv").exists()


def _damaged_arrays(f: dict) -> dict[str, tuple[dict, str]]:
    """Edits of a softmax model.npz's arrays, each with what the refusal must say."""
    return {
        "few_ids": ({"class_ids": f["class_ids"][:5]}, "class_ids must be 10 different"),
        "same_ids": ({"class_ids": np.zeros(10, np.int64)}, "class_ids must be 10 different"),
        "few_names": ({"classes": f["classes"][:5]}, "10 output(s) and 5 class names"),
        "binary": ({"binary": np.array(True)}, "a binary model needs 1 output"),
        "nan_W": ({"W": f["W"] * np.nan}, "W holds NaN"),
        "zero_std": ({"std": f["std"] * 0}, "std must be positive"),
    }


@pytest.mark.parametrize(
    "case", ["few_ids", "same_ids", "few_names", "binary", "nan_W", "zero_std"]
)
def test_a_linear_model_whose_arrays_do_not_fit_together_is_refused(
    case, softmax_run, ftl_run, small_test, tmp_path, capsys  # noqa: F811
):
    """A damaged or hand-edited model.npz (class names, class ids and outputs of different
    counts, NaN weights, a zero std) is one line and exit 2, not a traceback or labels without
    names (v20; found by an audit helper)."""
    from reprlab.io import read_npz, save_npz

    run = tmp_path / "run"
    shutil.copytree(softmax_run, run)
    f = read_npz(run / "model.npz")
    edit, needle = _damaged_arrays(f)[case]
    save_npz(run / "model.npz", **{**f, **edit})
    out = tmp_path / "p.csv"
    _fails(["predict", str(run), "--data", str(small_test), "--out", str(out)], needle, capsys)
    assert not out.exists()
    if case == "few_names":  # fine_tune_linear's model file is checked by the same function
        ftl = tmp_path / "ftl"
        shutil.copytree(ftl_run[0], ftl)
        g = read_npz(ftl / "model.npz")
        save_npz(ftl / "model.npz", **{**g, "classes": g["classes"][:5]})
        _fails(["predict", str(ftl), "--data", str(small_test), "--out", str(out)],
               "5 class names", capsys)  # fmt: skip


def test_neural_models_with_nan_weights_or_impossible_labels_are_refused(
    nn_run, tiny_encoder, small_test, tmp_path, capsys  # noqa: F811
):
    import torch

    out = tmp_path / "p.csv"
    nn = tmp_path / "nn"
    shutil.copytree(nn_run[0], nn)
    ck = torch.load(nn / "model.pt", weights_only=True)
    name = next(k for k, v in ck["state_dict"].items() if v.is_floating_point())
    ck["state_dict"][name] = ck["state_dict"][name] * float("nan")
    torch.save(ck, nn / "model.pt")
    _fails(["predict", str(nn), "--data", str(small_test), "--out", str(out)],
           "weights hold NaN", capsys)  # fmt: skip
    knn = tmp_path / "knn"
    shutil.copytree(tiny_encoder, knn)
    labels = np.load(knn / "train_labels.npy")
    np.save(knn / "train_labels.npy", labels + 10)
    _fails(["predict", str(knn), "--data", str(small_test), "--out", str(out)],
           "train_labels.npy: labels must be in 0..9", capsys)  # fmt: skip
    assert not out.exists()


def test_predict_bad_input(nn_run, ftl_run, tiny_encoder, small_test, tmp_path, capsys):  # noqa: F811
    run = nn_run[0]
    with np.load(small_test) as z:
        imgs = z["images"]
    small = tmp_path / "small.npz"
    np.savez(small, images=imgs[:, :24, :24])
    gray = tmp_path / "gray.npz"
    np.savez(gray, images=imgs[..., :1])
    existing = tmp_path / "exists.csv"
    existing.write_text("keep me\n")
    no_model = tmp_path / "no_model"
    shutil.copytree(ftl_run[0], no_model)
    (no_model / "model.npz").unlink()
    no_index = tmp_path / "no_index"  # a cont_rep run folder of an earlier release
    shutil.copytree(tiny_encoder, no_index, ignore=shutil.ignore_patterns("train_*.npy"))
    bad_index = tmp_path / "bad_index"
    shutil.copytree(tiny_encoder, bad_index)
    np.save(bad_index / "train_labels.npy", np.zeros(3, np.int64))
    no_model_nn = tmp_path / "no_model_nn"
    shutil.copytree(run, no_model_nn, ignore=shutil.ignore_patterns("*.pt"))
    out = tmp_path / "o.csv"
    cases = [
        ([str(run), "--data", str(small), "--out", str(out)], "small.npz"),
        ([str(run), "--data", str(gray), "--out", str(out)], "gray.npz"),
        ([str(ftl_run[0]), "--data", str(small), "--out", str(out)], "small.npz"),
        ([str(run), "--data", str(small_test), "--out", str(existing)], "exists.csv"),
        ([str(run), "--data", str(small_test), "--out", str(existing / "o.csv")],
         "exists.csv is a file, not a folder"),
        ([str(no_model), "--data", str(small_test), "--out", str(out)], "model.npz"),
        ([str(no_model_nn), "--data", str(small_test), "--out", str(out)], "model.pt"),
        ([str(no_index), "--data", str(small_test), "--out", str(out)], "train_embeddings.npy"),
        ([str(bad_index), "--data", str(small_test), "--out", str(out)], "do not match"),
        ([str(tiny_encoder), "--data", str(small), "--out", str(out)], "small.npz"),
        ([str(tmp_path / "nope"), "--data", str(small_test), "--out", str(out)], "nope"),
        ([str(run), "--data", str(tmp_path / "none.npz"), "--out", str(out)], "none.npz"),
        # a folder of runs (a pipeline's): the message names the runs to choose from
        ([str(run.parent), "--data", str(small_test), "--out", str(out)], str(run)),
    ]
    for args, needle in cases:
        _fails(["predict", *args], needle, capsys)
        assert not out.exists(), args
    assert existing.read_text() == "keep me\n"
    # --overwrite replaces it
    assert (
        main(
            ["predict", str(run), "--data", str(small_test), "--out", str(existing), "--overwrite"]
        )
        == 0
    )
    assert existing.read_text() == (run / "predictions.csv").read_text()
    # the summary line counts the labels of every class, by name, zeros included
    counts = np.bincount(np.array(existing.read_text().split(), dtype=int), minlength=10)
    printed = capsys.readouterr().out
    assert "0 airplane: " in printed and "9 truck: " in printed
    assert f"9 truck: {counts[9]})" in printed and f"3 cat: {counts[3]}," in printed


def test_grayscale_images_through_every_neural_mode(cifar_train, small_test, tmp_path):  # noqa: F811
    """Real CIFAR-10 images reduced to one channel: cont_rep builds a 1-channel encoder, the
    fine-tuning modes load it, and predict reproduces each run's file; RGB images are refused."""
    from reprlab.data import limit_images, load_images

    ds = limit_images(load_images(cifar_train, require_labels=True), 400, seed=0)
    gray = tmp_path / "gray.npz"
    np.savez(gray, images=ds.images[..., :1], labels=ds.labels)
    with np.load(small_test) as z:
        np.savez(tmp_path / "gray_test.npz", images=z["images"][:32, :, :, :1])
    test = str(tmp_path / "gray_test.npz")
    common = ["--data", str(gray), "--test_data", test, "--no-progress", "--batch_size", "32"]
    cr = tmp_path / "cr"
    assert main(["cont_rep", *common, "--out", str(cr), "--encoder", "airbench_small",
                 "--z_dim", "16", "--num_iters", "6", "--eval_every", "6", "--no-tsne"]) == 0
    enc = ["--encoder_path", str(cr)]
    assert main(["fine_tune_linear", *common, *enc, "--out", str(tmp_path / "ftl"),
                 "--num_iters", "20"]) == 0
    assert main(["fine_tune_nn", *common, *enc, "--out", str(tmp_path / "nn"),
                 "--num_iters", "6", "--eval_every", "3"]) == 0
    for run in (cr, tmp_path / "ftl", tmp_path / "nn"):
        out = tmp_path / f"{run.name}.csv"
        assert main(["predict", str(run), "--data", test, "--out", str(out)]) == 0
        assert out.read_text() == (run / "predictions.csv").read_text()
        assert len(out.read_text().split()) == 32
    assert main(["predict", str(cr), "--data", str(small_test), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    # a grayscale image file (decoded as RGB with three equal channels) is its one channel
    from PIL import Image

    with np.load(test) as z:
        Image.fromarray(z["images"][0, :, :, 0], mode="L").save(tmp_path / "g.png")
    assert main(["predict", str(cr), "--data", str(tmp_path / "g.png"),
                 "--out", str(tmp_path / "g.csv")]) == 0  # fmt: skip
    first = (cr / "predictions.csv").read_text().split()[0]
    assert (tmp_path / "g.csv").read_text().split() == [first]
    # continuing the gray encoder (its run folder) on RGB images: refused before anything is written
    rgb = ["--data", str(cifar_train), "--limit", "400", "--no-progress", "--batch_size", "32"]
    assert main(["cont_rep", *rgb, *enc, "--out", str(tmp_path / "x"), "--encoder",
                 "airbench_small", "--z_dim", "16", "--num_iters", "2", "--no-tsne"]) == 2
    assert not (tmp_path / "x").exists()


def test_labelled_test_data_is_scored(cifar_train, tiny_encoder, tmp_path, capsys):  # noqa: F811
    """Test images that carry labels (here 200 real CIFAR-10 images whose .npz names the classes
    in reverse order) are scored by name, in every mode: summary.json's test_acc is the agreement of
    predictions.csv with the true classes; logistic is scored on its two classes only;
    predict prints the same figure; report.html shows it."""
    from reprlab.data import load_images

    ds = load_images(cifar_train, require_labels=True)
    pick = np.arange(0, 50000, 250)  # 20 of each class (the tar is sorted by class)
    names = ds.classes[::-1]
    test = tmp_path / "labelled.npz"
    np.savez(test, images=ds.images[pick], labels=9 - ds.labels[pick], classes=np.array(names))
    truth = ds.labels[pick]
    quick = ["--data", str(cifar_train), "--limit", "600", "--test_data", str(test)]
    runs = {
        "softmax": ["softmax", *quick, "--num_iters", "30", "--batch_size", "64"],
        "logistic": ["logistic", *quick, "--num_iters", "30", "--batch_size", "64"],
        # other pairs, one in reverse order: files hold the training set's numbering (3/5, 1/0)
        "logistic_cat_dog": ["logistic", *quick, "--num_iters", "30", "--batch_size", "64",
                             "--classes", "cat,dog"],
        "logistic_reversed": ["logistic", *quick, "--num_iters", "30", "--batch_size", "64",
                              "--classes", "automobile,airplane"],
        "fine_tune_linear": ["fine_tune_linear", *quick, "--encoder_path", str(tiny_encoder),
                             "--num_iters", "50", "--no-progress"],
        # 30 steps: after 6 the head scored 0.18 in float32 (0.2+ in bf16), too near chance
        "fine_tune_nn": ["fine_tune_nn", *quick, "--encoder_path", str(tiny_encoder),
                         "--num_iters", "30", "--eval_every", "15", "--batch_size", "32",
                         "--no-progress"],
        "cont_rep": ["cont_rep", *quick, "--encoder", "airbench_small", "--z_dim", "16",
                     "--num_iters", "6", "--eval_every", "6", "--batch_size", "32", "--no-tsne",
                     "--no-progress"],
    }
    acc = {}
    for name, argv in runs.items():
        out = tmp_path / name
        assert main([*argv, "--out", str(out)]) == 0
        s = json.loads((out / "summary.json").read_text())
        pred = np.array((out / "predictions.csv").read_text().split(), dtype=int)
        pair = {"logistic": [0, 1], "logistic_cat_dog": [3, 5], "logistic_reversed": [1, 0]}
        if name in pair:  # scored on the test images of the pair only
            keep = np.isin(truth, pair[name])
            assert set(pred) <= set(pair[name])
            expected = np.mean(pred[keep] == truth[keep])
            assert s["test_n"] == keep.sum() > 0
        else:
            expected = np.mean(pred == truth)
            assert s["test_n"] == 200
        assert s["test_acc"] == pytest.approx(expected) and 0.2 < expected < 1
        acc[name] = expected
        assert sum(map(sum, s["test_classification_report"]["confusion_matrix"])) == s["test_n"]
        capsys.readouterr()
        assert main(["predict", str(out), "--data", str(test), "--out", str(tmp_path / "p.csv"),
                     "--overwrite"]) == 0
        printed = capsys.readouterr().out
        assert f"test_acc {expected:.4f} ({s['test_n']} images)" in printed
        if name == "logistic_cat_dog":
            assert f"3 cat: {np.sum(pred == 3)}, 5 dog: {np.sum(pred == 5)}" in printed
    html = render_report(tmp_path / "softmax").read_text()
    assert "<th colspan=2>test accuracy</th>" in html and f"{100 * acc['softmax']:.2f} %" in html


def test_official_cifar_test_batch_is_scored(cifar_train, tmp_path, capsys):
    """The use that matters for a paper: --test_data cifar-10-python.tar.gz, whose test_batch
    (here 300 real CIFAR-10 images in the official pickled layout: CHW rows, bytes keys,
    batches.meta names) carries labels; softmax's test_acc is its predictions' agreement."""
    import pickle

    from fixtures_data import cifar_files, write_tar

    from reprlab.data import CIFAR10_CLASSES, load_images

    ds = load_images(cifar_train, require_labels=True)
    pick = np.arange(7, 50000, 167)[:300]
    rows = ds.images[pick].transpose(0, 3, 1, 2).reshape(len(pick), 3072)
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": ds.labels[pick].tolist(),
             b"data": rows, b"filenames": [b"x.png"] * len(pick)}
    files = {**cifar_files(), "test_batch": pickle.dumps(batch, protocol=2)}
    official = write_tar(tmp_path / "cifar-10-python.tar.gz",
                         {f"cifar-10-batches-py/{k}": v for k, v in files.items()}, "w:gz")
    assert load_images(official, split="test").classes == CIFAR10_CLASSES
    out = tmp_path / "sm"
    assert main(["softmax", "--data", str(cifar_train), "--limit", "2000", "--num_iters", "60",
                 "--test_data", str(official), "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    pred = np.array((out / "predictions.csv").read_text().split(), dtype=int)
    assert len(pred) == 300 and s["test_n"] == 300 and s["test_matched_by"] == "class name"
    assert s["test_acc"] == pytest.approx(np.mean(pred == ds.labels[pick]))
    assert s["test_acc"] > 0.2  # a softmax on pixels, far above the 10 % of chance
    assert f"test_acc {s['test_acc']:.4f} (300 images)" in capsys.readouterr().out
