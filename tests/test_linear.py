"""From-scratch logistic / softmax regression: gradients, losses, stability, clipping, stopping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reprlab.linear import LogisticRegression, SoftmaxRegression, sigmoid, softmax

EPS = 1e-7


def _numeric_grad(model, X, y, W, b, h=1e-6):
    gW = np.zeros_like(W)
    for i in np.ndindex(W.shape):
        Wp, Wm = W.copy(), W.copy()
        Wp[i] += h
        Wm[i] -= h
        gW[i] = (model.loss(X, y, Wp, b) - model.loss(X, y, Wm, b)) / (2 * h)
    gb = np.zeros_like(b)
    for i in np.ndindex(b.shape):
        bp, bm = b.copy(), b.copy()
        bp[i] += h
        bm[i] -= h
        gb[i] = (model.loss(X, y, W, bp) - model.loss(X, y, W, bm)) / (2 * h)
    return gW, gb


def _rel_err(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-30)


@pytest.mark.parametrize("binary", [True, False])
def test_gradient_matches_finite_differences(binary):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 8))
    if binary:
        model = LogisticRegression(l2_lambda=0.3, eps=1e-3)
        y = rng.integers(0, 2, 30)
        W, b = rng.normal(size=8), np.array(0.2)
    else:
        model = SoftmaxRegression(l2_lambda=0.3, eps=1e-3)
        y = rng.integers(0, 4, 30)
        W, b = rng.normal(size=(8, 4)), rng.normal(size=4)
    loss, dW, db = model.loss_and_grad(X, y, W, b)
    assert dW.shape == W.shape and np.shape(db) == b.shape
    nW, nb = _numeric_grad(model, X, y, W, b)
    assert _rel_err(dW, nW) < 1e-6
    assert _rel_err(np.atleast_1d(db), np.atleast_1d(nb)) < 1e-6
    assert loss == pytest.approx(model.loss(X, y, W, b))



def test_loss_of_given_weights_takes_the_learned_bias_by_default():
    """``loss(X, y, W=...)`` without ``b``: the learned bias, not a crash on ``None``."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 6)), rng.integers(0, 3, 40)
    m = SoftmaxRegression(num_iters=5, batch_size=8, progress=False).fit(X, y)
    W, b = m.W_, m.b_
    assert m.loss(X, y, W=W) == m.loss(X, y, W, b) == m.loss(X, y)
    assert m.loss(X, y, b=b + 1.0) == m.loss(X, y, W, b + 1.0)

def test_logistic_loss_and_accuracy_by_hand():
    model = LogisticRegression(eps=EPS, l2_lambda=0.5)
    X = np.array([[0.0], [1.0], [-1.0], [2.0]])
    y = np.array([1, 1, 0, 0])
    W, b = np.array([math.log(3.0)]), np.array(0.0)
    # p = sigmoid(x * log 3): 1/2, 3/4, 1/4, 9/10
    p = np.array([0.5, 0.75, 0.25, 0.9])
    expected = (
        -(math.log(0.5 + EPS) + math.log(0.75 + EPS) + math.log(0.75 + EPS) + math.log(0.1 + EPS))
        / 4
        + 0.5 / 2 * math.log(3.0) ** 2
    )
    assert model.loss(X, y, W, b) == pytest.approx(expected, rel=1e-12)
    assert model.loss(X, y, W, b, include_l2=False) == pytest.approx(
        expected - 0.25 * math.log(3.0) ** 2, rel=1e-12
    )
    model.W_, model.b_ = W, b
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], p)
    # p > 0.5 is class 1: the p == 0.5 sample counts as class 0 (wrong here)
    np.testing.assert_array_equal(model.predict(X), [0, 1, 0, 1])
    assert model.score(X, y) == pytest.approx(0.5)


def test_softmax_loss_and_accuracy_by_hand():
    model = SoftmaxRegression(eps=EPS)
    X = np.eye(3)
    W = np.array([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0], [0.0, 0.0, math.log(8.0)]])
    b = np.zeros(3)
    y = np.array([0, 1, 2])
    # rows: uniform (1/3 each); (1/2, 1/4, 1/4); (1/10, 1/10, 8/10)
    expected = -(math.log(1 / 3 + EPS) + math.log(1 / 4 + EPS) + math.log(0.8 + EPS)) / 3
    assert model.loss(X, y, W, b) == pytest.approx(expected, rel=1e-12)
    model.W_, model.b_ = W, b
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba[1], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # argmax; ties go to the first class (row 0 -> class 0, right; row 1 -> 0, wrong)
    assert model.score(X, y) == pytest.approx(2 / 3)


@pytest.mark.parametrize("binary", [True, False])
def test_huge_logits_give_finite_loss_and_gradient(binary):
    X = np.array([[1.0], [-1.0]])
    if binary:
        model = LogisticRegression(eps=EPS)
        W, b, y = np.array([1e4]), np.array(0.0), np.array([0, 0])  # one badly wrong
        worst = -math.log(EPS)
    else:
        model = SoftmaxRegression(eps=EPS)
        W, b, y = np.array([[1e4, -1e4]]), np.zeros(2), np.array([1, 1])
        worst = -math.log(EPS)
    loss, dW, db = model.loss_and_grad(X, y, W, b)
    assert np.isfinite(loss) and np.all(np.isfinite(dW)) and np.all(np.isfinite(db))
    assert loss == pytest.approx(worst / 2, rel=1e-6)  # one right (loss ~0), one wrong
    assert np.all(np.isfinite(sigmoid(np.array([-1e4, 1e4]))))
    assert np.all(np.isfinite(softmax(np.array([[1e4, -1e4, 0.0]]))))


def test_gradient_clipping_caps_the_step():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(64, 20)) * 100.0  # huge gradient
    y = (X[:, 0] > 0).astype(int)
    clip = 0.1
    for cls in (LogisticRegression, SoftmaxRegression):
        m = cls(lr=1.0, num_iters=1, batch_size=64, grad_norm_clip=clip, dtype=np.float64)
        m.fit(X, y)
        step = math.sqrt(float(np.sum(m._W**2) + np.sum(m._b**2)))  # from zeros, lr = 1
        assert step == pytest.approx(clip, rel=1e-9)
        # without clipping the same step is far larger
        m0 = cls(lr=1.0, num_iters=1, batch_size=64, grad_norm_clip=0.0, dtype=np.float64)
        m0.fit(X, y)
        assert math.sqrt(float(np.sum(m0._W**2) + np.sum(m0._b**2))) > 100 * clip


def _blobs(n, d, k, seed, sep=3.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * sep
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


@pytest.mark.parametrize("cls,k", [(LogisticRegression, 2), (SoftmaxRegression, 4)])
def test_fit_learns_and_records_history(cls, k):
    X, y = _blobs(800, 10, k, 0)
    X, y, Xv, yv = X[:600], y[:600], X[600:], y[600:]
    m = cls(lr=0.05, num_iters=200, batch_size=32, eval_every=20, seed=3)
    m.fit(X, y, Xv, yv)
    assert m.score(Xv, yv) > 0.95
    assert m.W_.dtype == np.float32
    assert m.W_.shape == ((10,) if k == 2 else (10, k))
    assert [r["iter"] for r in m.history_] == list(range(20, 201, 20))
    for r in m.history_:
        assert {"iter", "train_loss", "train_acc", "val_loss", "val_acc"} <= set(r)
    assert m.n_iter_ == 200 and m.stop_reason_ == "num_iters"
    proba = m.predict_proba(Xv)
    assert proba.shape == (200, k)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert m.history_[-1]["train_loss"] < m.history_[0]["train_loss"]


@pytest.mark.parametrize("cls", [LogisticRegression, SoftmaxRegression])
def test_early_stopping_stops_and_restores_best_weights(cls):
    X, y = _blobs(400, 5, 2, 1)
    # Validation labels are the opposite of the truth: every update makes val loss rise,
    # so the best evaluation is the first one.
    kw = dict(lr=0.1, batch_size=32, eval_every=1, lr_schedule="constant", seed=5)
    m = cls(num_iters=100, patience=3, early_stop_metric="val_loss", **kw)
    m.fit(X, y, X[:100], 1 - y[:100])
    losses = [r["val_loss"] for r in m.history_]
    assert losses[-1] > losses[0]
    assert m.stop_reason_ == "early_stopping"
    assert m.n_iter_ == 4 and m.best_iter_ == 1
    one = cls(num_iters=1, **kw).fit(X, y)  # weights after exactly one update
    np.testing.assert_array_equal(m.W_, one.W_)
    np.testing.assert_array_equal(m.b_, one.b_)
    # accuracy metric: same mechanics
    m2 = cls(num_iters=100, patience=2, early_stop_metric="val_acc", **kw)
    m2.fit(X, y, X[:100], 1 - y[:100])
    assert m2.stop_reason_ == "early_stopping" and m2.n_iter_ < 100


def test_ema_and_schedules_run_and_momentum_learns():
    X, y = _blobs(400, 6, 3, 2)
    for sched in ("constant", "cosine", "linear"):
        m = SoftmaxRegression(
            lr=0.02,
            num_iters=150,
            batch_size=32,
            momentum=0.9,
            ema_decay=0.95,
            lr_schedule=sched,
            eval_every=50,
        ).fit(X, y)
        assert m.score(X, y) > 0.9
    assert m.history_[-1]["lr"] == pytest.approx(0.02 * (1 - 149 / 150), rel=1e-5)


def test_bad_hyperparameters_raise():
    X, y = _blobs(50, 3, 2, 0)
    with pytest.raises(ValueError, match="lr"):
        LogisticRegression(lr=0).fit(X, y)
    with pytest.raises(ValueError, match="early_stop_metric"):
        LogisticRegression(early_stop_metric="nope").fit(X, y)
    with pytest.raises(ValueError, match="labels 0 and 1"):
        LogisticRegression().fit(X, y + 1)


def test_mirror_rows_are_used_as_extra_samples():
    X, y = _blobs(200, 6, 2, 4)
    kw = dict(lr=0.05, num_iters=10, batch_size=16, eval_every=5, seed=2, dtype=np.float64)
    plain = LogisticRegression(**kw).fit(X, y)
    same = LogisticRegression(**kw).fit(
        X, y, X_mirror=X
    )  # identical "mirror": same result (within one epoch)
    np.testing.assert_allclose(plain.W_, same.W_)
    other = LogisticRegression(**kw).fit(X, y, X_mirror=-X)  # a different mirror is used
    assert not np.allclose(plain.W_, other.W_)
    with pytest.raises(ValueError, match="X_mirror"):
        LogisticRegression(**kw).fit(X, y, X_mirror=X[:10])


def test_classification_report_by_hand():
    """Per-class figures of a 3-class run; macro averages over the classes that occur (a test
    set without class c is not marked down for it), as scikit-learn computes them."""
    from reprlab.metrics import classification_report

    r = classification_report(np.array([0, 0, 1]), np.array([0, 1, 1]), ["a", "b", "c"])
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert r["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    assert r["per_class"]["b"]["precision"] == 0.5 and r["per_class"]["b"]["recall"] == 1.0
    assert r["accuracy"] == pytest.approx(2 / 3)
    assert r["macro_f1"] == pytest.approx(2 / 3) and r["macro_recall"] == pytest.approx(0.75)
