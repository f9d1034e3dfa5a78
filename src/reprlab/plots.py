"""Every figure reprlab draws (matplotlib, Agg backend, saved atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from reprlab.io import save_figure  # noqa: E402


def plot_curves(
    rows: list[dict[str, Any]], out_dir: str | Path, title: str = "", x: str = "iter"
) -> list[Path]:
    """``loss.png`` and ``accuracy.png``: train and validation against iterations.

    ``rows`` are metrics records (``metrics.jsonl``); keys ``train_loss``, ``val_loss``,
    ``train_acc``, ``val_acc`` are drawn where present. Returns the files written.
    """
    out_dir = Path(out_dir)
    written = []
    for metric, fname, label in (("loss", "loss.png", "loss"), ("acc", "accuracy.png", "accuracy")):
        series = {
            s: [(r[x], r[f"{s}_{metric}"]) for r in rows if r.get(f"{s}_{metric}") is not None]
            for s in ("train", "val")
        }
        if not any(series.values()):
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for s, pts in series.items():
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label="validation" if s == "val" else "train")
        ax.set_xlabel("iteration" if x == "iter" else x)
        ax.set_ylabel(label)
        ax.set_title(f"{title} — {label}" if title else label)
        ax.grid(alpha=0.3)
        ax.legend()
        save_figure(fig, out_dir / fname)
        written.append(out_dir / fname)
    return written


#: Classes up to which a confusion plot names its axes and writes each cell's count.
CONFUSION_LABELLED = 30


def plot_confusion(
    cm: np.ndarray, class_names: list[str], path: str | Path, title: str = ""
) -> None:
    """Confusion matrix with counts, rows = true class. Past ``CONFUSION_LABELLED`` classes the
    cells carry no numbers and the axes no names (both grew with k², minutes at 500 classes),
    and the figure stops growing: a heat map."""
    cm = np.asarray(cm)
    k = len(class_names)
    side = min(k, CONFUSION_LABELLED)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * side, 0.8 + 0.5 * side))
    ax.imshow(cm, cmap="Blues")
    if k > CONFUSION_LABELLED:
        ax.set_xlabel(f"predicted (classes 0..{k - 1})")
        ax.set_ylabel("true")
        ax.set_title(title or "confusion matrix")
        save_figure(fig, path)
        return
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    thresh = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if cm[i, j] > thresh else "black",
            )
    ax.set_title(title or "confusion matrix")
    save_figure(fig, path)


def plot_embedding_2d(
    xy: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    path: str | Path,
    title: str = "t-SNE",
) -> None:
    """Scatter of a 2-D embedding coloured by class, with a legend of class names."""
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=2, color=cmap(c % cmap.N), label=name, alpha=0.7)
    ax.legend(markerscale=5, fontsize=8, loc="best")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    save_figure(fig, path)


def plot_overlay(
    runs: dict[str, list[dict[str, Any]]],
    key: str,
    path: str | Path,
    title: str = "",
    x: str = "iter",
) -> None:
    """One curve per run for metric ``key`` (sweeps: the report's comparison figures)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in runs.items():
        pts = [(r[x], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, label=name)
    ax.set_xlabel("iteration" if x == "iter" else x)
    ax.set_ylabel(key)
    ax.set_title(title or key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)
