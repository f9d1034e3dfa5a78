"""Classification metrics shared by every mode."""

from __future__ import annotations

from typing import Any

import numpy as np


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
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
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
