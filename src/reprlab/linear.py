"""Logistic and softmax regression from scratch in NumPy (report, sections 1.1 and 1.3).

No autograd and no scikit-learn: losses, analytic gradients, minibatch SGD (optional momentum),
gradient-norm clipping, a learning-rate schedule, an exponential moving average (EMA) of the
weights, periodic evaluation and early stopping with :class:`reprlab.early_stopping.EarlyStopping`.

Losses are exactly the report's formulas (mean over the N samples of a batch, a small ``eps``
inside the logarithm), plus an L2 penalty on the weights (not the bias)::

    binary:      L = -1/N sum_i [y_i log(p_i + eps) + (1 - y_i) log(1 - p_i + eps)]
                     + l2_lambda / 2 * ||W||^2,          p_i = sigmoid(x_i W + b)
    multi-class: L = -1/N sum_i sum_j y_ij log(p_ij + eps) + l2_lambda / 2 * ||W||^2,
                                                          p_i = softmax(x_i W + b)

The gradients are the exact derivatives of these expressions, ``eps`` included, so they match
central finite differences to float64 precision (``tests/test_linear.py``). Accuracy is the
report's: binary ``p > 0.5``; multi-class ``argmax p == y``.

The API follows scikit-learn: hyperparameters in ``__init__``, ``fit(X, y, X_val, y_val)``,
``predict``, ``predict_proba``, ``score``; learned ``W_``, ``b_``, ``history_``, ``n_iter_``,
``stop_reason_``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from reprlab.early_stopping import EarlyStopping

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]
LR_SCHEDULES = ("constant", "cosine", "linear")
STOP_METRICS = ("val_loss", "val_acc")


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function: never overflows, exact 0/1 only at the extremes."""
    z = np.asarray(z)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax via the log-sum-exp shift (finite for any finite logits)."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class _LinearModel:
    """Shared training loop; subclasses define the link function and the loss on logits.

    Parameters are kept as ``W`` of shape (D, K) and ``b`` of shape (K,), K = 1 for logistic.

    Hyperparameters:
        lr: initial learning rate of SGD.
        num_iters: number of minibatch updates (batches are drawn epoch by epoch, shuffled).
        batch_size: samples per update.
        l2_lambda: weight of ``l2_lambda / 2 * ||W||^2`` in the loss (bias not penalised).
        grad_norm_clip: rescale the gradient (W and b together) to at most this L2 norm;
            ``<= 0`` turns clipping off.
        momentum: heavy-ball momentum of SGD (0 = plain SGD).
        lr_schedule: ``constant``, ``cosine`` (to 0 at ``num_iters``) or ``linear`` (to 0).
        ema_decay: keep an exponential moving average of the weights with this decay and use it
            for evaluation and prediction (0 = off). Averages out SGD noise (Polyak averaging).
        eval_every: evaluate every this many iterations (and after the last one).
        patience: stop after this many evaluations without improvement of
            ``early_stop_metric`` (``<= 0``: never stop early). The best weights seen at an
            evaluation are restored at the end whenever validation data are given.
        early_stop_metric: ``val_loss`` or ``val_acc``.
        eps: the constant inside the logarithm of the loss.
        train_eval_size: the train metrics of ``history_`` are computed on a fixed random sample
            of this many training samples (0 or None: all of them).
        augment: optional ``f(X_batch, rng) -> X_batch`` applied to each training minibatch.
        dtype: float type of training (float32 is about twice as fast; float64 for checks).
        seed: seed of the initialisation, the batch order and the train-metric sample.
        progress: ``True`` for a tqdm bar on stderr, or a callable called with each metrics row.
    """

    binary: bool = False

    def __init__(
        self,
        lr: float = 0.01,
        num_iters: int = 1000,
        batch_size: int = 256,
        l2_lambda: float = 0.0,
        grad_norm_clip: float = 0.0,
        momentum: float = 0.0,
        lr_schedule: str = "constant",
        ema_decay: float = 0.0,
        eval_every: int = 10,
        patience: int = 0,
        early_stop_metric: str = "val_loss",
        eps: float = 1e-7,
        train_eval_size: int | None = 5000,
        augment: Augment | None = None,
        dtype: Any = np.float32,
        seed: int = 0,
        progress: bool | Callable[[dict[str, Any]], None] = False,
    ):
        self.lr = lr
        self.num_iters = num_iters
        self.batch_size = batch_size
        self.l2_lambda = l2_lambda
        self.grad_norm_clip = grad_norm_clip
        self.momentum = momentum
        self.lr_schedule = lr_schedule
        self.ema_decay = ema_decay
        self.eval_every = eval_every
        self.patience = patience
        self.early_stop_metric = early_stop_metric
        self.eps = eps
        self.train_eval_size = train_eval_size
        self.augment = augment
        self.dtype = dtype
        self.seed = seed
        self.progress = progress

    # ------------------------------------------------------------------ subclass hooks
    def _n_outputs(self, y: np.ndarray) -> int:
        raise NotImplementedError

    def _link(self, z: np.ndarray) -> np.ndarray:
        """Logits (N, K) -> probabilities (N, K)."""
        raise NotImplementedError

    def _loss_and_dz(
        self, z: np.ndarray, y: np.ndarray, need_grad: bool = True
    ) -> tuple[float, np.ndarray | None, np.ndarray]:
        """Data loss (mean over N), its gradient w.r.t. the logits, and the probabilities."""
        raise NotImplementedError

    def _labels_from_proba(self, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ maths
    def _params(self, W: np.ndarray | None, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        W = np.asarray(self._W if W is None else W)
        b = np.asarray(self._b if b is None else b)
        return W.reshape(W.shape[0], -1), b.reshape(-1)

    def loss_and_grad(
        self,
        X: np.ndarray,
        y: np.ndarray,
        W: np.ndarray | None = None,
        b: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """The full loss (data + L2) on ``(X, y)`` and its analytic gradient (dW, db).

        ``W`` and ``b`` default to the learned weights; they may be given in the shapes of
        ``W_``/``b_``. The gradients come back in the same shapes as the given weights.
        """
        shape_w, shape_b = (
            np.shape(W if W is not None else self.W_),
            np.shape(b if b is not None else self.b_),
        )
        W2, b2 = self._params(W, b)
        z = X @ W2 + b2
        data_loss, dz, _ = self._loss_and_dz(z, y)
        loss = data_loss + 0.5 * self.l2_lambda * float(np.sum(W2 * W2))
        dW = X.T @ dz + self.l2_lambda * W2
        db = dz.sum(axis=0)
        return float(loss), dW.reshape(shape_w), db.reshape(shape_b)

    def loss(
        self,
        X: np.ndarray,
        y: np.ndarray,
        W: np.ndarray | None = None,
        b: np.ndarray | None = None,
        include_l2: bool = True,
    ) -> float:
        """The report's loss on ``(X, y)`` (plus the L2 term unless ``include_l2=False``)."""
        W2, b2 = self._params(W, b)
        data_loss, _, _ = self._loss_and_dz(X @ W2 + b2, y, need_grad=False)
        if include_l2:
            data_loss += 0.5 * self.l2_lambda * float(np.sum(W2 * W2))
        return float(data_loss)

    # ------------------------------------------------------------------ public API
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        z = np.asarray(X, dtype=self._W.dtype) @ self._W + self._b
        return z[:, 0] if self.binary else z

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Binary: (N, 2) columns P(y=0), P(y=1); multi-class: (N, K); rows sum to 1."""
        p = self._link(np.asarray(X, dtype=self._W.dtype) @ self._W + self._b)
        if self.binary:
            return np.concatenate([1.0 - p, p], axis=1)
        return p

    def predict(self, X: np.ndarray) -> np.ndarray:
        p = self._link(np.asarray(X, dtype=self._W.dtype) @ self._W + self._b)
        return self._labels_from_proba(p)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy (the report's formula)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def evaluate(self, X: np.ndarray, y: np.ndarray, batch: int = 8192) -> tuple[float, float]:
        """(loss without the L2 term, accuracy) on ``(X, y)``, computed in batches."""
        return self._evaluate(X, y, self._W, self._b, batch)

    def _evaluate(
        self, X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, batch: int = 8192
    ) -> tuple[float, float]:
        n = len(y)
        total, correct = 0.0, 0
        for s in range(0, n, batch):
            z = X[s : s + batch] @ W + b
            loss, _, p = self._loss_and_dz(z, y[s : s + batch], need_grad=False)
            total += loss * len(z)
            correct += int(np.sum(self._labels_from_proba(p) == y[s : s + batch]))
        return total / n, correct / n

    def _lr_at(self, it: int) -> float:
        """Learning rate of update ``it`` (0-based)."""
        if self.lr_schedule == "constant":
            return self.lr
        frac = it / max(1, self.num_iters)
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
        return self.lr * (1.0 - frac)

    def _check_params(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.num_iters < 1:
            raise ValueError(f"num_iters must be >= 1, got {self.num_iters}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.l2_lambda < 0:
            raise ValueError(f"l2_lambda must be >= 0, got {self.l2_lambda}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule}")
        if self.early_stop_metric not in STOP_METRICS:
            raise ValueError(
                f"early_stop_metric must be one of {STOP_METRICS}, got {self.early_stop_metric}"
            )

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        X_mirror: np.ndarray | None = None,
    ) -> _LinearModel:
        """Minibatch SGD on ``(X, y)``; evaluates on ``(X_val, y_val)`` and stops early.

        ``X_mirror`` (same shape as ``X``, e.g. the horizontally mirrored images) is extra
        training data: each sampled row is taken from it with probability 1/2 (cheaper than an
        ``augment`` function, which must copy every batch).
        """
        self._check_params()
        dt = np.dtype(self.dtype)
        X = np.ascontiguousarray(X, dtype=dt)
        y = np.asarray(y, dtype=np.int64)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be (N, D) with N = len(y), got {X.shape} and {y.shape}")
        has_val = X_val is not None and y_val is not None and len(y_val) > 0
        if has_val:
            X_val = np.ascontiguousarray(X_val, dtype=dt)
            y_val = np.asarray(y_val, dtype=np.int64)
        n, d = X.shape
        if X_mirror is not None:
            X_mirror = np.ascontiguousarray(X_mirror, dtype=dt)
            if X_mirror.shape != X.shape:
                raise ValueError(f"X_mirror must have the shape of X, got {X_mirror.shape}")
        k = self._n_outputs(y if not has_val else np.concatenate([y, y_val]))
        rng = np.random.default_rng(self.seed)
        W = np.zeros((d, k), dtype=dt)  # convex problem: zero init is fine and deterministic
        b = np.zeros(k, dtype=dt)
        vW, vb = np.zeros_like(W), np.zeros_like(b)
        aW, ab = (W.copy(), b.copy()) if self.ema_decay > 0 else (W, b)
        # Train metrics on a fixed random sample (cheap, unbiased estimate).
        if self.train_eval_size and n > self.train_eval_size:
            tr_idx = np.sort(rng.choice(n, self.train_eval_size, replace=False))
            X_tr, y_tr = X[tr_idx], y[tr_idx]
        else:
            X_tr, y_tr = X, y
        stopper = EarlyStopping(patience=self.patience, metric=self.early_stop_metric)
        self.history_: list[dict[str, Any]] = []
        self.stop_reason_ = "num_iters"
        bar = None
        if self.progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.num_iters, desc=type(self).__name__, unit="it", leave=False)
        t0 = time.perf_counter()
        perm = rng.permutation(n)
        pos = 0
        bs = min(self.batch_size, n)
        it = 0
        # a diverging run overflows: detected below (non-finite loss), no RuntimeWarning spam
        old_err = np.seterr(over="ignore", invalid="ignore", divide="ignore")
        try:
            for it in range(1, self.num_iters + 1):
                if pos + bs > n:
                    perm, pos = rng.permutation(n), 0
                idx = np.sort(perm[pos : pos + bs])  # sorted gather is cache-friendlier
                pos += bs
                Xb, yb = X[idx], y[idx]
                if X_mirror is not None:
                    alt = idx[rng.random(bs) < 0.5]
                    Xb[np.searchsorted(idx, alt)] = X_mirror[alt]
                if self.augment is not None:
                    Xb = self.augment(Xb, rng)
                _, dz, _ = self._loss_and_dz(Xb @ W + b, yb)
                gW = Xb.T @ dz
                if self.l2_lambda:
                    gW += self.l2_lambda * W
                gb = dz.sum(axis=0)
                if self.grad_norm_clip > 0:
                    norm = math.sqrt(float(np.sum(gW * gW)) + float(np.sum(gb * gb)))
                    if norm > self.grad_norm_clip:
                        scale = dt.type(self.grad_norm_clip / norm)
                        gW *= scale
                        gb *= scale
                lr = dt.type(self._lr_at(it - 1))
                if self.momentum:
                    mu = dt.type(self.momentum)
                    vW *= mu
                    vW += gW
                    vb *= mu
                    vb += gb
                    gW, gb = vW, vb
                W -= lr * gW
                b -= lr * gb
                if self.ema_decay > 0:
                    # Bias-corrected warm-up: early on the average follows the weights closely.
                    decay = dt.type(min(self.ema_decay, (1.0 + it) / (10.0 + it)))
                    aW *= decay
                    aW += (1 - decay) * W
                    ab *= decay
                    ab += (1 - decay) * b
                if bar is not None:
                    bar.update(1)
                if it % self.eval_every and it != self.num_iters:
                    continue
                row: dict[str, Any] = {"iter": it}
                row["train_loss"], row["train_acc"] = self._evaluate(X_tr, y_tr, aW, ab)
                if has_val:
                    row["val_loss"], row["val_acc"] = self._evaluate(X_val, y_val, aW, ab)
                row["lr"] = float(lr)
                row["elapsed_s"] = time.perf_counter() - t0
                self.history_.append(row)
                if bar is not None:
                    bar.set_postfix(
                        {
                            k: f"{row[k]:.4f}"
                            for k in ("train_loss", "val_loss", "val_acc")
                            if k in row
                        }
                    )
                elif callable(self.progress):
                    self.progress(row)
                if not math.isfinite(row["train_loss"]) or not np.all(np.isfinite(aW)):
                    self.stop_reason_ = "diverged"
                    break
                if has_val and stopper.update(
                    it, row[self.early_stop_metric], state=(aW.copy(), ab.copy())
                ):
                    self.stop_reason_ = "early_stopping"
                    break
        finally:
            np.seterr(**old_err)
            if bar is not None:
                bar.close()
        self.n_iter_ = it
        self.best_iter_ = stopper.best_step
        if has_val and stopper.best_state is not None:
            aW, ab = stopper.best_state
        self._W, self._b = np.array(aW), np.array(ab)
        self.fit_time_s_ = time.perf_counter() - t0
        return self

    # ------------------------------------------------------------------ learned weights
    @property
    def W_(self) -> np.ndarray:
        return self._W[:, 0] if self.binary else self._W

    @W_.setter
    def W_(self, value: np.ndarray) -> None:
        value = np.asarray(value)
        self._W = value.reshape(value.shape[0], -1)

    @property
    def b_(self) -> np.ndarray:
        return self._b.reshape(()) if self.binary else self._b

    @b_.setter
    def b_(self, value: np.ndarray) -> None:
        self._b = np.asarray(value).reshape(-1)


class LogisticRegression(_LinearModel):
    """Binary logistic regression: labels 0/1, ``W_`` of shape (D,), ``b_`` a scalar array."""

    binary = True

    def _n_outputs(self, y: np.ndarray) -> int:
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError("LogisticRegression needs labels 0 and 1")
        return 1

    def _link(self, z: np.ndarray) -> np.ndarray:
        return sigmoid(z)

    def _labels_from_proba(self, p: np.ndarray) -> np.ndarray:
        return (p[:, 0] > 0.5).astype(np.int64)

    def _loss_and_dz(
        self, z: np.ndarray, y: np.ndarray, need_grad: bool = True
    ) -> tuple[float, np.ndarray | None, np.ndarray]:
        p = sigmoid(z)  # (N, 1)
        t = y.reshape(-1, 1).astype(z.dtype)
        q = 1.0 - p
        eps = self.eps
        loss = -float(np.mean(t * np.log(p + eps) + (1 - t) * np.log(q + eps)))
        if not need_grad:
            return loss, None, p
        # d/dz of the formula above, eps included: dp/dz = p (1 - p).
        pq = p * q
        dz = (-(t * pq / (p + eps)) + (1 - t) * pq / (q + eps)) / len(z)
        return loss, dz.astype(z.dtype, copy=False), p


class SoftmaxRegression(_LinearModel):
    """Multi-class softmax regression: labels 0..K-1, ``W_`` (D, K), ``b_`` (K,).

    K is ``max(label) + 1`` over the training and validation labels, or ``n_classes`` if given.
    """

    binary = False

    def __init__(self, *args: Any, n_classes: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.n_classes = n_classes

    def _n_outputs(self, y: np.ndarray) -> int:
        k = int(y.max()) + 1 if y.size else 0
        if self.n_classes is not None:
            if k > self.n_classes:
                raise ValueError(f"label {k - 1} out of range for n_classes={self.n_classes}")
            k = self.n_classes
        if k < 2:
            raise ValueError("SoftmaxRegression needs at least 2 classes")
        return k

    def _link(self, z: np.ndarray) -> np.ndarray:
        return softmax(z)

    def _labels_from_proba(self, p: np.ndarray) -> np.ndarray:
        return np.argmax(p, axis=1).astype(np.int64)

    def _loss_and_dz(
        self, z: np.ndarray, y: np.ndarray, need_grad: bool = True
    ) -> tuple[float, np.ndarray | None, np.ndarray]:
        p = softmax(z)
        rows = np.arange(len(z))
        py = p[rows, y]
        loss = -float(np.mean(np.log(py + self.eps)))
        if not need_grad:
            return loss, None, p
        # d/dz_k [-log(p_y + eps)] = -(p_y / (p_y + eps)) * (1[k = y] - p_k)
        dz = p.copy()
        dz[rows, y] -= 1.0
        dz *= (py / (py + self.eps) / len(z)).reshape(-1, 1).astype(z.dtype, copy=False)
        return loss, dz, p
