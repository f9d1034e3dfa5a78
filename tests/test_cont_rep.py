"""cont_rep on small real CIFAR-10 subsets; embeddings, kNN; flag checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reprlab import contrastive
from reprlab.cli import main
from reprlab.contrastive import load_encoder, run_cont_rep
from reprlab.embed import embed, knn_accuracy, knn_predict
from reprlab.encoders import build_encoder
from reprlab.errors import ReprlabError, TrainingFailed
from reprlab.io import load_checkpoint, read_jsonl
from reprlab.modes import config_for

TINY = {
    "limit": 600,
    "encoder": "airbench_small",
    "batch_size": 64,
    "z_dim": 64,
    "mining": "all",  # thousands of triplets: indexing's backward must be deterministic
    "num_iters": 30,
    "eval_every": 10,
    "checkpoint_every": 10,
    "knn_k": 5,
    "progress": False,
}


def tiny(train: Path, out: Path, **kw) -> contrastive.ContRepConfig:
    return config_for("cont_rep", {**TINY, "data": str(train), "out": str(out), **kw})


def state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


@pytest.fixture(scope="module")
def finished(cifar_train: Path, cifar_test: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cr") / "run"
    # the first 2,000 real test images (all 10,000 cost ~30 s more of embedding on a slow CPU)
    test = out.parent / "test2000.npz"
    with np.load(cifar_test) as z:
        np.savez(test, images=z["images"][:2000])
    summary = run_cont_rep(tiny(cifar_train, out, test_data=str(test), tsne_max=100))
    return out, summary


def test_run_writes_everything_and_learns(finished):
    out, summary = finished
    for f in (
        "config.json",
        "metrics.jsonl",
        "loss.png",
        "accuracy.png",
        "knn.png",
        "tsne.png",
        "encoder.pt",
        "checkpoint.pt",
        "val_embeddings.npy",
        "val_labels.npy",
        "test_embeddings.npy",
        "predictions.csv",
        "summary.json",
        "model_summary.txt",
        "confusion.png",
    ):
        assert (out / f).is_file(), f
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["iter"] for r in rows] == [10, 20, 30]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert all(0 <= r["knn_acc"] <= 1 and "val_loss" in r and "lr" in r for r in rows)
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "finished" and s["iterations"] == 30 and s["stop_reason"] == "num_iters"
    assert s["knn_acc"] > 0.15  # 10 classes: chance is 0.10
    assert s["peak_memory_mib"]["rss"] > 100  # torch + the decoded images, at the least
    from reprlab.train import cpu_has_native_bf16  # --autocast (default): bf16 only if native

    assert s["precision"] == ("bfloat16" if cpu_has_native_bf16() else "float32")
    rep = s["classification_report"]  # of the kNN vote on the validation images
    assert rep["accuracy"] == s["knn_acc"] and sum(map(sum, rep["confusion_matrix"])) == 120
    emb = np.load(out / "val_embeddings.npy")
    assert emb.shape == (120, 64) and np.load(out / "val_labels.npy").shape == (120,)
    assert np.load(out / "test_embeddings.npy").shape == (2000, 64)
    preds = (out / "predictions.csv").read_text().split()
    assert len(preds) == 2000 and {int(v) for v in preds} <= set(range(10))
    assert "Total params" in (out / "model_summary.txt").read_text()
    # encoder.pt rebuilds the encoder: same embeddings
    enc, meta = load_encoder(out / "encoder.pt")
    assert (
        meta["encoder"] == "airbench_small" and meta["z_dim"] == 64 and len(meta["classes"]) == 10
    )
    from reprlab.data import load_images, stratified_split, stratified_subset

    ds = load_images(finished_source(out))
    ds = ds.subset(stratified_subset(ds.labels, 600, 0))
    tr, va = stratified_split(ds.labels, 0.2, 0)
    # the saved validation embeddings are the kNN's queries: flip- and shift-averaged
    kw = dict(progress=False, flip_tta=True)
    again = embed(enc, ds.images[va], meta["mean"], meta["std"], translate_tta=True, **kw)
    np.testing.assert_allclose(again, emb, atol=1e-5)
    # ... and the reference set is embedded unshifted: together they give the summary's kNN
    ref = np.load(out / "train_embeddings.npy")
    plain_ref = embed(enc, ds.images[tr], meta["mean"], meta["std"], **kw)
    np.testing.assert_allclose(ref, plain_ref, atol=1e-5)
    labels = np.load(out / "train_labels.npy")
    assert knn_accuracy(ref, labels, emb, ds.labels[va], k=5) == s["knn_acc"]


def finished_source(out: Path) -> str:
    return json.loads((out / "config.json").read_text())["config"]["data"]


def test_resume_after_crash_gives_identical_weights(
    cifar_train: Path, tmp_path: Path, finished, monkeypatch, capsys
):
    ref_out, _ = finished
    real = contrastive.random_crop_flip
    calls = {"n": 0}

    def crash_at_25(x, **kw):
        calls["n"] += 1
        if calls["n"] == 26:  # like a SIGKILL in iteration 25: checkpoint of iteration 20 left
            raise KeyboardInterrupt
        return real(x, **kw)

    monkeypatch.setattr(contrastive, "random_crop_flip", crash_at_25)
    with pytest.raises(KeyboardInterrupt):
        run_cont_rep(tiny(cifar_train, tmp_path, tsne=False))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iter"] == 20
    assert not (tmp_path / "encoder.pt").exists()
    rows_before = load_checkpoint(tmp_path / "checkpoint.pt")["rows"]
    monkeypatch.setattr(contrastive, "random_crop_flip", real)
    # the same command without --resume would throw the 20 iterations away: refused, before
    # the model summary or anything else is printed
    capsys.readouterr()
    with pytest.raises(ReprlabError, match="interrupted run.*--resume"):
        run_cont_rep(tiny(cifar_train, tmp_path, tsne=False))
    assert capsys.readouterr().out == ""
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iter"] == 20
    s = run_cont_rep(tiny(cifar_train, tmp_path, tsne=False, resume=True, progress=True))
    assert s["resumed_from"] == 20 and s["iterations"] == 30
    assert "cont_rep: resuming at iteration 20 of 30 from" in capsys.readouterr().err
    # the run's wall time counts the interrupted session's training seconds too
    assert s["wall_time_s"] > s["train_wall_time_s"] > rows_before[-1]["elapsed_s"] > 0
    a, b = state(ref_out / "encoder.pt"), state(tmp_path / "encoder.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["iter"] for r in rows] == [10, 20, 30]
    # finished: the same command again does nothing (no training, no file rewritten)
    stamp = (tmp_path / "encoder.pt").stat().st_mtime_ns
    assert run_cont_rep(tiny(cifar_train, tmp_path, tsne=False)) == s
    assert (tmp_path / "encoder.pt").stat().st_mtime_ns == stamp


def test_zero_iterations_keep_the_encoder_as_initialised(
    cifar_train: Path, tmp_path: Path, finished
) -> None:
    """``--num_iters 0``: the encoder as a run starts from (the whitening stem fitted to the
    training images, random convolutions, no batch statistics yet), with every file of a run:
    the random-feature baseline of kNN and probe, and the start of fine-tuning from scratch."""
    s = run_cont_rep(tiny(cifar_train, tmp_path / "r0", num_iters=0, tsne=False))
    assert s["status"] == "finished" and s["iterations"] == 0 and s["stop_reason"] == "num_iters"
    assert read_jsonl(tmp_path / "r0" / "metrics.jsonl") == []
    assert 0.15 < s["knn_acc"] < finished[1]["knn_acc"]  # above chance, below training
    init, trained = state(tmp_path / "r0" / "encoder.pt"), state(finished[0] / "encoder.pt")
    assert torch.equal(init["whiten.weight"], trained["whiten.weight"])  # same seed, same fit
    for k, v in init.items():
        if k.endswith("running_mean"):  # BatchNorm never ran in training mode
            assert torch.equal(v, torch.zeros_like(v)) and not torch.equal(v, trained[k]), k


def test_the_final_passes_show_what_they_do(cifar_train: Path, tmp_path: Path, capsys) -> None:
    """After the training bar, the minutes of embedding (with how many views each image takes)
    and the t-SNE each say so, instead of a silence that looks like a hang."""
    test = tmp_path / "test.npz"
    np.savez(test, images=np.zeros((64, 32, 32, 3), np.uint8))
    cfg = tiny(cifar_train, tmp_path / "run", limit=300, num_iters=10, progress=True,
               test_data=str(test), tsne_max=50, translate_tta=True)  # fmt: skip
    run_cont_rep(cfg)
    err = capsys.readouterr().err
    for text in ("embed train (2 views)", "embed val (6 views)", "embed test (6 views)",
                 "cont_rep: t-SNE of 50 validation embeddings"):  # fmt: skip
        assert text in err, text


def test_time_budget_sets_the_iterations(cifar_train: Path, tmp_path: Path, capsys):
    """``--time_budget``: the run times its steps and trains as many as fit, with the schedule
    scaled to them; summary.json and the checkpoint record the count, config.json the budget."""
    flags = [f"--{k}={v}" for k, v in TINY.items() if k not in ("progress", "num_iters")]
    args = ["cont_rep", "--data", str(cifar_train), "--out", str(tmp_path), "--no-tsne", *flags]
    assert main([*args, "--time_budget", "6", "--warmup_frac", "0.5"]) == 0
    cap = capsys.readouterr()
    assert "--time_budget 6 s:" in cap.err
    assert " iterations (num_iters set by --time_budget 6 s), final loss" in cap.out
    s = json.loads((tmp_path / "summary.json").read_text())
    tb = s["time_budget"]
    n = s["iterations"]
    assert n == tb["num_iters"] and n % 10 == 0 and n != 2100  # not the default count
    assert tb["budget_s"] == 6 and tb["calibration_s"] + s["train_wall_time_s"] < 2 * 6 + 2
    assert json.loads((tmp_path / "config.json").read_text())["config"]["time_budget"] == 6
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    # the warm-up is half of the budgeted run as planned (a re-plan moves only its end)
    assert abs((peak + 1) * 10 - tb["planned_iters"] // 2) <= 10
    assert load_checkpoint(tmp_path / "checkpoint.pt")["time_budget"] == tb


def test_nan_loss_marks_run_failed(cifar_train: Path, tmp_path: Path, capsys):
    flags = ["cont_rep", "--data", str(cifar_train), "--out", str(tmp_path)]
    for k, v in {
        **TINY,
        "num_iters": 20,
        "normalize": False,
        "distance": "squared_l2",
        "optimizer": "sgd",
        "lr": 1e12,
        "warmup_iters": 0,
        "schedule": "constant",
        "tsne": False,
    }.items():
        flags += [f"--{k}"] if v is True else [f"--no-{k}"] if v is False else [f"--{k}", str(v)]
    assert main(flags) == 1
    err = capsys.readouterr().err
    assert "training failed" in err and "--lr" in err
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "failed" and s["stop_reason"] == "nan_loss"
    assert not (tmp_path / "encoder.pt").exists()
    if (tmp_path / "checkpoint.pt").exists():  # only ever a finite, good state
        ck = load_checkpoint(tmp_path / "checkpoint.pt")
        assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    with pytest.raises(TrainingFailed):
        run_cont_rep(
            tiny(
                cifar_train,
                tmp_path / "again",
                normalize=False,
                distance="squared_l2",
                optimizer="sgd",
                lr=1e12,
                warmup_iters=0,
                schedule="constant",
                num_iters=20,
            )
        )


def test_encoder_of_another_z_dim_is_refused(cifar_train: Path, tmp_path: Path, finished):
    ref_out, _ = finished
    with pytest.raises(ReprlabError, match=r"encoder\.pt.*z_dim=64.*--z_dim 32"):
        run_cont_rep(
            tiny(cifar_train, tmp_path / "x", z_dim=32, encoder_path=str(ref_out / "encoder.pt"))
        )
    assert not (tmp_path / "x").exists()
    with pytest.raises(ReprlabError, match=r"checkpoint\.pt: not a reprlab encoder"):
        load_encoder(ref_out / "checkpoint.pt")


def test_embed_is_deterministic_across_batch_sizes():
    torch.manual_seed(0)
    enc = build_encoder("airbench_small", 16)
    imgs = np.random.default_rng(0).integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    kw = dict(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], autocast=False, progress=False)
    a = embed(enc, imgs, batch_size=1, **kw)
    b = embed(enc, imgs, batch_size=256, **kw)
    c = embed(enc, imgs, batch_size=256, **kw)
    assert a.dtype == np.float32 and a.shape == (40, 16)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert np.array_equal(b, c)
    assert enc.training  # mode restored
    flip = embed(enc, imgs, batch_size=8, flip_tta=True, **kw)
    mirrored = embed(enc, imgs[:, :, ::-1].copy(), batch_size=8, **kw)
    np.testing.assert_allclose(flip, (b + mirrored) / 2, atol=1e-5)


def test_embed_translate_tta_weights_the_shifted_views():
    """translate_tta = 1/2 the (flip-averaged) embedding + 1/4 each of the image shifted one
    pixel up-left and down-right, borders filled by reflection."""
    torch.manual_seed(0)
    enc = build_encoder("airbench_small", 16)
    imgs = np.random.default_rng(1).integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    kw = dict(mean=[0.5] * 3, std=[0.25] * 3, autocast=False, progress=False, flip_tta=True)

    def shifted(d: int) -> np.ndarray:  # content moved d pixels right and down, reflect-filled
        p = np.pad(imgs, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        return np.ascontiguousarray(p[:, 1 - d : 33 - d, 1 - d : 33 - d])

    got = embed(enc, imgs, batch_size=5, translate_tta=True, **kw)
    centre = embed(enc, imgs, **kw)
    want = 0.5 * centre + 0.25 * (embed(enc, shifted(1), **kw) + embed(enc, shifted(-1), **kw))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(got, centre, atol=1e-3)  # the shifts do change the embedding


def test_embed_moves_the_encoder_to_its_device(monkeypatch):
    """A freshly loaded encoder sits on the CPU; embed() must move it to the device it embeds
    on (on CUDA, fine_tune_linear's test predictions failed with a dtype error without this)."""
    enc = build_encoder("airbench_small", 16)
    moved: list[object] = []
    real_to = enc.to
    monkeypatch.setattr(enc, "to", lambda *a, **k: moved.append(a[0]) or real_to(*a, **k))
    imgs = np.zeros((3, 32, 32, 3), np.uint8)
    embed(enc, imgs, [0.5] * 3, [0.25] * 3, device="cpu", progress=False)
    assert moved == [torch.device("cpu")]


def test_knn_accuracy_hand_built():
    train = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1], [0.1, 0.9], [-1, 0]], np.float32)
    labels = np.array([0, 0, 0, 1, 1, 2])
    query = np.array([[1, 0.05], [0.05, 1], [-1, 0.1], [0.2, 0.8]], np.float32)
    assert knn_accuracy(train, labels, query, np.array([0, 1, 2, 1]), k=1) == 1.0
    assert knn_accuracy(train, labels, query, np.array([0, 1, 2, 0]), k=1) == 0.75
    # k=3 majority: [-1, 0.1]'s neighbours are the class-2 point and two class-1 points
    assert knn_accuracy(train, labels, query, np.array([0, 1, 1, 1]), k=3) == 1.0
    # tie (k=2: one vote each) goes to the more similar class
    q = np.array([[0.95, 0.0]], np.float32)
    t2 = np.array([[1, 0], [0.5, 0.5]], np.float32)
    assert knn_accuracy(t2, np.array([3, 1]), q, np.array([3]), k=2) == 1.0
    assert (
        knn_accuracy(train, labels, query, np.array([0, 1, 2, 1]), k=1, metric="euclidean") == 1.0
    )


def test_bad_flags_exit_2_and_write_nothing(cifar_train: Path, tmp_path: Path, capsys):
    one_class = tmp_path / "one.npz"
    rng = np.random.default_rng(0)
    np.savez(
        one_class,
        images=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
        labels=np.zeros(20, dtype=np.int64),
    )
    cases = [
        (["--z_dim", "0"], "--z_dim"),
        (["--encoder", "resnet9"], "--encoder"),
        (["--mining", "hardest"], "--mining"),
        (["--batch_size", "5000"], "--batch_size"),
        (["--time_budget", "-1"], "--time_budget"),
        (["--data", str(one_class)], "two classes"),
    ]
    for i, (extra, needle) in enumerate(cases):
        out = tmp_path / f"run{i}"
        data = [] if "--data" in extra else ["--data", str(cifar_train), "--limit", "600"]
        assert main(["cont_rep", "--out", str(out), *data, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("reprlab: error:") and needle in err, err
        assert not out.exists()


def test_knn_vote_does_not_depend_on_the_chunk_or_the_origin():
    """A vote tie goes to the class of higher summed similarity whatever other queries share
    the chunk; euclidean neighbours are found exactly far from the origin."""
    train = np.array([[1, 0], [3, 0], [1000, 0], [1001, 0]], np.float32)
    labels = np.array([0, 1, 0, 1])
    q = np.array([[2.1, 0], [-5000, 0]], np.float32)  # 2.1: one vote each, class 1 nearer
    for chunk in (1, 2):
        assert list(knn_predict(train, labels, q, k=2, metric="euclidean", chunk=chunk)) == [1, 0]
    t2, q2 = np.array([[1, 1e-8], [1, 2e-8]], np.float32), np.array([[0, 1], [1, 0]], np.float32)
    for chunk in (1, 2):
        assert list(knn_predict(t2, np.array([0, 1]), q2, k=2, chunk=chunk)) == [1, 0]
    far = np.array([[1000, 0], [1000.05, 0]], np.float32)
    near1 = np.array([[1000.04, 0]], np.float32)  # 0.01 from class 1, 0.04 from class 0
    assert list(knn_predict(far, np.array([0, 1]), near1, k=1, metric="euclidean")) == [1]


def test_embedding_digest_names_every_setting(tmp_path: Path, monkeypatch):
    """Two embedding computations get one digest only when nothing that can change a float
    differs: encoder bytes, images, test-time averaging, batch size, precision."""
    from reprlab.embed import embedding_digest
    from reprlab.io import file_digest

    enc_file = tmp_path / "encoder.pt"
    enc_file.write_bytes(b"weights")
    enc = file_digest(enc_file)
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    kw = dict(flip_tta=True, translate_tta=False, batch_size=512, device=torch.device("cpu"),
              autocast=False)  # fmt: skip
    d = embedding_digest(enc, images, **kw)
    assert d == embedding_digest(enc, images.copy(), **kw)
    other_images = images.copy()
    other_images[0, 0, 0, 0] ^= 1
    variants = [
        embedding_digest(enc, other_images, **kw),
        embedding_digest(enc, images[:3], **kw),
        *(
            embedding_digest(enc, images, **{**kw, k: not kw[k]})
            for k in ("flip_tta", "translate_tta")
        ),
        embedding_digest(enc, images, **{**kw, "batch_size": 256}),
    ]
    monkeypatch.setattr("reprlab.train.cpu_has_native_bf16", lambda: True)
    assert embedding_digest(enc, images, **kw) == d  # --no-autocast: float32 still
    variants.append(embedding_digest(enc, images, **{**kw, "autocast": True}))  # bf16 now
    enc_file.write_bytes(b"weightz")
    variants.append(embedding_digest(file_digest(enc_file), images, **kw))
    assert d not in variants and len(set(variants)) == len(variants)
