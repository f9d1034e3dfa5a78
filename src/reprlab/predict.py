"""``reprlab predict RUN_DIR --data IMAGES``: labels from a finished classifier run's folder.

    reprlab predict runs/ftnn --data cifar10_test_images.npz --out predictions.csv

Works for every mode that labels images (``logistic``, ``softmax``, ``cont_rep``,
``fine_tune_linear``, ``fine_tune_nn``): the run folder's ``config.json`` names the mode, its
model file (``model.npz`` or ``model.pt``, plus the copied ``encoder.pt`` of
``fine_tune_linear``; ``encoder.pt`` and the training embeddings of ``cont_rep``, whose kNN vote
labels the images) holds everything the prediction needs. Output: one integer label per line,
row i for image i (the report's leaderboard format), in the training set's class numbering. An
existing output file is kept unless ``--overwrite``. ``--tta`` overrides the run's test-time
averaging of the neural modes (``none``: one pass per image instead of up to six).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reprlab.errors import ReprlabError
from reprlab.io import (
    check_output_file,
    read_json,
    write_named_predictions,
    write_predictions,
)
from reprlab.metrics import score_test_set, score_text

if TYPE_CHECKING:
    from reprlab.data import ImageSet

LINEAR_MODES = ("logistic", "softmax")  # NumPy models: no batches, devices or averaging
CLASSIFIER_MODES = (*LINEAR_MODES, "cont_rep", "fine_tune_linear", "fine_tune_nn")
TTA_CHOICES = ("run", "flip", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder of a finished run of any mode")
    parser.add_argument(
        "--data",
        required=True,
        help="images to label: .npz (key images), image folder or tar, CIFAR python batches, "
        "or one image file (.png, .jpg, .bmp, .gif, .webp, .tif)",
    )
    parser.add_argument(
        "--out", default="predictions.csv", help="output file (default: predictions.csv)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the output file if it exists"
    )
    parser.add_argument(
        "--names",
        action="store_true",
        help="write file,label,class rows under a header instead of one label per line "
        "(image folders, archives and image files, whose files have names)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show a progress bar (neural models; default: on)",
    )
    parser.add_argument(
        "--batch_size",
        "--batch-size",
        type=int,
        default=512,
        help="images per forward pass (neural models; default: 512)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (cuda, mps, cpu) | cpu | cuda | cuda:N | mps (default: auto)",
    )
    parser.add_argument(
        "--resize",
        action="store_true",
        help="resize images of another size to the model's training size (bicubic; the aspect "
        "ratio is not kept), e.g. a photo for a CIFAR-10 model; a folder's photos may differ "
        "in size",
    )
    parser.add_argument(
        "--tta",
        choices=TTA_CHOICES,
        default="run",
        help="test-time averaging of the neural modes: run = as the run did (reproduces its "
        "predictions.csv); flip = the image and its mirror; none = the image alone, fastest "
        "(linear modes have none; default: run)",
    )


def load_predictor(run_dir: str | Path, tta: str = "run") -> tuple[str, Any]:
    """``(mode, predictor)`` of a finished classifier run; ``predictor.predict(images)``
    returns labels and checks the images' shape against the training images'. ``tta``
    (:data:`TTA_CHOICES`) replaces a neural run's test-time averaging unless ``run``."""
    if tta not in TTA_CHOICES:
        raise ReprlabError(f"--tta must be one of {', '.join(TTA_CHOICES)}, got {tta!r}")
    mode, predictor = _load(run_dir)
    if tta != "run" and mode not in LINEAR_MODES:
        predictor.flip_tta, predictor.translate_tta = tta == "flip", False
    return mode, predictor


def _load(run_dir: str | Path) -> tuple[str, Any]:
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise ReprlabError(f"{run_dir}: a file, not a run folder (give a finished run's folder)")
    if not run_dir.is_dir():
        raise ReprlabError(f"{run_dir}: run folder not found")
    cfg_file = run_dir / "config.json"
    if not cfg_file.is_file():
        stages = sorted(sub.name for sub in run_dir.iterdir() if (sub / "config.json").is_file())
        if stages:  # a pipeline or sweep folder
            raise ReprlabError(
                f"{run_dir}: holds several runs; predict with one of them: "
                + ", ".join(str(run_dir / s) for s in stages)
            )
        raise ReprlabError(f"{run_dir}: not a reprlab run folder (no config.json)")
    config = read_json(cfg_file)
    mode = config.get("mode") if isinstance(config, dict) else None
    if mode is None:
        raise ReprlabError(f"{cfg_file}: not a reprlab run's config.json (no mode)")
    if mode not in CLASSIFIER_MODES:
        raise ReprlabError(
            f"{run_dir}: a {mode} run has no classifier to predict with "
            f"(use a run of {', '.join(CLASSIFIER_MODES)})"
        )
    if mode in LINEAR_MODES:
        from reprlab.linear_modes import load_linear_model

        model_file = run_dir / "model.npz"
        if not model_file.is_file():
            raise ReprlabError(f"{model_file}: model file not found (is the run finished?)")
        return mode, load_linear_model(model_file)
    if mode == "cont_rep":
        from reprlab.contrastive import load_knn_classifier

        return mode, load_knn_classifier(run_dir)
    from reprlab.finetune import load_classifier, load_fine_tune_linear

    if mode == "fine_tune_linear":
        return mode, load_fine_tune_linear(run_dir)
    return mode, load_classifier(run_dir)


def predict_labels(
    run_dir: str | Path,
    images_path: str | Path,
    batch_size: int = 512,
    device: str = "auto",
    progress: bool = True,
    tta: str = "run",
    resize: bool = False,
    names: bool = False,
) -> tuple[np.ndarray, list[str], np.ndarray, ImageSet]:
    """Labels of the images in ``images_path`` by the model of ``run_dir`` (``tta``: see
    :func:`load_predictor`; ``resize``: images of another height and width are resized to the
    model's), the class names they index, each class's label in the training set's numbering
    (what the predictions file holds: ``logistic --classes cat,dog`` writes 3 and 5), and the
    images (with their own labels when the source has them)."""
    from reprlab.data import check_image_shape, load_images, resize_images

    mode, predictor = load_predictor(run_dir, tta)
    shape = tuple(predictor.image_shape)
    # image files are resized one by one as they are decoded, so photos of any sizes mix
    ds = load_images(images_path, split="test", size=shape[:2] if resize else None)
    if names and ds.names is None:  # before any prediction is computed
        raise ReprlabError(f"{ds.source}: --names: its images have no file names (an .npz or "
                           "CIFAR batches)")  # fmt: skip
    rgb = ds.images[..., :3]
    if shape[2] == 1 and ds.images.shape[3] == 3 and (rgb == rgb[..., :1]).all():
        ds.images = ds.images[..., :1]  # grayscale files are decoded as RGB: their one channel
    if resize and ds.images.shape[1:3] != shape[:2] and ds.images.shape[3] == shape[2]:
        ds.images = resize_images(ds.images, *shape[:2])
    hint = " (--resize resizes them)" if not resize and ds.images.shape[3] == shape[2] else ""
    check_image_shape(ds.images, shape, ds.source, f"the model of {run_dir}", hint)
    if mode in LINEAR_MODES:
        labels = predictor.predict_model_labels(ds.images)
        return labels, predictor.classes, predictor.class_ids, ds
    labels = predictor.predict(
        ds.images, batch_size=batch_size, device=device, progress=progress, where=ds.source
    )
    return labels, predictor.classes, np.arange(len(predictor.classes)), ds


def _check_not_an_input(out: Path, run_dir: Path, data: str | None) -> None:
    """Refuse an ``--out`` that would replace what the prediction reads, ``--overwrite`` or
    not: the ``--data`` file, or a file of the run folder (its model, its own record)."""
    where = out.resolve()
    if run_dir.resolve() in where.parents:
        raise ReprlabError(
            f"--out {out}: is inside the run folder {run_dir}, whose files are the run's model "
            "and record (choose another --out)"
        )
    if data is not None and Path(data).expanduser().resolve() == where:
        raise ReprlabError(f"--out {out}: is the --data file itself (choose another --out)")


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if str(args.out).endswith(("/", os.sep)):
        raise ReprlabError(f"--out {args.out}: names a folder (--out needs a file name)")
    check_output_file(out, args.overwrite)
    _check_not_an_input(out, Path(args.run_dir), args.data)
    if args.batch_size <= 0:
        raise ReprlabError(f"--batch_size must be > 0, got {args.batch_size}")
    labels, classes, ids, ds = predict_labels(
        args.run_dir,
        args.data,
        batch_size=args.batch_size,
        device=args.device,
        progress=args.progress,
        tta=args.tta,
        resize=args.resize,
        names=args.names,
    )
    if args.names:
        assert ds.names is not None  # checked by predict_labels
        write_named_predictions(out, ds.names, ids[labels], [classes[i] for i in labels])
    else:
        write_predictions(out, ids[labels])
    if len(labels) == 1:  # one image (an image file): say what it is
        print(f"predict: {ds.source}: {ids[labels[0]]} {classes[labels[0]]} -> {out}")
    else:
        counts = np.bincount(labels, minlength=len(classes)).tolist()
        per_class = ", ".join(f"{ids[i]} {name}: {counts[i]}" for i, name in enumerate(classes))
        print(f"predict: {len(labels)} labels -> {out} ({per_class})")
    scores = score_test_set(labels, ds.labels, ds.classes, classes, ids)
    if scores:  # the images carry labels: how good the predictions are
        print(f"predict: {ds.source} is labelled{score_text(scores) or ': ' + scores['test_note']}")
    return 0
