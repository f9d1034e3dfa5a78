"""Triplet sampling, mining and loss: small composable parts (pytorch-metric-learning style).

* :func:`sample_triplets`: the report's sampler (every image of the batch is an anchor; its
  positive is a random *other* image of its class, its negative a random image of another
  class), vectorised with NumPy; :func:`sample_triplets_reference` is the report's per-anchor
  ``np.where`` + ``np.random.choice`` loop, kept only for the benchmark.
* :func:`mine_triplets`: in-batch mining on embeddings: ``"all"`` (batch-all), ``"hard"``
  (batch-hard), ``"semihard"`` (FaceNet).
* :class:`TripletMarginLoss`: ``"l2"`` equals :class:`torch.nn.TripletMarginLoss` (p=2, eps=1e-6),
  ``"squared_l2"`` is the report's formula ``max(||a-p||^2 - ||a-n||^2 + margin, 0)``.
* :func:`batch_triplet_loss`: mine + loss for one batch of embeddings, the call a training loop
  makes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reprlab.errors import ReprlabError

MINERS = ("random", "all", "hard", "semihard")
DISTANCES = ("l2", "squared_l2")


def _check_labels(
    labels: np.ndarray, skip_lonely: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(class index per item, count per class)``; raises when a triplet cannot exist (with
    ``skip_lonely``, classes seen once are allowed while some class has two images)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ReprlabError(f"triplet labels must be 1-D, got shape {labels.shape}")
    if labels.size == 0:
        raise ReprlabError("triplet sampling needs a non-empty batch")
    if labels.dtype.kind in "iu" and labels.min() >= 0 and labels.max() < 4 * labels.size + 64:
        # fast path for small non-negative integer labels: bincount instead of a sort
        counts_all = np.bincount(labels)
        if counts_all.all():  # every class 0..K-1 occurs: the labels are their own indices
            inverse, counts, classes = labels, counts_all, np.arange(len(counts_all))
        else:
            present = counts_all > 0
            remap = np.cumsum(present) - 1
            inverse, counts, classes = remap[labels], counts_all[present], np.flatnonzero(present)
    else:
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
    if len(classes) < 2:
        raise ReprlabError(
            "triplet sampling needs at least two classes in a batch (no negative exists); "
            "use a larger --batch_size"
        )
    if counts.min() < 2 and not (skip_lonely and counts.max() >= 2):
        lonely = classes[counts < 2].tolist()
        raise ReprlabError(
            f"triplet sampling needs two images of every class in a batch (no positive exists "
            f"for class(es) {lonely}); use a larger --batch_size"
        )
    return inverse, counts


def sample_triplets(
    labels: np.ndarray, rng: np.random.Generator, skip_lonely: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The report's sampler, vectorised: ``(anchors, positives, negatives)`` index arrays.

    Anchors are all indices; the positive of anchor ``i`` is uniform over the *other* indices of
    its class, its negative uniform over the indices of other classes. A single class, or a class
    with one member, raises :class:`ReprlabError`; with ``skip_lonely`` (a random training batch)
    a class seen once is no anchor but still a negative. Deterministic given ``rng``'s state.
    """
    inv, counts = _check_labels(labels, skip_lonely)
    n = inv.shape[0]
    small = len(counts) < 2**15  # int16 keys take NumPy's radix sort: ~3x faster than int64
    order = np.argsort(inv.astype(np.int16) if small else inv, kind="stable")
    starts = np.cumsum(counts) - counts  # first sorted position of each class
    # work in sorted order: position j holds anchor order[j] of a class block [start, start+size)
    inv_sorted = inv[order]
    size = counts[inv_sorted]
    start = starts[inv_sorted]
    j = np.arange(n)
    # positive: shift the anchor's position by 1..size-1 inside its block (cyclic) -> uniform
    # over the other members of its class; the wrap is start + (j - start + shift) % size,
    # written without the (slow) integer modulo: j + shift stays below start + 2 * size
    r = rng.random(2 * n)  # one draw: the same numbers as two draws of n
    shifted = j + 1 + (r[:n] * (size - 1)).astype(np.int64)
    pos_sorted = shifted - size * (shifted >= start + size)
    # negative: uniform over the n - size positions outside the anchor's class block
    u = (r[n:] * (n - size)).astype(np.int64)
    neg_sorted = u + size * (u >= start)
    pos = np.empty(n, dtype=np.int64)
    neg = np.empty(n, dtype=np.int64)
    pos[order] = order[pos_sorted]
    neg[order] = order[neg_sorted]
    if skip_lonely and counts.min() < 2:  # a lonely anchor drew itself as its positive
        j = np.flatnonzero(counts[inv] >= 2)
        return j, pos[j], neg[j]
    return j, pos, neg


def random_triplets(
    labels: np.ndarray, rng: np.random.Generator, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """The report's sampler on a training batch, as index tensors on ``device``: a class seen
    once in the batch gives no anchor but is still a negative."""
    a, p, n = (torch.from_numpy(v).to(device) for v in sample_triplets(labels, rng, True))
    return a, p, n


def sample_triplets_reference(
    labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The report's sampler as written: a Python loop over anchors with ``np.where`` and
    ``rng.choice`` (the positive excludes the anchor itself). Slow; for the benchmark only."""
    labels = np.asarray(labels)
    _check_labels(labels)
    idx = np.arange(len(labels))
    pos = np.empty(len(labels), dtype=np.int64)
    neg = np.empty(len(labels), dtype=np.int64)
    for i in range(len(labels)):
        same = np.where((labels == labels[i]) & (idx != i))[0]
        other = np.where(labels != labels[i])[0]
        pos[i] = rng.choice(same)
        neg[i] = rng.choice(other)
    return idx, pos, neg


def pairwise_distances(emb: Tensor, squared: bool) -> Tensor:
    """``(N, N)`` Euclidean (or squared Euclidean) distances between rows of ``emb``.

    Uses the Gram-matrix formula in float32, clamps tiny negatives to 0, forces an exact 0
    diagonal, and keeps the gradient of ``sqrt`` finite at 0.
    """
    e = emb.float()
    sq = (e * e).sum(1)
    d2 = (sq[:, None] - 2.0 * (e @ e.T) + sq[None, :]).clamp_min(0.0)
    d2 = d2 * (1.0 - torch.eye(len(e), device=e.device, dtype=e.dtype))
    if squared:
        return d2
    zero = d2 == 0
    return torch.sqrt(d2 + zero.float() * 1e-16) * (~zero).float()


def _masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same  # positive mask (a != p), negative mask


def mine_triplets(
    emb: Tensor,
    labels: Tensor,
    strategy: str,
    margin: float,
    squared: bool,
    positive_only: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Mine triplets ``(anchors, positives, negatives)`` (index tensors) inside a batch.

    * ``"all"`` (batch-all, Hermans et al. 2017): every valid triplet; with ``positive_only``
      only those with a positive loss ``d(a,p) - d(a,n) + margin > 0`` (if none is left, all
      valid triplets are returned, which then give loss 0).
    * ``"hard"`` (batch-hard): for each anchor its farthest positive and nearest negative.
    * ``"semihard"`` (FaceNet, Schroff et al. 2015): for each (anchor, positive) pair the nearest
      negative with ``d(a,p) < d(a,n) < d(a,p) + margin``; pairs without such a negative are
      dropped. Fallback: if no pair in the batch has one, the batch-hard triplets are returned.
    * ``"random"``: the report's sampler (:func:`sample_triplets`) on the batch labels, seeded
      from torch's global generator.

    Mining uses detached distances; anchors lacking a positive or negative are skipped, and a
    batch with no valid triplet raises :class:`ReprlabError`.
    """
    if strategy not in MINERS:
        raise ReprlabError(f"--mining must be one of {list(MINERS)}, got {strategy!r}")
    if strategy == "random":
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        return random_triplets(labels.cpu().numpy(), np.random.default_rng(seed), labels.device)
    with torch.no_grad():
        d = pairwise_distances(emb.detach(), squared)
        pos_mask, neg_mask = _masks(labels)
        valid_anchor = pos_mask.any(1) & neg_mask.any(1)
        if not bool(valid_anchor.any()):
            raise ReprlabError(
                "no valid triplet in the batch (needs two classes and a class with two images); "
                "use a larger --batch_size"
            )
        if strategy == "hard":
            return _hard(d, pos_mask, neg_mask, valid_anchor)
        if strategy == "all":
            valid = pos_mask[:, :, None] & neg_mask[:, None, :]
            if positive_only:
                viol = valid & (d[:, :, None] - d[:, None, :] + margin > 0)
                if bool(viol.any()):
                    valid = viol
            a, p, n = torch.nonzero(valid, as_tuple=True)
            return a, p, n
        # semihard, class by class: (k, k, B-k) cubes
        a_l, p_l, n_l = [], [], []
        arange = torch.arange(len(labels), device=d.device)
        for c in torch.unique(labels):
            inside = labels == c
            k = int(inside.sum())
            if k < 2 or k == len(labels):
                continue
            ins, outs = arange[inside], arange[~inside]
            rows = d[inside]
            ap = rows[:, inside][:, :, None]
            an = rows[:, ~inside][:, None, :]
            semi = (an > ap) & (an < ap + margin)
            semi &= ~torch.eye(k, dtype=torch.bool, device=d.device)[:, :, None]
            has = semi.any(2)
            if not bool(has.any()):
                continue
            nearest = torch.where(semi, an.expand_as(semi), float("inf")).argmin(2)
            ai, pi = torch.nonzero(has, as_tuple=True)
            a_l.append(ins[ai])
            p_l.append(ins[pi])
            n_l.append(outs[nearest[ai, pi]])
        if not a_l:
            return _hard(d, pos_mask, neg_mask, valid_anchor)
        return torch.cat(a_l), torch.cat(p_l), torch.cat(n_l)


def _hard(d: Tensor, pos_mask: Tensor, neg_mask: Tensor, valid: Tensor) -> tuple[Tensor, ...]:
    hardest_pos = torch.where(pos_mask, d, torch.full_like(d, -1.0)).argmax(1)
    hardest_neg = torch.where(neg_mask, d, torch.full_like(d, float("inf"))).argmin(1)
    a = torch.nonzero(valid, as_tuple=True)[0]
    return a, hardest_pos[a], hardest_neg[a]


class TripletMarginLoss(nn.Module):
    """Mean triplet margin loss over ``(a, p, n)`` embedding triplets.

    ``distance="l2"``: ``max(||a-p+eps|| - ||a-n+eps|| + margin, 0)`` with ``eps=1e-6``,
    identical to ``torch.nn.TripletMarginLoss(margin, p=2)``; ``"squared_l2"``: the report's
    ``max(||a-p||^2 - ||a-n||^2 + margin, 0)``. ``normalize=True`` L2-normalises the embeddings
    first (distances then live in [0, 2], so the margin is on that scale).
    """

    def __init__(self, margin: float = 1.0, distance: str = "l2", normalize: bool = False):
        super().__init__()
        if distance not in DISTANCES:
            raise ReprlabError(f"--distance must be one of {list(DISTANCES)}, got {distance!r}")
        if margin < 0:
            raise ReprlabError(f"--margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.distance = distance
        self.normalize = normalize

    def forward(self, a: Tensor, p: Tensor, n: Tensor) -> Tensor:
        a, p, n = a.float(), p.float(), n.float()
        if self.normalize:
            a, p, n = F.normalize(a, dim=1), F.normalize(p, dim=1), F.normalize(n, dim=1)
        if self.distance == "l2":
            return F.triplet_margin_loss(a, p, n, margin=self.margin, p=2.0, eps=1e-6)
        d_ap = (a - p).pow(2).sum(1)
        d_an = (a - n).pow(2).sum(1)
        return F.relu(d_ap - d_an + self.margin).mean()


def batch_triplet_loss(
    emb: Tensor,
    labels: Tensor,
    miner: str = "hard",
    margin: float = 0.2,
    distance: str = "l2",
    normalize: bool = True,
) -> tuple[Tensor, dict[str, float]]:
    """Mine triplets in a batch of embeddings and return ``(mean loss, stats)``: the call a
    training loop makes.

    The loss is computed from the batch's pairwise distance matrix (one Gram matrix, no gathered
    ``(T, z)`` copies), so batch-all over all ~B^3/10 triplets stays cheap. For ``"all"`` the
    mean is over the triplets with a positive loss (Hermans et al.); for the others over the
    mined triplets. ``stats``: ``triplets`` (number used) and ``active`` (fraction with loss > 0
    among the mined/valid ones).
    """
    if distance not in DISTANCES:
        raise ReprlabError(f"--distance must be one of {list(DISTANCES)}, got {distance!r}")
    if miner not in MINERS:
        raise ReprlabError(f"--mining must be one of {list(MINERS)}, got {miner!r}")
    e = F.normalize(emb.float(), dim=1) if normalize else emb.float()
    squared = distance == "squared_l2"
    d = pairwise_distances(e, squared)
    if miner == "all":
        # per class: (k, k, B-k) cubes instead of one (B, B, B) cube -> ~#classes x less work
        total = e.new_zeros(())
        n_active, n_valid = 0, 0
        for c in torch.unique(labels):
            inside = labels == c
            k = int(inside.sum())
            if k < 2 or k == len(labels):
                continue
            rows = d[inside]
            dap, dan = rows[:, inside], rows[:, ~inside]
            per = F.relu(dap[:, :, None] - dan[:, None, :] + margin)
            per = per * (1.0 - torch.eye(k, device=d.device, dtype=d.dtype))[:, :, None]
            total = total + per.sum()
            n_active += int((per.detach() > 0).sum())
            n_valid += k * (k - 1) * (len(labels) - k)
        if n_valid == 0:
            raise ReprlabError(
                "no valid triplet in the batch (needs two classes and a class with two images); "
                "use a larger --batch_size"
            )
        loss = total / max(n_active, 1)
        return loss, {"triplets": float(n_active), "active": n_active / n_valid}
    a, p, n = mine_triplets(e, labels, miner, margin, squared)
    per = F.relu(d[a, p] - d[a, n] + margin)
    active = float((per.detach() > 0).float().mean())
    return per.mean(), {"triplets": float(len(a)), "active": active}
