"""Benchmark: reprlab's from-scratch ``logistic`` and ``softmax`` modes vs scikit-learn.

Same data, same stratified 80/20 split (seed 0), same preprocessing (each mode's ``--gamma``
pixel encoding, per-channel standardisation with training statistics, flattened pixels) for every
row; only reprlab also trains on mirrored (and, for softmax, translated) images. reprlab runs
with each mode's default flags; scikit-learn's ``LogisticRegression`` (lbfgs) runs with ``C`` from
``--sk_C`` (default: its default 1.0 and a regularised 0.001), ``max_iter`` 100 (its default).

    flock /tmp/reprlab-cpu.lock .venv/bin/python benchmarks/bench_linear.py \
        --data ../shared/datasets/cifar10/cifar10_train.tar.xz

Prints a table: validation accuracy, the median model-fitting wall time over ``--repeats`` fits,
and the whole mode's wall time (loading excluded for scikit-learn; reprlab's includes writing
the run folder), then each reprlab fit's speed-up over the fastest scikit-learn fit.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

from reprlab.linear_modes import LogisticConfig, SoftmaxConfig, _prepare, run_logistic, run_softmax


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="training images (default: CIFAR-10)")
    p.add_argument("--modes", default="logistic,softmax")
    p.add_argument("--sk_C", default="1.0,0.001", help="comma-separated C values for sklearn")
    p.add_argument("--repeats", type=int, default=3, help="fits per row (median time)")
    args = p.parse_args()

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression as SkLR

    rows = []
    for mode in args.modes.split(","):
        cls, run = (
            (LogisticConfig, run_logistic) if mode == "logistic" else (SoftmaxConfig, run_softmax)
        )
        fits, walls = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = cls(data=args.data, out=f"{tmp}/{mode}")
                cfg.validate()
                s = run(cfg)
            fits.append(s["fit_time_s"])
            walls.append(s["wall_time_s"])
        med = statistics.median
        rows.append((mode, "reprlab (defaults)", s["val_acc"], med(fits), med(walls)))
        prep = _prepare(cfg, mode == "logistic")
        for c in args.sk_C.split(","):
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    sk = SkLR(C=float(c), max_iter=100).fit(prep.X_train, prep.train.labels)
                times.append(time.perf_counter() - t0)
            acc = sk.score(prep.X_val, prep.val.labels)
            rows.append((mode, f"sklearn lbfgs C={c}", acc, med(times), float("nan")))

    print()
    print(f"| {'mode':8} | {'model':22} | val acc | fit s | mode wall s |")
    print(f"|{'-' * 10}|{'-' * 24}|---------|-------|-------------|")
    for mode, name, acc, fit, wall in rows:
        w = "" if wall != wall else f"{wall:.1f}"
        print(f"| {mode:8} | {name:22} | {acc * 100:6.2f}% | {fit:5.2f} | {w:>11} |")
    print()
    for mode in dict.fromkeys(r[0] for r in rows):
        ours = next(r[3] for r in rows if r[0] == mode and r[1].startswith("reprlab"))
        best_sk = min(r[3] for r in rows if r[0] == mode and r[1].startswith("sklearn"))
        print(f"{mode}: reprlab's fit is {best_sk / ours:.2f}x as fast as the fastest sklearn fit")


if __name__ == "__main__":
    main()
