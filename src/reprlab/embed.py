"""Embeddings of a trained encoder, kNN accuracy on them, and 2-D t-SNE maps.

* :func:`to_input`: uint8 NHWC batch -> normalised float NCHW (channels_last) tensor; the one
  place images are normalised for every neural mode.
* :func:`embed`: batched, no-grad, eval-mode embeddings (optionally averaged with the mirrored
  image, ``flip_tta``, and with 1-pixel shifts, ``translate_tta``: :func:`multi_crop`).
* :func:`embedding_digest`, :func:`embedding_record`: name one embedding computation (encoder,
  images, settings) and the file it was saved to, so ``fine_tune_linear`` can reuse the arrays
  its ``cont_rep`` run saved instead of recomputing them.
* :func:`knn_accuracy`: k-nearest-neighbour classification accuracy (cosine or Euclidean),
  chunked matrix products, so 40k x 10k takes well under a second.
* :func:`tsne_2d`: openTSNE (FFT-accelerated) -- measured faster than scikit-learn's
  Barnes-Hut t-SNE at equal trustworthiness, see ``benchmarks/bench_tsne.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from reprlab.augment import translate
from reprlab.io import file_digest
from reprlab.train import autocast_ctx, pick_device, uses_bf16

View = TypeVar("View", np.ndarray, torch.Tensor)


def as_mean_std(mean: np.ndarray | list[float], std: np.ndarray | list[float]) -> tuple:
    """Per-channel mean/std as float32 arrays on the [0, 1] pixel scale.

    Accepts statistics on the 0..255 scale too (any value > 1.5 means 0..255) and rescales.
    """
    m = np.asarray(mean, dtype=np.float64).reshape(-1)
    s = np.asarray(std, dtype=np.float64).reshape(-1)
    if m.max(initial=0.0) > 1.5 or s.max(initial=0.0) > 1.5:
        m, s = m / 255.0, s / 255.0
    return m.astype(np.float32), s.astype(np.float32)


def to_input(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = True
) -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` -> float32 ``(N, C, H, W)``: ``(x/255 - mean) / std``.

    ``mean``/``std`` are ``(C,)`` tensors on the [0, 1] scale, on ``x``'s device. The NHWC
    buffer is already the channels_last layout, so the permute costs no copy.
    """
    y = x.permute(0, 3, 1, 2).float().div_(255.0)
    y = y.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    if channels_last:
        return y.contiguous(memory_format=torch.channels_last)
    return y.contiguous()


def tta_views(flip_tta: bool, translate_tta: bool) -> int:
    """Forward passes per image of :func:`embed` (and a classifier's averaging) with these
    settings: the mirror doubles them, the two 1-pixel shifts (:func:`multi_crop`) triple them."""
    return (2 if flip_tta else 1) * (3 if translate_tta else 1)


def multi_crop(
    view_at: Callable[[tuple[int, int]], View],
    translate_tta: bool,
    centre: View | None = None,
) -> View:
    """airbench94's multi-crop TTA: with ``translate_tta``, 1/2 the unshifted view plus 1/4
    each of the image shifted one pixel up-left and down-right; else the unshifted view.
    ``view_at(shift)`` gives the view (probabilities, embeddings) at a shift (dx, dy);
    ``centre``, the unshifted one when it is already computed."""
    v = view_at((0, 0)) if centre is None else centre
    if not translate_tta:
        return v
    return 0.5 * v + 0.25 * (view_at((-1, -1)) + view_at((1, 1)))


@torch.no_grad()
def embed(
    encoder: torch.nn.Module,
    images: np.ndarray | torch.Tensor,
    mean: np.ndarray | list[float],
    std: np.ndarray | list[float],
    batch_size: int = 512,
    device: str | torch.device = "auto",
    autocast: bool = True,
    flip_tta: bool = False,
    progress: bool = True,
    desc: str = "embed",
    translate_tta: bool = False,
    shift: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Embeddings ``(N, z_dim)`` float32 of uint8 NHWC ``images`` (eval mode, no grad): the
    outputs of ``encoder``, whatever it computes (a classifier's probabilities too).

    Each image is processed independently of its batch-mates (eval-mode BatchNorm), so the
    result does not depend on ``batch_size`` beyond float rounding of the kernels chosen.
    ``flip_tta`` averages the embeddings of the image and its mirror; ``translate_tta`` averages
    those of 1-pixel shifts too (:func:`multi_crop`); ``shift`` = (dx, dy) translates every
    image first (:func:`reprlab.augment.translate`). The encoder is moved to ``device`` (it
    stays there); its train/eval mode is restored afterwards.
    """
    dev = device if isinstance(device, torch.device) else pick_device(device)
    encoder.to(dev)  # a freshly loaded encoder is on the CPU (seen on CUDA: a dtype error)
    m, s = as_mean_std(mean, std)
    mean_t, std_t = torch.from_numpy(m).to(dev), torch.from_numpy(s).to(dev)
    x_all = torch.as_tensor(
        np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images
    )
    if x_all.dtype != torch.uint8 or x_all.ndim != 4:
        raise ValueError(
            f"embed expects uint8 (N, H, W, C) images, got {x_all.dtype} {tuple(x_all.shape)}"
        )
    views = tta_views(flip_tta, translate_tta)
    desc = f"{desc} ({views} views)" if views > 1 else desc
    if shift != (0, 0):
        desc += f" shifted {shift[0]:+d},{shift[1]:+d}"
    was_training = encoder.training
    encoder.eval()
    bf16 = uses_bf16(dev, autocast)
    n = len(x_all)
    out: np.ndarray | None = None

    def view(xb: torch.Tensor, at: tuple[int, int]) -> torch.Tensor:
        v = translate(xb, at[0] + shift[0], at[1] + shift[1])
        with autocast_ctx(dev, bf16):
            z = encoder(v).float()
            return 0.5 * (z + encoder(v.flip(3)).float()) if flip_tta else z

    try:
        for i in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
            xb = to_input(x_all[i : i + batch_size].to(dev), mean_t, std_t)
            zb = multi_crop(lambda s, xb=xb: view(xb, s), translate_tta).cpu().numpy()
            if out is None:
                out = np.empty((n, zb.shape[1]), dtype=np.float32)
            out[i : i + len(zb)] = zb
    finally:
        encoder.train(was_training)
    if out is None:
        raise ValueError("embed: no images")
    return out


def embedding_digest(
    encoder_hash: str,
    images: np.ndarray,
    *,
    flip_tta: bool,
    translate_tta: bool,
    batch_size: int,
    device: torch.device,
    autocast: bool,
) -> str:
    """A name for ``embed(encoder, images, ...)`` where the encoder file's bytes hash to
    ``encoder_hash`` (:func:`reprlab.io.file_digest`): equal digests, equal arrays.

    It covers the encoder, the images' bytes and every setting that can change a float:
    test-time averaging, batch size, device, precision, torch version and threads.
    """
    h = hashlib.blake2b(digest_size=20)
    settings = {
        "encoder": encoder_hash,
        "shape": list(images.shape),
        "dtype": str(images.dtype),
        "flip_tta": flip_tta,
        "translate_tta": translate_tta,
        "batch_size": batch_size,
        "device": str(device),
        "bf16": uses_bf16(device, autocast),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(memoryview(np.ascontiguousarray(images)).cast("B"))
    return h.hexdigest()


def embedding_record(
    cfg: Any,
    encoder_hash: str,
    array_file: str | Path,
    images: np.ndarray,
    *,
    translate_tta: bool,
    device: torch.device,
) -> dict[str, str]:
    """What ``cont_rep`` records of an embedding array it saved, and what ``fine_tune_linear``
    recomputes to read that file instead of embedding again: how the array was computed
    (:func:`embedding_digest`, with the embedding settings of the run config ``cfg``,
    ``flip_tta``, ``embed_batch_size`` and ``autocast``, the same fields in both modes) and
    the file's hash as it is now."""
    computed_as = embedding_digest(
        encoder_hash,
        images,
        flip_tta=cfg.flip_tta,
        translate_tta=translate_tta,
        batch_size=cfg.embed_batch_size,
        device=device,
        autocast=cfg.autocast,
    )
    return {"computed_as": computed_as, "file": file_digest(array_file)}


def knn_accuracy(
    train_emb: np.ndarray,
    train_labels: np.ndarray,
    query_emb: np.ndarray,
    query_labels: np.ndarray,
    k: int = 20,
    metric: str = "cosine",
    chunk: int = 2048,
) -> float:
    """Accuracy of a k-nearest-neighbour vote of ``train_emb`` for each row of ``query_emb``.

    Vote: majority of the ``k`` nearest neighbours; ties go to the tied class with the highest
    summed similarity (cosine) / lowest summed squared distance (``metric="euclidean"``).
    Queries are processed in chunks (one matmul + top-k each), so memory stays
    ``chunk x N_train``.
    """
    preds = knn_predict(train_emb, train_labels, query_emb, k=k, metric=metric, chunk=chunk)
    return float(np.mean(preds == np.asarray(query_labels)))


def knn_predict(
    train_emb: np.ndarray,
    train_labels: np.ndarray,
    query_emb: np.ndarray,
    k: int = 20,
    metric: str = "cosine",
    chunk: int = 2048,
) -> np.ndarray:
    """Predicted labels of :func:`knn_accuracy`'s vote."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    xt = torch.as_tensor(np.asarray(train_emb, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(train_labels, dtype=np.int64))
    xq = torch.as_tensor(np.asarray(query_emb, dtype=np.float32))
    k = max(1, min(int(k), len(xt)))
    n_cls = int(yt.max()) + 1 if len(yt) else 1
    sq_t = None
    if metric == "cosine":
        xt = torch.nn.functional.normalize(xt, dim=1)
        xq = torch.nn.functional.normalize(xq, dim=1)
    else:  # distances do not move with the origin; centred, the Gram formula of _knn_chunk
        # keeps its float32 precision for embeddings far from 0
        centre = xt.mean(0) if len(xt) else 0.0
        xt, xq = xt - centre, xq - centre
        sq_t = (xt * xt).sum(1)
    preds = []
    with torch.autocast("cpu", enabled=False):  # exact float32 even inside a training loop
        for i in range(0, len(xq), chunk):
            preds.append(_knn_chunk(xq[i : i + chunk], xt, yt, sq_t, k, n_cls, metric))
    return torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)


def _knn_chunk(
    q: torch.Tensor,
    xt: torch.Tensor,
    yt: torch.Tensor,
    sq_t: torch.Tensor | None,
    k: int,
    n_cls: int,
    metric: str,
) -> torch.Tensor:
    """Majority vote of the k nearest rows of ``xt`` for each row of ``q``."""
    if metric == "cosine":
        sim = q @ xt.T  # higher is nearer
    else:
        assert sq_t is not None
        sim = -((q * q).sum(1, keepdim=True) - 2 * q @ xt.T + sq_t[None, :])
    top_sim, top_idx = sim.topk(k, dim=1)
    top_lab = yt[top_idx]
    votes = torch.zeros(len(q), n_cls).scatter_add_(1, top_lab, torch.ones_like(top_sim))
    # a tie between the most-voted classes goes to the higher summed similarity (exactly: the
    # result of a query does not depend on the others in its chunk)
    score = torch.zeros(len(q), n_cls).scatter_add_(1, top_lab, top_sim)
    tied = votes == votes.max(1, keepdim=True).values
    return score.masked_fill(~tied, float("-inf")).argmax(1)


def tsne_2d(
    emb: np.ndarray, seed: int = 0, n_jobs: int = 2, perplexity: float = 30.0
) -> np.ndarray:
    """2-D t-SNE of ``emb`` with openTSNE (FFT-interpolated gradients, PCA init).

    Chosen over ``sklearn.manifold.TSNE`` by ``benchmarks/bench_tsne.py`` (faster at equal
    trustworthiness on 10k x 64 embeddings).
    """
    from openTSNE import TSNE

    x = np.ascontiguousarray(emb, dtype=np.float32).astype(np.float64)
    perplexity = float(min(perplexity, max(2.0, (len(x) - 1) / 3.0)))
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        initialization="pca",
        metric="euclidean",
        n_jobs=n_jobs,
        random_state=seed,
        verbose=False,
    )
    return np.asarray(tsne.fit(x), dtype=np.float32)
