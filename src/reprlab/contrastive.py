"""``cont_rep``: train a CNN encoder with the triplet margin loss (report, sections 2.1-2.3).

Every batch is ``batch_size`` random training images (uint8, kept as one tensor), normalised
and augmented (random translate-crop + flip) as a batch tensor, embedded with one forward pass;
triplets are then formed inside the batch: ``random`` is the report's sampler (for each anchor a
random positive and a random negative of the batch), ``hard``/``semihard``/``all`` mine them on
the embeddings. The loss is logged every 10 iterations, kNN accuracy on the validation split
every ``eval_every`` iterations, and at the end the encoder (``encoder.pt``), validation (and
test) embeddings and a t-SNE map (``tsne.png``) are written.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from reprlab.augment import random_crop_flip
from reprlab.config import arg, positive
from reprlab.data import (
    ImageSet,
    Standardizer,
    check_image_shape,
    load_images,
    run_images,
    to_float,
)
from reprlab.embed import (
    as_mean_std,
    embed,
    embedding_record,
    knn_accuracy,
    knn_predict,
    to_input,
    tsne_2d,
    tta_views,
)
from reprlab.encoders import (
    DEFAULT_ENCODER,
    ENCODERS,
    build_encoder,
    check_input_size,
    count_parameters,
    encoder_summary,
)
from reprlab.errors import ReprlabError, TrainingFailed
from reprlab.io import (
    RunDir,
    cpu_weights,
    file_digest,
    load_model,
    load_npy,
    read_json,
    reprlab_record,
    save_checkpoint,
    save_npy,
    write_text,
)
from reprlab.metrics import (
    report_with_confusion,
    score_text,
    stop_text,
    write_test_predictions,
)
from reprlab.plots import plot_curves, plot_embedding_2d, plot_overlay
from reprlab.train import (
    NeuralRunConfig,
    StepRNG,
    TrainConfig,
    param_groups,
    pick_device,
    record_failure,
    train,
)
from reprlab.triplets import (
    DISTANCES,
    MINERS,
    TripletMarginLoss,
    batch_triplet_loss,
    random_triplets,
    sample_triplets,
)

ENCODER_FORMAT = "reprlab-encoder"
ENCODER_VERSION = 1
EARLY_STOP_METRICS = ("train_loss", "val_loss", "knn_acc")


@dataclass
class ContRepConfig(NeuralRunConfig):
    """Triplet-loss representation learning. Defaults are the ``fast`` preset's values."""

    # --- model -------------------------------------------------------------------------------
    # airbench_cpu: airbench94's net at widths 32/128/256. In equal training time on 2 cores
    # it beat the 64/256/256 net (kNN 0.848 in 1300 steps vs 0.837 in 600; README)
    encoder: str = arg(
        DEFAULT_ENCODER,
        f"encoder architecture: {', '.join(ENCODERS)} (report: vgg16_bn)",
        choices=tuple(ENCODERS),
    )
    # recipe research: 128 (unit-norm embeddings, batch-all); the report's d_out is 64
    z_dim: int = arg(128, "embedding size (report: 64)")
    # vgg16_bn only: "report" = AdaptiveAvgPool2d(7) + Linear(25088, z) as printed in 2.1;
    # "gap" = global average pool + Linear(512, z) (same function class, 49x fewer parameters)
    head: str = arg("report", "vgg16_bn head: report | gap", choices=("report", "gap"))
    encoder_path: str | None = arg(
        None, "start from this encoder (a finished cont_rep run's encoder.pt, or its folder)"
    )
    # --- triplets ----------------------------------------------------------------------------
    # report 2.2.1: margin 1.0 on squared L2 distances of raw embeddings
    margin: float = arg(0.2, "triplet margin (report: 1.0)")
    distance: str = arg("l2", "l2 | squared_l2 (report: squared_l2)", choices=DISTANCES)
    # unit-norm embeddings keep distances in [0, 2]: margin on a fixed scale, matches cosine kNN
    normalize: bool = arg(True, "L2-normalise embeddings before the loss (report: no)")
    # batch-all (every violating in-batch triplet): measured by the recipe research at ~270
    # steps: kNN 0.62 vs 0.38 for batch-hard, which collapses (loss stuck at the margin)
    mining: str = arg(
        "all", "triplet mining: random (report) | all | hard | semihard", choices=MINERS
    )
    # --- optimisation: NeuralRunConfig's airbench94 recipe (Jordan 2024) at batch 256 --------
    # Measured in 300-iteration proxies (README): it lifted kNN from 0.65 to 0.76 over the
    # previous SGD 0.1 / wd 5e-4 / no-lookahead recipe, the same +11 points it gives CE training.
    # A batch of 256 holds ~25 images per class: plenty of in-batch positives and negatives.
    # 0.26-0.28 s per iteration on 2 CPU cores (airbench_cpu, bf16, evaluations included).
    # GPU sweep (benchmarks/gpu_sweep.py, README): 2300 iterations beat 1800 by +0.9 kNN points
    # on two splits, but 2200 took 608 s on this CPU; 2100 stays inside 10 minutes (~9.5)
    num_iters: int = arg(2100, "training iterations (report: 2000)")
    # airbench's 0.375 (see NeuralRunConfig) is for cross-entropy; the triplet loss wants 3x
    # that (300-iteration proxies: kNN 0.684 / 0.763 / 0.782 at 0.11 / 0.375 / 1.125)
    lr: float = arg(1.125, "peak learning rate (report: 1e-4)")
    # airbench's 5e-4 decay of each weight per step, at this lr
    weight_decay: float = arg(4.44e-4, "weight decay of weights with ndim > 1 (coupled, SGD)")
    # --- early stopping, evaluation, checkpoints ---------------------------------------------
    # report 2.2.4 / table 3: criterion = loss, patience 300 (checks every 10 iterations)
    early_stop_metric: str = arg(
        "train_loss", "train_loss (report) | val_loss | knn_acc", choices=EARLY_STOP_METRICS
    )
    patience: int = arg(
        300,
        "early-stopping patience in checks without improvement (train_loss is checked every "
        "10 iterations, val_loss/knn_acc every --eval_every); 0 = off (report: 300)",
    )
    eval_every: int = arg(200, "iterations between evaluations (kNN accuracy, val loss)")
    knn_k: int = arg(20, "neighbours of the kNN classifier (cosine, majority vote)")
    knn_eval_size: int = arg(
        5000, "images of the train/val splits used for kNN during training (final: all)"
    )
    checkpoint_every: int = arg(200, "iterations between checkpoints (0: end and Ctrl-C only)")
    # --- embeddings ----------------------------------------------------------------------------
    # measured: kNN 0.763 -> 0.777 at 300 iterations, for one more forward pass per image
    flip_tta: bool = arg(
        True, "average each image's embedding with its mirror's (evaluation and saved embeddings)"
    )
    # airbench94's multi-crop TTA, on the images being classified only (the kNN's reference
    # set stays unshifted). On the encoders of three fast pipelines (seeds 0-2) it moved kNN
    # from 86.98/87.78/87.67 % to 87.26/88.33/88.14 % for 3x the passes over validation and
    # test images (~+25 s on 2 cores); averaging the reference set's shifts too gained no more
    translate_tta: bool = arg(
        True,
        "also average the embeddings of the validation and test images shifted 1 pixel up-left "
        "and down-right (weights 1/2, 1/4, 1/4), as fine_tune_nn's --translate_tta; the kNN's "
        "training reference set is embedded unshifted",
    )
    embed_batch_size: int = arg(512, "batch size when computing embeddings")
    tsne: bool = arg(True, "draw the t-SNE map of the validation embeddings (tsne.png)")
    tsne_max: int = arg(10000, "at most this many validation points in the t-SNE map")

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # the report's configuration (sections 2.1-2.2, tables 3 and 5)
        "seed": {
            "encoder": "vgg16_bn",
            "head": "report",
            "z_dim": 64,
            "batch_size": 2048,
            "num_iters": 2000,
            "margin": 1.0,
            "distance": "squared_l2",
            "normalize": False,
            "mining": "random",
            "augment": False,
            "optimizer": "adam",
            "lr": 1e-4,
            "weight_decay": 0.0,
            "schedule": "constant",
            "warmup_iters": 0,
            "warmup_start": 0.0,
            "norm_lr_scale": 0.0,
            "lookahead": False,
            "flip_tta": False,
            "translate_tta": False,
            "early_stop_metric": "train_loss",
            "patience": 300,
        },
        # CPU-fast recipe = the field defaults: airbench_cpu encoder, batch-all mining on unit-norm
        # embeddings, margin 0.2, airbench94's SGD recipe at lr 1.125 (README). Earlier 150 s
        # proxies: batch-hard collapses (kNN 0.38) where batch-all reached 0.62.
        "fast": {},
    }
    DEFAULT_PRESET: ClassVar[str] = "fast"

    def validate(self) -> None:
        super().validate()
        positive(self, "z_dim", "knn_k", "knn_eval_size", "embed_batch_size", "tsne_max")
        positive(self, "margin", allow_zero=True)
        if self.batch_size < 4:
            raise ReprlabError(f"--batch_size must be >= 4 (triplets), got {self.batch_size}")
        if self.tsne_max < 2:  # openTSNE needs a neighbour for every point
            raise ReprlabError(f"--tsne_max must be >= 2 (points of a map), got {self.tsne_max}")

    def encoder_kwargs(self, channels: int = 3) -> dict[str, Any]:
        """The encoder factory's options for images of ``channels`` channels (saved with it)."""
        kw: dict[str, Any] = {"head": self.head} if self.encoder == "vgg16_bn" else {}
        if channels != 3:  # grayscale; 3-channel files stay as earlier releases wrote them
            kw["in_channels"] = channels
        return kw


# ---------------------------------------------------------------------------------------------
# Encoder files
# ---------------------------------------------------------------------------------------------


def save_encoder(
    path: str | Path,
    encoder: torch.nn.Module,
    name: str,
    z_dim: int,
    kwargs: dict[str, Any],
    mean: np.ndarray,
    std: np.ndarray,
    classes: list[str],
    image_shape: tuple[int, int, int],
) -> None:
    """``encoder.pt``: weights + everything needed to rebuild and feed the encoder."""
    save_checkpoint(
        path,
        {
            "format": ENCODER_FORMAT,
            "version": ENCODER_VERSION,
            "encoder": name,
            "z_dim": int(z_dim),
            "kwargs": dict(kwargs),
            "state_dict": cpu_weights(encoder),
            "mean": [float(v) for v in np.asarray(mean).reshape(-1)],
            "std": [float(v) for v in np.asarray(std).reshape(-1)],
            "classes": list(classes),
            "image_shape": [int(v) for v in image_shape],
        },
    )


def resolve_encoder_path(path: str | Path) -> Path:
    """``encoder.pt`` itself, or the ``encoder.pt`` of a run folder."""
    p = Path(path).expanduser()
    return p / "encoder.pt" if p.is_dir() else p


def load_encoder(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild an encoder saved by ``cont_rep`` (``path``: its ``encoder.pt`` or the run folder):
    ``(encoder in eval mode, meta)``.

    ``meta`` holds ``encoder`` (name), ``z_dim``, ``kwargs``, ``mean``/``std`` ([0, 1] pixel
    scale, per channel), ``classes`` and ``image_shape`` (H, W, C).
    """
    path = resolve_encoder_path(path)
    if not path.is_file():
        mode = (reprlab_record(path.parent / "config.json", "run") or {}).get("mode")
        what = f"a {mode} run folder has none; " if mode not in (None, "cont_rep") else ""
        raise ReprlabError(
            f"{path}: encoder file not found ({what}--encoder_path takes a cont_rep run folder "
            "or its encoder.pt)"
        )
    return load_model(
        path,
        ENCODER_FORMAT,
        lambda ck: build_encoder(ck["encoder"], int(ck["z_dim"]), **dict(ck.get("kwargs") or {})),
        kind="encoder",
        expected="a reprlab encoder file (expected cont_rep's encoder.pt)",
    )


class KNNPredictor:
    """A finished ``cont_rep`` run as a classifier: embed the images as the run did (its
    encoder, flip and shift averaging, autocast), then the majority vote of the ``k`` nearest
    training embeddings (cosine), as the run's own ``predictions.csv``."""

    def __init__(
        self,
        encoder: torch.nn.Module,
        meta: dict[str, Any],
        train_emb: np.ndarray,
        train_labels: np.ndarray,
        k: int,
        flip_tta: bool,
        translate_tta: bool,
        autocast: bool,
        source: str = "run",
    ):
        self.encoder, self.meta = encoder, meta
        self.train_emb, self.train_labels = train_emb, train_labels
        self.k, self.autocast = k, autocast
        self.flip_tta, self.translate_tta = flip_tta, translate_tta
        self.classes = list(meta["classes"])
        self.image_shape = tuple(int(v) for v in meta["image_shape"])
        self.source = source

    def predict(
        self,
        images: np.ndarray,
        batch_size: int = 512,
        device: str | torch.device = "auto",
        progress: bool = False,
        where: str | None = None,
    ) -> np.ndarray:
        check_image_shape(images, self.image_shape, where or self.source)
        z = embed(
            self.encoder, images, self.meta["mean"], self.meta["std"], batch_size=batch_size,
            device=device, autocast=self.autocast, flip_tta=self.flip_tta, progress=progress,
            translate_tta=self.translate_tta,
        )
        return knn_predict(self.train_emb, self.train_labels, z, k=self.k).astype(np.int64)


def load_knn_classifier(run_dir: str | Path) -> KNNPredictor:
    """The kNN classifier of a finished ``cont_rep`` run folder (``encoder.pt``,
    ``train_embeddings.npy``, ``train_labels.npy`` and ``config.json``)."""
    run_dir = Path(run_dir)
    files = [run_dir / f for f in ("encoder.pt", "train_embeddings.npy", "train_labels.npy")]
    for f in files:
        if not f.is_file():
            raise ReprlabError(
                f"{f}: not found (is the run finished? cont_rep runs of releases before "
                "train_embeddings.npy cannot predict: rerun them)"
            )
    encoder, meta = load_encoder(files[0])
    emb, labels = (load_npy(f) for f in files[1:])
    if (
        emb.ndim != 2
        or emb.shape[1] != int(meta["z_dim"])
        or labels.shape != (len(emb),)
        or labels.dtype.kind not in "iu"
        or len(emb) == 0
    ):
        raise ReprlabError(f"{run_dir}: training embeddings and labels do not match the encoder")
    if labels.min() < 0 or labels.max() >= len(meta["classes"]):
        raise ReprlabError(
            f"{files[2]}: labels must be in 0..{len(meta['classes']) - 1} (the encoder's "
            f"{len(meta['classes'])} classes), found {labels.min()}..{labels.max()}"
        )
    if not np.all(np.isfinite(emb)):
        raise ReprlabError(f"{files[1]}: holds NaN or infinite values")
    # the vote and the embedding exactly as the run recorded them (no second set of defaults)
    cfg_file = run_dir / "config.json"
    cfg = read_json(cfg_file).get("config") or {}
    try:
        k, flip_tta, autocast = int(cfg["knn_k"]), bool(cfg["flip_tta"]), bool(cfg["autocast"])
    except (KeyError, TypeError, ValueError):
        raise ReprlabError(f"{cfg_file}: lacks the run's knn_k, flip_tta or autocast") from None
    translate_tta = bool(cfg.get("translate_tta", False))  # runs before the option had none
    return KNNPredictor(
        encoder,
        meta,
        emb.astype(np.float32, copy=False),
        labels.astype(np.int64, copy=False),
        k,
        flip_tta,
        translate_tta,
        autocast,
        source=str(run_dir),
    )


# ---------------------------------------------------------------------------------------------
# The mode
# ---------------------------------------------------------------------------------------------


def _prepare_data(cfg: ContRepConfig) -> tuple[ImageSet, ImageSet, ImageSet | None]:
    ds = load_images(cfg.data, require_labels=True)
    images = run_images(ds, cfg, batch_size=cfg.batch_size, why=" (triplets need negatives)")
    # knn_predict would take every training image, and the summary name a k it never used
    if cfg.knn_k > len(images.train):
        raise ReprlabError(
            f"--knn_k {cfg.knn_k} is larger than the training split ({len(images.train)} images "
            f"of {ds.source}); pass a smaller --knn_k"
        )
    return images.train, images.val, images.test


def run_cont_rep(cfg: ContRepConfig, deadline: float | None = None) -> dict[str, Any]:
    """Train the encoder; write the run folder; return the summary.

    ``deadline`` (a ``time.time()``; the pipeline's ``--time_budget``): end training early
    enough for the embedding passes after it to finish by then (:func:`reprlab.train.train`).
    """
    cfg.validate()
    done = RunDir.finished_summary(cfg.out, "cont_rep", cfg.to_dict(), cfg.overwrite)
    if done is not None:
        print(_result_line(done, Path(cfg.out or "")))
        return done
    device = pick_device(cfg.device)
    train_set, val_set, test_set = _prepare_data(cfg)
    enc_kwargs = cfg.encoder_kwargs(train_set.shape[2])  # built, checked and saved with these
    init_enc = _starting_encoder(cfg, train_set, enc_kwargs)  # --encoder_path, checked
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg.encoder, cfg.z_dim, **enc_kwargs)
    check_input_size(encoder, train_set.shape, f"{train_set.source} (--encoder {cfg.encoder})")
    cfg.validate_for(train_set.images, train_set.source)
    run = RunDir.open(cfg.out, "cont_rep", cfg.to_dict(), cfg.overwrite, cfg.resume)
    t0 = time.perf_counter()

    # normalisation statistics: training split only (a 10k subset is plenty for 3 numbers)
    fit_idx = np.random.default_rng(cfg.seed).permutation(len(train_set))[:10000]
    std_ = Standardizer().fit(to_float(train_set.images[np.sort(fit_idx)]))
    mean, std = as_mean_std(std_.mean_, std_.std_)
    mean_t, std_t = torch.from_numpy(mean).to(device), torch.from_numpy(std).to(device)

    if init_enc is not None:
        encoder.load_state_dict(init_enc.state_dict())
    elif hasattr(encoder, "init_whitening"):  # airbench: whitened 2x2 patch stem
        sub = torch.from_numpy(train_set.images[np.sort(fit_idx)[:2000]])
        x0 = to_input(sub, torch.from_numpy(mean), torch.from_numpy(std), channels_last=False)
        encoder.init_whitening(x0)

    summary_txt = encoder_summary(encoder, (1, train_set.shape[2], *train_set.shape[:2]))
    print(summary_txt)
    write_text(run.file("model_summary.txt"), summary_txt + "\n")

    # ---- data on the device: uint8 NHWC, normalised/augmented per batch ---------------------
    x_train = torch.from_numpy(train_set.images).to(device)
    y_train = torch.from_numpy(train_set.labels).to(device)
    y_train_np = train_set.labels
    n_train = len(x_train)
    loss_fn = TripletMarginLoss(cfg.margin, cfg.distance, normalize=cfg.normalize)

    def sample(it: int, rng: StepRNG) -> dict[str, Any]:
        idx = torch.randperm(n_train, generator=rng.torch)[: cfg.batch_size]
        x = to_input(x_train[idx.to(device)], mean_t, std_t)
        if cfg.augment:
            x = random_crop_flip(x, pad=cfg.translate, generator=rng.torch)
        batch = {"x": x, "y": y_train[idx.to(device)]}
        if cfg.mining == "random":
            batch["triplets"] = random_triplets(y_train_np[idx.numpy()], rng.numpy, device)
        return batch

    amp_type = device.type if device.type in ("cpu", "cuda") else "cpu"

    def triplet_loss(emb: torch.Tensor, y: torch.Tensor, triplets: Any = None) -> torch.Tensor:
        if cfg.mining == "random":  # the report's sampler: fixed (a, p, n) per anchor
            a, p, n = triplets
            return loss_fn(emb[a], emb[p], emb[n])
        # mined: triplets.batch_triplet_loss reads the (N, N) distance matrix in float32
        # instead of gathering (T, z_dim) copies (batch-all over ~1e6 triplets stays cheap)
        with torch.autocast(amp_type, enabled=False):
            loss, _ = batch_triplet_loss(
                emb, y, cfg.mining, cfg.margin, cfg.distance, normalize=cfg.normalize
            )
            return loss

    def step(batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return triplet_loss(encoder(batch["x"]).float(), batch["y"], batch.get("triplets")), {}

    # fixed evaluation subsets (kNN during training; a fixed validation batch for val_loss)
    rng_eval = np.random.default_rng([cfg.seed, 7])
    ref_idx = np.sort(rng_eval.permutation(len(train_set))[: cfg.knn_eval_size])
    q_idx = np.sort(rng_eval.permutation(len(val_set))[: cfg.knn_eval_size])
    vb_idx = np.sort(rng_eval.permutation(len(val_set))[: min(cfg.batch_size, len(val_set))])
    vb_y = val_set.labels[vb_idx]
    try:
        val_triplets = sample_triplets(vb_y, np.random.default_rng([cfg.seed, 8]), True)
    except ReprlabError:  # no triplet exists in this batch: no val_loss
        val_triplets = None

    def embed_(
        images: np.ndarray,
        desc: str,
        flip: bool | None = None,
        shifts: bool = False,
        progress: bool = False,
    ) -> np.ndarray:
        return embed(
            encoder,
            images,
            mean,
            std,
            batch_size=cfg.embed_batch_size,
            device=device,
            autocast=cfg.autocast,
            flip_tta=cfg.flip_tta if flip is None else flip,
            progress=progress,
            desc=desc,
            translate_tta=shifts,
        )

    def evaluate(it: int) -> dict[str, float]:
        """kNN accuracy and val loss on fixed subsets, without the mirror (half the cost)."""
        out: dict[str, float] = {}
        ref = embed_(train_set.images[ref_idx], "embed train", flip=False)
        q = embed_(val_set.images[q_idx], "embed val", flip=False)
        out["knn_acc"] = knn_accuracy(
            ref, train_set.labels[ref_idx], q, val_set.labels[q_idx], k=cfg.knn_k
        )
        out["val_acc"] = out["knn_acc"]  # drawn by plot_curves as accuracy.png
        if val_triplets is not None:  # the training loss (same mining) on a fixed val batch
            e = torch.from_numpy(embed_(val_set.images[vb_idx], "embed val batch", flip=False))
            trip = tuple(torch.from_numpy(v) for v in val_triplets)
            out["val_loss"] = float(triplet_loss(e, torch.from_numpy(vb_y), trip))
        return out

    tcfg = TrainConfig.from_mode(cfg, device, desc="cont_rep")
    # the passes after training, in evaluations (an evaluation embeds the kNN subsets and the
    # val batch once, unmirrored): the training set with TTA mirrors, validation and test
    # images with every TTA view (the t-SNE map and the kNN votes are not counted)
    after = tta_views(cfg.flip_tta, False) * len(train_set) + tta_views(
        cfg.flip_tta, cfg.translate_tta
    ) * (len(val_set) + (len(test_set) if test_set is not None else 0))
    per_eval = len(ref_idx) + len(q_idx) + (len(vb_idx) if val_triplets is not None else 0)
    meta = {
        "mode": "cont_rep",
        "encoder": cfg.encoder,
        "z_dim": cfg.z_dim,
        "kwargs": enc_kwargs,
    }
    base = {
        "mode": "cont_rep",
        "encoder": cfg.encoder,
        "z_dim": cfg.z_dim,
        "parameters": count_parameters(encoder),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "batch_size": cfg.batch_size,
        "mining": cfg.mining,
        "device": str(device),
    }
    try:
        res = train(
            encoder,
            sample,
            step,
            tcfg,
            params=param_groups(encoder, cfg.weight_decay, norm_lr_scale=cfg.norm_lr_scale),
            evaluate=evaluate,
            run_dir=run.path,
            resume=cfg.resume,
            meta=meta,
            deadline=deadline,
            after_evals=after / per_eval,
        )
    except TrainingFailed as e:
        record_failure(run, base, e, t0, lambda rows: _plots(rows, run))
        raise

    # ---- final evaluation on the whole splits -----------------------------------------------
    encoder.eval()
    save_encoder(
        run.file("encoder.pt"),
        encoder,
        cfg.encoder,
        cfg.z_dim,
        enc_kwargs,
        mean,
        std,
        train_set.classes,
        train_set.shape,
    )
    # the final passes (minutes on a CPU) show their progress, unlike the evaluations' in training
    train_emb = embed_(train_set.images, "embed train", progress=cfg.progress)
    val_emb = embed_(val_set.images, "embed val", shifts=cfg.translate_tta, progress=cfg.progress)
    # the kNN vote as a classifier of the validation images, like every classifier mode's
    knn_report = report_with_confusion(
        val_set.labels,
        knn_predict(train_emb, train_set.labels, val_emb, k=cfg.knn_k),
        train_set.classes,
        run.file("confusion.png"),
        title=f"cont_rep kNN@{cfg.knn_k} — validation",
    )
    knn = knn_report["accuracy"]
    save_npy(run.file("val_embeddings.npy"), val_emb)
    save_npy(run.file("val_labels.npy"), val_set.labels.astype(np.int64))
    # the kNN classifier's reference set: `reprlab predict` votes with it (KNNPredictor)
    save_npy(run.file("train_embeddings.npy"), train_emb)
    save_npy(run.file("train_labels.npy"), train_set.labels.astype(np.int64))
    test_summary: dict[str, Any] = {}
    if test_set is not None:
        test_emb = embed_(
            test_set.images, "embed test", shifts=cfg.translate_tta, progress=cfg.progress
        )
        save_npy(run.file("test_embeddings.npy"), test_emb)
        # a kNN classifier on the training embeddings labels the test images (leaderboard file)
        test_pred = knn_predict(train_emb, train_set.labels, test_emb, k=cfg.knn_k)
        test_summary = write_test_predictions(
            run.file("predictions.csv"), test_pred.astype(np.int64), test_set, train_set.classes
        )
    # how each saved array was computed and its file's hash (embed.embedding_record):
    # fine_tune_linear on this encoder reads them instead of embedding the same images again
    enc_hash = file_digest(run.file("encoder.pt"))

    def digest(name: str, images: np.ndarray, shifts: bool) -> dict[str, str]:
        return embedding_record(
            cfg, enc_hash, run.file(name), images, translate_tta=shifts, device=device
        )

    digests = {
        "train_embeddings.npy": digest("train_embeddings.npy", train_set.images, False),
        "val_embeddings.npy": digest("val_embeddings.npy", val_set.images, cfg.translate_tta),
    }
    if test_set is not None:
        digests["test_embeddings.npy"] = digest(
            "test_embeddings.npy", test_set.images, cfg.translate_tta
        )
    _plots(res.rows, run)
    if cfg.tsne:
        _plot_tsne(cfg, val_emb, val_set, knn, run.file("tsne.png"))
    losses = [r["train_loss"] for r in res.rows]
    summary = {
        **base,
        "status": res.status,
        "stop_reason": res.stop_reason,
        "iterations": res.iterations,
        "final_train_loss": res.final_loss,
        "best_train_loss": min(losses) if losses else None,
        "best_iter": res.best_iter,
        "early_stop_metric": cfg.early_stop_metric,
        "best_metric": res.best,
        "returned_weights": res.weights,
        "best_val_loss": min((r["val_loss"] for r in res.rows if "val_loss" in r), default=None),
        "final_val_loss": next(
            (r["val_loss"] for r in reversed(res.rows) if "val_loss" in r), None
        ),
        "knn_acc": knn,
        "knn_k": cfg.knn_k,
        "classification_report": knn_report,
        "embedding_digests": digests,
        **test_summary,
        **res.run_facts(),
        # this session's, plus the training seconds of the sessions before a resume
        "wall_time_s": time.perf_counter() - t0 + res.earlier_s,
    }
    run.write_summary(summary)
    print(_result_line(summary, run.path))
    return summary


def _starting_encoder(
    cfg: ContRepConfig, train_set: ImageSet, enc_kwargs: dict[str, Any]
) -> torch.nn.Module | None:
    """The encoder of ``--encoder_path`` to start from (None without one), refused unless it
    is the architecture, ``z_dim``, head and channel count this run builds."""
    if cfg.encoder_path is None:
        return None
    init_enc, init_meta = load_encoder(cfg.encoder_path)
    if init_meta["encoder"] != cfg.encoder or int(init_meta["z_dim"]) != cfg.z_dim:
        raise ReprlabError(
            f"{cfg.encoder_path}: holds a {init_meta['encoder']} encoder with "
            f"z_dim={init_meta['z_dim']}, but --encoder {cfg.encoder} --z_dim {cfg.z_dim} "
            "were asked for"
        )
    channels = int((init_meta.get("image_shape") or [0, 0, 3])[2])
    if channels != train_set.shape[2]:
        raise ReprlabError(
            f"{cfg.encoder_path}: the encoder was trained on {channels}-channel images, but "
            f"those of {train_set.source} have {train_set.shape[2]}"
        )
    if dict(init_meta.get("kwargs") or {}) != enc_kwargs:
        raise ReprlabError(
            f"{cfg.encoder_path}: the encoder was built with {init_meta.get('kwargs')}, "
            f"but this run asks for {enc_kwargs} (--head)"
        )
    return init_enc


def _plot_tsne(
    cfg: ContRepConfig, val_emb: np.ndarray, val_set: ImageSet, knn: float, path: Path
) -> None:
    """``tsne.png``: the report's Figure 5, of at most ``--tsne_max`` validation embeddings."""
    sel = np.arange(len(val_emb))
    if len(sel) > cfg.tsne_max:
        sel = np.sort(np.random.default_rng(cfg.seed).permutation(len(sel))[: cfg.tsne_max])
    if cfg.progress:
        print(f"cont_rep: t-SNE of {len(sel)} validation embeddings ...", file=sys.stderr)
    xy = tsne_2d(val_emb[sel], seed=cfg.seed)
    plot_embedding_2d(
        xy,
        val_set.labels[sel],
        val_set.classes,
        path,
        title=f"t-SNE of validation embeddings ({cfg.encoder}, z={cfg.z_dim}, "
        f"kNN acc {knn:.3f})",
    )


def _result_line(s: dict[str, Any], path: Path) -> str:
    loss = "n/a" if s.get("final_train_loss") is None else f"{s['final_train_loss']:.4f}"
    return (
        f"cont_rep: {s['iterations']} iterations ({stop_text(s)}), final loss {loss}, "
        f"kNN@{s.get('knn_k', '?')} val accuracy {s['knn_acc']:.4f}{score_text(s)} -> {path}"
    )


def _plots(rows: list[dict[str, Any]], run: RunDir) -> None:
    if not rows:
        return
    plot_curves(rows, run.path, title="cont_rep")
    if any("knn_acc" in r for r in rows):
        plot_overlay(
            {"validation kNN": rows},
            "knn_acc",
            run.file("knn.png"),
            title="cont_rep — kNN accuracy (validation)",
        )


__all__ = ["ContRepConfig", "load_encoder", "run_cont_rep", "save_encoder"]
