"""Classification metrics shared by every mode."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from reprlab.data import ImageSet


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes; sums to ``len(y_true)``."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro averages and the confusion matrix."""
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(cm[i].sum()),
        }
        for i, name in enumerate(class_names)
    }
    # macro averages over the classes that occur, as scikit-learn's: a test set without some
    # class is not marked down for it
    seen = (cm.sum(0) + cm.sum(1)) > 0

    def macro(v: np.ndarray) -> float:
        return float(v[seen].mean()) if seen.any() else 0.0

    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_precision": macro(precision),
        "macro_recall": macro(recall),
        "macro_f1": macro(f1),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }


def report_with_confusion(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: list[str],
    png_path: Any,
    title: str = "",
) -> dict[str, Any]:
    """The one evaluation path of every classifier mode: :func:`classification_report` of
    ``(y_true, y_pred)`` plus the confusion matrix drawn with class names to ``png_path``
    (``confusion.png``). Returns the report (store it in ``summary.json``)."""
    from reprlab.plots import plot_confusion  # matplotlib only when a figure is drawn

    report = classification_report(y_true, y_pred, class_names)
    plot_confusion(np.array(report["confusion_matrix"]), class_names, png_path, title=title)
    return report


def score_test_set(
    y_pred: np.ndarray,
    test_labels: np.ndarray | None,
    test_classes: list[str],
    classes: list[str],
    class_ids: np.ndarray | None = None,
) -> dict[str, Any]:
    """Scores of a run's test predictions when the test images carry labels (CIFAR-10's official
    ``test_batch``, a labelled ``.npz`` or image folder); ``{}`` when they do not.

    ``y_pred`` index the run's ``classes``; test labels index ``test_classes`` and are matched
    to them by name, so a logistic run (two classes) is scored on the test images of its two
    classes. When no name is shared and the test classes are bare labels, they are matched by
    label, and ``test_matched_by`` says so: a digit name (an ``.npz`` of integer labels, a
    folder ``3/``) is the run's class of that label (``class_ids``: the run's classes' labels
    in its training data, ``logistic``'s pair; default 0..K-1), and CIFAR-10's names given to
    labels 0..9 are the run's classes 0..9; names that mean something (an image folder's
    ``mixed/``, a set of other classes) are never matched by label: not scored.
    Returns ``test_acc``, ``test_n`` (images scored), ``test_matched_by`` and
    ``test_classification_report``.
    """
    from reprlab.data import CIFAR10_CLASSES

    if test_labels is None or len(test_labels) == 0:
        return {}
    index = {name: i for i, name in enumerate(classes)}
    to_run = np.array([index.get(name, -1) for name in test_classes], dtype=np.int64)
    matched_by = "class name"
    # the names a loader gives bare integer labels: 0..9 are CIFAR-10's, others their digits
    def digits(names: list[str]) -> bool:
        return all(re.fullmatch(r"[0-9]+", n) for n in names)

    if (to_run < 0).all() and digits(test_classes):  # folder "3" is label 3, not the 1st one
        ids = (
            np.asarray(class_ids) if class_ids is not None
            else np.array([int(c) for c in classes]) if digits(classes)  # a run on folders 10, 11
            else np.arange(len(classes))
        )  # fmt: skip
        by_id = {int(v): i for i, v in enumerate(ids)}
        to_run = np.array([by_id.get(int(n), -1) for n in test_classes], dtype=np.int64)
        matched_by = "label index (no class name in common)"
    elif (to_run < 0).all() and list(test_classes) == list(CIFAR10_CLASSES) and len(classes) >= 10:
        # an .npz's labels 0..9 without names are given CIFAR-10's: label i is the run's class i
        to_run, matched_by = np.arange(10), "label index (no class name in common)"
    y_true = to_run[np.asarray(test_labels, dtype=np.int64)]
    keep = y_true >= 0
    if not keep.any():
        return {"test_note": "the test labels name none of the run's classes: not scored"}
    report = classification_report(y_true[keep], np.asarray(y_pred)[keep], list(classes))
    return {
        "test_acc": report["accuracy"],
        "test_n": int(keep.sum()),
        "test_matched_by": matched_by,
        "test_classification_report": report,
    }


def write_test_predictions(
    path: Path,
    labels: np.ndarray,
    test: ImageSet,
    classes: list[str],
    class_ids: np.ndarray | None = None,
) -> dict[str, Any]:
    """The one path of every mode's predictions for the ``test`` images: ``predictions.csv`` at
    ``path`` (one label per line), and for ``summary.json`` their count plus
    :func:`score_test_set`. ``labels`` index ``classes``; the file holds ``class_ids[labels]``
    when given (``logistic`` writes its pair's indices in the training set's numbering)."""
    from reprlab.io import write_predictions

    write_predictions(path, labels if class_ids is None else np.asarray(class_ids)[labels])
    return {
        "n_test_predictions": len(labels),
        **score_test_set(labels, test.labels, test.classes, classes, class_ids),
    }


_HISTORY_KEYS = ("val_loss", "val_acc", "train_loss", "train_acc")


def history_summary(rows: list[dict[str, Any]], best_iter: int | None,
                    best_rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``best_*`` metrics (the row of ``best_iter`` in ``best_rows``, else its last row) and
    ``final_*`` metrics (the last row of ``rows``) of a training history, for ``summary.json``."""
    best_rows = rows if best_rows is None else best_rows
    last = best_rows[-1] if best_rows else {}
    best = next((r for r in best_rows if r["iter"] == best_iter), last)
    final = rows[-1] if rows else {}
    out: dict[str, Any] = {"best_iter": best_iter}
    out.update({f"best_{k}": best.get(k) for k in _HISTORY_KEYS})
    out["final_iter"] = final.get("iter")
    out.update({f"final_{k}": final.get(k) for k in _HISTORY_KEYS})
    return out


def score_text(s: dict[str, Any]) -> str:
    """``", test_acc 0.8712 (10000 images)"`` when the summary ``s`` holds test scores."""
    if "test_acc" not in s:
        return ""
    how = "" if s.get("test_matched_by", "class name") == "class name" else ", matched by index"
    return f", test_acc {s['test_acc']:.4f} ({s['test_n']} images{how})"


def stop_text(s: dict[str, Any]) -> str:
    """Why a run stopped, as its result line says it: ``"num_iters set by --time_budget 30 s"``
    when a time budget chose the count it reached."""
    budget = (s.get("time_budget") or {}).get("budget_s")
    if s.get("stop_reason") == "num_iters" and budget:
        return f"num_iters set by --time_budget {budget:g} s"
    return str(s.get("stop_reason"))


def result_line(mode: str, s: dict[str, Any], path: Path) -> str:
    """The one-line result a classifier mode prints at the end of a run."""
    return (
        f"{mode}: val_acc {s['val_acc']:.4f} val_loss {s['val_loss']:.4f} "
        f"(best at iter {s['best_iter']}/{s['iterations']}, {stop_text(s)}){score_text(s)} "
        f"in {s['wall_time_s']:.1f}s -> {path}"
    )
