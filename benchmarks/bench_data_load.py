"""Time loading the shared CIFAR-10 training tar: first decode (empty cache) and cached reloads.

Run: ``flock /tmp/reprlab-cpu.lock .venv/bin/python benchmarks/bench_data_load.py [SOURCE]``
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "datasets" / "cifar10" / "cifar10_train.tar.xz"


def main() -> None:
    source = sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["REPRLAB_CACHE"] = cache
        from reprlab.data import load_images

        t = time.perf_counter()
        ds = load_images(source)
        first = time.perf_counter() - t
        again = []
        for _ in range(5):
            t = time.perf_counter()
            load_images(source)
            again.append(time.perf_counter() - t)
    print(f"{source}: {len(ds)} images {ds.images.shape[1:]}")
    print(f"first load (decode + cache write): {first:.1f} s")
    print(
        f"cached reload: median {statistics.median(again):.2f} s, max {max(again):.2f} s (5 runs)"
    )


if __name__ == "__main__":
    main()
