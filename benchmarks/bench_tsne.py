"""t-SNE of 10k x 64 embeddings: openTSNE (reprlab.embed.tsne_2d) vs scikit-learn's TSNE.

    flock /tmp/reprlab-cpu.lock .venv/bin/python benchmarks/bench_tsne.py \
        --data /work/shared/datasets/cifar10/cifar10_train.tar.xz [--emb val_embeddings.npy]

Inputs: ``--emb`` (e.g. a cont_rep run's ``val_embeddings.npy``), else the PCA (64 components)
of 10k CIFAR-10 training images' pixels. Reports wall time (median of ``--repeats``) and
``sklearn.manifold.trustworthiness`` (k=10) of each map; target: ours faster, trustworthiness
within 0.01 of scikit-learn's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def pixels_pca(data: str | None, n: int, dim: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    from reprlab.data import load_images, stratified_subset

    ds = load_images(data, require_labels=True)
    idx = stratified_subset(ds.labels, n, seed)
    x = ds.images[idx].reshape(n, -1).astype(np.float32) / 255.0
    return PCA(dim, random_state=seed).fit_transform(x).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="training images (for the pixel-PCA input)")
    p.add_argument("--emb", default=None, help=".npy embeddings to map instead")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    from sklearn.manifold import TSNE, trustworthiness

    from reprlab.embed import tsne_2d

    x = np.load(a.emb)[: a.n] if a.emb else pixels_pca(a.data, a.n, a.dim, a.seed)
    print(f"input: {x.shape} ({'embeddings ' + a.emb if a.emb else 'PCA of pixels'})")

    def ours() -> np.ndarray:
        return tsne_2d(x, seed=a.seed, n_jobs=a.threads)

    def sk() -> np.ndarray:
        return TSNE(
            2, perplexity=30.0, init="pca", random_state=a.seed, n_jobs=a.threads
        ).fit_transform(x)

    result = {}
    for name, fn in (("openTSNE (reprlab.embed.tsne_2d)", ours), ("sklearn.manifold.TSNE", sk)):
        times, y = [], None
        for _ in range(a.repeats):
            t = time.perf_counter()
            y = fn()
            times.append(time.perf_counter() - t)
        tw = float(trustworthiness(x, y, n_neighbors=10))
        result[name] = {"seconds": statistics.median(times), "trustworthiness": tw}
        print(
            f"{name:34s} {statistics.median(times):7.1f} s   trustworthiness(k=10) {tw:.4f}",
            flush=True,
        )
    (o, s) = result.values()
    print(
        f"speed-up {s['seconds'] / o['seconds']:.2f}x, trustworthiness difference "
        f"{o['trustworthiness'] - s['trustworthiness']:+.4f}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
