"""Research: preprocessing and training variants of the from-scratch linear models, over seeds.

Each variant is ``+``-joined tokens on top of the mode's tuned SGD (logistic: 1000 updates,
lr 0.01; softmax: 3000, lr 0.03; batch 256, cosine, clipping 5, mirroring, best val_acc kept):

    gamma<g>   pixels ** g           log<e>   log(pixels + e)      pimg   per-image mean/std
    shift<p>   random translations   drop<p>  input dropout        tta    flip TTA at validation
    stta       flip and 1-px shift TTA (mean decision function over 10 views)
    jit<p>     contrast jitter: each standardised row scaled by U(1-p, 1+p)
    pshift<q>  translate only a fraction q of each batch (with shift<p>)
    ppix       per-pixel (not per-channel) standardisation
    multi<g1>_<g2>  each pixel encoded with several gammas, concatenated as channels
    hat<k>     piecewise-linear per-pixel encoding: k triangular bumps on [0, 1] as channels
    pyr<a>     also a x the 2x2- and 4x4-average-pooled image as features (still linear in the
               pixels: a reparametrisation whose SGD + L2 favour smooth weight templates)
    it<n> lr<x> bs<n> l2<x>          SGD updates, learning rate, batch size, L2
    plain      nothing added

    flock /tmp/reprlab-cpu.lock .venv/bin/python benchmarks/linear_variants.py logistic \\
        plain,gamma0.25,log0.02 --seeds 0,1,2,3,4 \\
        --data ../shared/datasets/cifar10/cifar10_train.tar.xz

Prints, per variant, the returned model's validation accuracy for each seed (which draws the
split and the batches) and their mean.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from reprlab import data as D
from reprlab.linear import LogisticRegression, SoftmaxRegression


def encode(images: np.ndarray, tokens: list[str]) -> np.ndarray:
    x = D.to_float(images)
    for t in tokens:
        if t == "pimg":
            m, s = x.mean(axis=(1, 2, 3), keepdims=True), x.std(axis=(1, 2, 3), keepdims=True)
            x = (x - m) / (s + 0.05)
        elif t.startswith("gamma"):
            x = D.gamma_encode(x, float(t[5:]))
        elif t.startswith("log"):
            x = np.log(x + np.float32(t[3:]))
        elif t.startswith("multi"):  # several gamma encodings of each pixel, as channels
            x = np.concatenate([D.gamma_encode(x, float(g)) for g in t[5:].split("_")], axis=3)
        elif t.startswith("hat"):  # piecewise-linear per-pixel basis: k triangular bumps
            k = int(t[3:])
            knots = np.linspace(0, 1, k, dtype=np.float32)
            x = np.concatenate(
                [np.maximum(0, 1 - np.abs(x - c) * (k - 1)) for c in knots], axis=3
            ).astype(np.float32)
        elif t.startswith("chroma"):  # brightness ** g, and two chromaticity ratios
            total = x.sum(axis=3, keepdims=True) + np.float32(0.03)
            x = np.concatenate(
                [D.gamma_encode(total / 3.03, float(t[6:] or 1)), x[..., :2] / total], axis=3
            )
    return x


def pyramid_scale(tokens: list[str]) -> float:
    return next((float(t[3:]) for t in tokens if t.startswith("pyr")), 0.0)


def with_pyramid(X: np.ndarray, shape: tuple[int, int, int], scale: float) -> np.ndarray:
    """Rows of pixels, followed by ``scale`` x their 2x2 and 4x4 average-pooled images."""
    h, w, c = shape
    img = X.reshape(len(X), h, w, c)
    parts = [X]
    for k in (2, 4):
        pooled = img.reshape(len(X), h // k, k, w // k, k, c).mean(axis=(2, 4))
        parts.append(np.float32(scale) * pooled.reshape(len(X), -1))
    return np.concatenate(parts, axis=1).astype(np.float32)


def augmenter(tokens: list[str], shape: tuple[int, int, int]) -> Any:
    shift = next((int(t[5:]) for t in tokens if t.startswith("shift")), 0)
    drop = next((float(t[4:]) for t in tokens if t.startswith("drop")), 0.0)
    jit = next((float(t[3:]) for t in tokens if t.startswith("jit")), 0.0)
    frac = next((float(t[6:]) for t in tokens if t.startswith("pshift")), 1.0)
    pyr = pyramid_scale(tokens)
    if not shift and not drop and not jit:
        return None

    def augment(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if pyr:  # translate the pixels, then rebuild their pooled copies
            return with_pyramid(base(X[:, : int(np.prod(shape))], rng), shape, pyr)
        return base(X, rng)

    def base(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if frac < 1:
            sel = rng.random(len(X)) < frac
            X = X.copy()
            X[sel] = D.random_translate(X[sel], shape, shift, rng)
        else:
            X = D.random_translate(X, shape, shift, rng)
        if jit:
            X = X * rng.uniform(1 - jit, 1 + jit, (len(X), 1)).astype(np.float32)
        if drop:
            X = X * ((rng.random(X.shape, dtype=np.float32) >= drop) / np.float32(1 - drop))
        return X

    return augment


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["logistic", "softmax"])
    p.add_argument("variants", help="comma-separated variants, e.g. plain,gamma0.25+shift1")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data", default=None, help="training images (default: CIFAR-10)")
    args = p.parse_args()

    full = D.load_images(args.data, require_labels=True)
    ds = D.select_classes(full, [0, 1]) if args.mode == "logistic" else full
    assert ds.labels is not None
    for variant in args.variants.split(","):
        tokens = variant.split("+")
        accs = []
        for seed in (int(s) for s in args.seeds.split(",")):
            tr, va = D.stratified_split(ds.labels, 0.2, seed)
            x_tr, x_va = encode(ds.images[tr], tokens), encode(ds.images[va], tokens)
            scaler = D.Standardizer().fit(x_tr)
            ppix = (x_tr.mean(0), x_tr.std(0) + 1e-3) if "ppix" in tokens else None

            def rows(
                x: np.ndarray,
                scaler: D.Standardizer = scaler,
                ppix: Any = ppix,
                pyr: float = pyramid_scale(tokens),
                shape: tuple[int, ...] = x_tr.shape[1:],
            ) -> np.ndarray:
                if ppix is not None:  # one mean/std per pixel and channel
                    r = D.flatten((x - ppix[0]) / ppix[1])
                else:
                    r = D.flatten(scaler.transform(x))
                return with_pyramid(r, shape, pyr) if pyr else r

            kw: dict[str, Any] = (
                dict(num_iters=1000, lr=0.01)
                if args.mode == "logistic"
                else dict(num_iters=3000, lr=0.03, eval_every=100)
            )
            for t, key, cast in (
                ("it", "num_iters", int), ("lr", "lr", float), ("bs", "batch_size", int),
                ("l2", "l2_lambda", float),
            ):
                for x in tokens:
                    if x.startswith(t):
                        kw[key] = cast(x[len(t) :])
            cls = LogisticRegression if args.mode == "logistic" else SoftmaxRegression
            model = cls(
                seed=seed, early_stop_metric="val_acc", lr_schedule="cosine", grad_norm_clip=5.0,
                augment=augmenter(tokens, x_tr.shape[1:]), progress=False, **kw,
            )
            X_va, y_va = rows(x_va), ds.labels[va]
            model.fit(rows(x_tr), ds.labels[tr], X_va, y_va, X_mirror=rows(x_tr[:, :, ::-1]))
            if "stta" in tokens:  # mean decision function over flips x 1-px shifts
                views = [x_va, x_va[:, :, ::-1]]
                pad = [np.pad(v, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect") for v in views]
                h, w = x_va.shape[1:3]
                views += [q[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for q in pad
                          for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
                f = sum(model.decision_function(rows(v)) for v in views)
                accs.append(float(np.mean(f.argmax(1) == y_va)))
            elif "tta" in tokens:  # mean of the image's and its mirror's probabilities
                p = model.predict_proba(X_va) + model.predict_proba(rows(x_va[:, :, ::-1]))
                accs.append(float(np.mean(p.argmax(1) == y_va)))
            else:
                accs.append(model.score(X_va, y_va))
        cells = " ".join(f"{a:.4f}" for a in accs)
        print(f"{args.mode} {variant:32s} {cells}  mean {np.mean(accs):.4f}", flush=True)


if __name__ == "__main__":
    main()
