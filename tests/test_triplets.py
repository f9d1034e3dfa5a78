"""Triplet sampling, mining, loss and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprlab.augment import random_crop_flip, translate
from reprlab.errors import ReprlabError
from reprlab.triplets import (
    MINERS,
    TripletMarginLoss,
    batch_triplet_loss,
    mine_triplets,
    pairwise_distances,
    sample_triplets,
    sample_triplets_reference,
)


def _valid(labels: np.ndarray, a: np.ndarray, p: np.ndarray, n: np.ndarray) -> None:
    assert len(a) == len(p) == len(n) > 0
    assert (labels[a] == labels[p]).all()
    assert (a != p).all()
    assert (labels[a] != labels[n]).all()


@pytest.mark.parametrize("sampler", [sample_triplets, sample_triplets_reference])
def test_sampler_valid_and_deterministic(sampler) -> None:
    labels = np.random.default_rng(0).integers(0, 10, 500)
    a, p, n = sampler(labels, np.random.default_rng(7))
    assert (a == np.arange(500)).all()
    _valid(labels, a, p, n)
    a2, p2, n2 = sampler(labels, np.random.default_rng(7))
    assert (p == p2).all() and (n == n2).all()
    _, p3, _ = sampler(labels, np.random.default_rng(8))
    assert (p != p3).any()


def test_sampler_is_uniform_over_other_members() -> None:
    labels = np.array(["x", "x", "x", "y", "y", "z"])  # non-integer labels take the np.unique path
    rng = np.random.default_rng(0)
    counts = np.zeros((6, 6))
    for _ in range(3000):
        a, p, n = sample_triplets(np.delete(labels, 5), rng)
        counts[a, p] += 1
    # anchor 0's positive is 1 or 2, each about half the time; never itself
    assert counts[0, 0] == 0 and abs(counts[0, 1] / 3000 - 0.5) < 0.05
    lab = np.array([0, 0, 1, 1, 2, 2])
    negs = np.zeros(6)
    for _ in range(4000):
        negs[sample_triplets(lab, rng)[2][0]] += 1
    assert negs[:2].sum() == 0 and np.allclose(negs[2:] / 4000, 0.25, atol=0.04)


@pytest.mark.parametrize("sampler", [sample_triplets, sample_triplets_reference])
def test_sampler_errors(sampler) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ReprlabError, match="two classes"):
        sampler(np.zeros(8, dtype=int), rng)
    with pytest.raises(ReprlabError, match="positive"):
        sampler(np.array([0, 0, 1, 2, 2]), rng)


def test_pairwise_distances_match_cdist() -> None:
    e = torch.randn(20, 5, dtype=torch.float64)
    d = pairwise_distances(e, squared=False)
    assert torch.allclose(d, torch.cdist(e.float(), e.float()), atol=1e-4)
    assert torch.allclose(pairwise_distances(e, True), torch.cdist(e, e).float() ** 2, atol=1e-3)
    e.requires_grad_(True)
    pairwise_distances(e, squared=False).sum().backward()
    assert torch.isfinite(e.grad).all()


def test_l2_loss_equals_torch() -> None:
    torch.manual_seed(0)
    a, p, n = (torch.randn(50, 16) for _ in range(3))
    for m in (0.2, 1.0):
        ours = TripletMarginLoss(m, "l2")(a, p, n)
        ref = torch.nn.TripletMarginLoss(margin=m, p=2)(a, p, n)
        assert torch.allclose(ours, ref, atol=1e-6)


def test_squared_loss_by_hand() -> None:
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    n = torch.tensor([[0.0, 1.5], [3.0, 1.0]])
    # anchor 0: 1 - 2.25 + 1 = -0.25 -> 0; anchor 1: 0 - 4 + 1 -> 0 ... use margin 5
    got = TripletMarginLoss(5.0, "squared_l2")(a, p, n)
    assert torch.isclose(got, torch.tensor(((1 - 2.25 + 5) + (0 - 4 + 5)) / 2))
    x, y, z = (torch.randn(30, 8) for _ in range(3))
    hand = torch.clamp(((x - y) ** 2).sum(1) - ((x - z) ** 2).sum(1) + 1.0, min=0).mean()
    assert torch.isclose(TripletMarginLoss(1.0, "squared_l2")(x, y, z), hand)
    xn, yn, zn = (torch.nn.functional.normalize(t, dim=1) for t in (x, y, z))
    hand_n = torch.clamp(((xn - yn) ** 2).sum(1) - ((xn - zn) ** 2).sum(1) + 0.3, min=0).mean()
    got_n = TripletMarginLoss(0.3, "squared_l2", normalize=True)(x, y, z)
    assert torch.isclose(got_n, hand_n)


@pytest.mark.parametrize("strategy", MINERS)
@pytest.mark.parametrize("squared", [False, True])
def test_mined_triplets_are_valid(strategy: str, squared: bool) -> None:
    torch.manual_seed(1)
    labels = torch.randint(0, 5, (60,))
    emb = torch.randn(60, 8)
    a, p, n = mine_triplets(emb, labels, strategy, margin=0.5, squared=squared)
    _valid(labels.numpy(), a.numpy(), p.numpy(), n.numpy())


def test_semihard_condition() -> None:
    torch.manual_seed(2)
    labels = torch.randint(0, 4, (80,))
    emb = torch.randn(80, 4)
    margin = 0.8
    a, p, n = mine_triplets(emb, labels, "semihard", margin, squared=False)
    d = torch.cdist(emb, emb)
    dap, dan = d[a, p], d[a, n]
    assert len(a) > 50
    assert (dap < dan + 1e-5).all() and (dan < dap + margin + 1e-5).all()
    # the chosen negative is the nearest semi-hard one
    for i in range(0, len(a), 7):
        cand = (labels != labels[a[i]]) & (d[a[i]] > dap[i]) & (d[a[i]] < dap[i] + margin)
        assert torch.isclose(dan[i], d[a[i]][cand].min(), atol=1e-5)


def test_batch_hard_picks_true_hardest() -> None:
    torch.manual_seed(3)
    labels = torch.randint(0, 3, (30,))
    emb = torch.randn(30, 6)
    a, p, n = mine_triplets(emb, labels, "hard", margin=0.1, squared=False)
    d = torch.cdist(emb, emb)
    assert len(a) == 30
    for i in range(30):
        same = (labels == labels[i]) & (torch.arange(30) != i)
        assert torch.isclose(d[i, p[i]], d[i][same].max(), atol=1e-5)
        assert torch.isclose(d[i, n[i]], d[i][labels != labels[i]].min(), atol=1e-5)


def test_batch_all_counts_and_positive_only() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1])
    emb = torch.randn(5, 3)
    a, _, _ = mine_triplets(emb, labels, "all", margin=1e6, squared=False)
    assert len(a) == 2 * 1 * 3 + 3 * 2 * 2  # every valid triplet is active with a huge margin
    a, p, n = mine_triplets(emb, labels, "all", margin=0.1, squared=False)
    d = torch.cdist(emb, emb)
    loss = d[a, p] - d[a, n] + 0.1
    assert (loss > 0).all() or len(a) == 18


def test_miner_errors() -> None:
    with pytest.raises(ReprlabError, match="--mining"):
        mine_triplets(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), "nope", 0.1, False)
    with pytest.raises(ReprlabError):
        mine_triplets(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), "hard", 0.1, False)
    with pytest.raises(ReprlabError, match="--distance"):
        TripletMarginLoss(1.0, "cosine")


def test_batch_triplet_loss_backprops() -> None:
    emb = torch.randn(32, 8, requires_grad=True)
    labels = torch.arange(32) % 4
    for miner in MINERS:
        loss, stats = batch_triplet_loss(emb, labels, miner, margin=0.2)
        loss.backward()
        assert torch.isfinite(emb.grad).all() and stats["triplets"] > 0


def test_augment_shape_determinism_and_effect() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 32)
    out1 = random_crop_flip(x, 4, torch.Generator().manual_seed(5))
    out2 = random_crop_flip(x, 4, torch.Generator().manual_seed(5))
    assert out1.shape == x.shape and out1.dtype == x.dtype
    assert torch.equal(out1, out2)
    assert not torch.equal(out1, random_crop_flip(x, 4, torch.Generator().manual_seed(6)))
    # flips only (pad=0): each image is itself or its mirror, and both happen
    f = random_crop_flip(x, 0, torch.Generator().manual_seed(1))
    same = (f == x).flatten(1).all(1)
    mirrored = (f == x.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()
    # crops only: every output is a 32x32 window of the zero-padded image, and some move
    c = random_crop_flip(x, 4, torch.Generator().manual_seed(2), padding_mode="zeros", flip=False)
    xp = torch.nn.functional.pad(x, (4, 4, 4, 4))
    shifted = 0
    for i in range(64):
        hits = [(dy, dx) for dy in range(9) for dx in range(9)
                if torch.equal(xp[i, :, dy:dy + 32, dx:dx + 32], c[i])]
        assert hits
        shifted += hits[0] != (4, 4)
    assert shifted > 40
    cl = random_crop_flip(x.contiguous(memory_format=torch.channels_last).to(torch.bfloat16), 2)
    assert cl.dtype == torch.bfloat16 and cl.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ReprlabError):
        random_crop_flip(x[0], 4)


@pytest.mark.parametrize("distance", ["l2", "squared_l2"])
def test_batch_loss_matches_brute_force(distance: str) -> None:
    torch.manual_seed(4)
    emb = torch.randn(24, 5)
    labels = torch.randint(0, 3, (24,))
    e = torch.nn.functional.normalize(emb, dim=1)
    d = torch.cdist(e, e) ** (2 if distance == "squared_l2" else 1)
    margin = 0.3
    # batch-all: mean over the positive-loss triplets
    terms = [
        float(d[i, j] - d[i, k] + margin)
        for i in range(24) for j in range(24) for k in range(24)
        if i != j and labels[i] == labels[j] and labels[i] != labels[k]
    ]
    pos = [t for t in terms if t > 0]
    loss, stats = batch_triplet_loss(emb, labels, "all", margin, distance)
    assert loss.item() == pytest.approx(sum(pos) / len(pos), rel=1e-4)
    assert stats["triplets"] == len(pos) and stats["active"] == pytest.approx(len(pos) / len(terms))
    # the other miners: mean over the mined triplets
    for miner in ("hard", "semihard"):
        a, p, n = mine_triplets(e, labels, miner, margin, distance == "squared_l2")
        want = torch.clamp(d[a, p] - d[a, n] + margin, min=0).mean()
        got, _ = batch_triplet_loss(emb, labels, miner, margin, distance)
        assert got.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-6)


def test_translate_shifts_content_and_reflects_the_border():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    left_up = translate(x, 1, 1)  # content moves one column left and one row up
    assert torch.equal(left_up[:, :, :-1, :-1], x[:, :, 1:, 1:])
    assert torch.equal(left_up[:, :, :-1, -1], x[:, :, 1:, -2])  # reflected column
    right_down = translate(x, -1, -1)
    assert torch.equal(right_down[:, :, 1:, 1:], x[:, :, :-1, :-1])
    assert torch.equal(right_down[:, :, 0, 1:], x[:, :, 1, :-1])  # reflected row
    assert translate(x, 0, 0) is x
    cl = x.contiguous(memory_format=torch.channels_last)
    assert translate(cl, 1, 1).is_contiguous(memory_format=torch.channels_last)


def test_random_batch_sampler_keeps_lonely_images_as_negatives() -> None:
    """In a random batch a class seen once gives no anchor (it has no positive) but is still a
    negative, uniformly like the others; a batch with one class of two images still works."""
    lab = np.array([0, 0, 1, 1, 2])
    rng = np.random.default_rng(0)
    negs = np.zeros(5)
    for _ in range(3000):
        a, p, n = sample_triplets(lab, rng, skip_lonely=True)
        assert list(a) == [0, 1, 2, 3] and (lab[p] == lab[a]).all() and (p != a).all()
        assert (lab[n] != lab[a]).all()
        negs[n[0]] += 1
    assert negs[:2].sum() == 0 and np.allclose(negs[2:] / 3000, 1 / 3, atol=0.04)
    a, p, n = sample_triplets(np.array([0, 0, 1, 2]), rng, skip_lonely=True)
    assert list(a) == [0, 1] and list(p) == [1, 0] and set(n) <= {2, 3}
    with pytest.raises(ReprlabError, match="two images"):
        sample_triplets(np.array([0, 1, 2]), rng, skip_lonely=True)
    # no lonely class: the same draws as the strict sampler
    full = np.array([0, 0, 1, 1, 2, 2])
    strict = sample_triplets(full, np.random.default_rng(3))
    lenient = sample_triplets(full, np.random.default_rng(3), skip_lonely=True)
    assert all((x == y).all() for x, y in zip(strict, lenient, strict=True))
