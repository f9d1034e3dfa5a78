"""Benchmarks for the triplet parts and encoders (not run in CI).

(a) vectorised triplet sampler vs the report's per-anchor ``np.where`` loop;
(b) training steps/s of the default encoder (``--encoders`` for others), bf16 autocast +
    channels_last vs fp32 contiguous;
(c) one ``vgg16_bn`` (report head) training iteration on CPU: time and peak memory.

Run (heavy: wrap in the shared CPU lock)::

    flock /tmp/reprlab-cpu.lock .venv/bin/python benchmarks/bench_triplets.py [--vgg_batch 256]

Medians over repeats; every ratio is measured within the same run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from reprlab.encoders import DEFAULT_ENCODER, build_encoder
from reprlab.train import cpu_has_native_bf16, peak_memory_mib
from reprlab.triplets import batch_triplet_loss, sample_triplets, sample_triplets_reference


def median_time(fn: Callable[[], object], repeats: int, number: int = 1) -> float:
    """Median seconds per call over ``repeats`` timings of ``number`` calls each."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t) / number)
    return statistics.median(times)


def bench_sampler(rows: list[tuple[str, str]], n_labels: int, batch: int) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n_labels)  # CIFAR-10-like: 10 balanced classes
    batch_labels = labels[rng.permutation(n_labels)[:batch]]
    for name, lab, reps in (
        (f"batch {batch} of {n_labels}", batch_labels, 5),
        (f"all {n_labels}", labels, 3),
    ):
        ref = median_time(lambda lab=lab: sample_triplets_reference(lab, rng), reps)
        vec = median_time(lambda lab=lab: sample_triplets(lab, rng), 7, number=20)
        rows.append((f"(a) sampler, {name}: reference loop", f"{ref * 1e3:.2f} ms"))
        rows.append((f"(a) sampler, {name}: vectorised", f"{vec * 1e3:.3f} ms"))
        rows.append((f"(a) sampler, {name}: speed-up", f"{ref / vec:.0f}x"))


def _train_step_fn(
    model: torch.nn.Module, batch: int, bf16: bool, channels_last: bool, seed: int = 0
) -> Callable[[], None]:
    torch.manual_seed(seed)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, 32, 32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(batch) % 10
    model.train()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            emb = model(x)
        loss, _ = batch_triplet_loss(emb.float(), labels, "all", 0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_steps(rows: list[tuple[str, str]], encoder: str, batch: int, repeats: int) -> None:
    # (bf16, channels_last): the baseline, the fast path with native bf16, and reprlab's
    # --autocast on a CPU without it (float32, still channels_last)
    res = {}
    for bf16, cl in ((False, False), (True, True), (False, True)):
        step = _train_step_fn(build_encoder(encoder, 128), batch, bf16, cl)
        step()  # warm-up (oneDNN primitive creation)
        res[bf16, cl] = 1.0 / median_time(step, repeats)
    label = f"(b) {encoder} train steps/s, batch {batch}"
    base = res[False, False]
    rows.append((f"{label}, fp32 contiguous", f"{base:.2f} steps/s"))
    rows.append((f"{label}, bf16 + channels_last", f"{res[True, True]:.2f} steps/s"))
    rows.append((f"{label}, speed-up", f"{res[True, True] / base:.2f}x"))
    rows.append((f"{label}, fp32 + channels_last", f"{res[False, True]:.2f} steps/s "
                 f"({res[False, True] / base:.2f}x)"))


def bench_vgg(rows: list[tuple[str, str]], batch: int, fast: bool, repeats: int) -> None:
    cpu = torch.device("cpu")
    rss0 = peak_memory_mib(cpu)["rss"]  # the process's high-water mark so far, MiB
    step = _train_step_fn(build_encoder("vgg16_bn", 64), batch, fast, fast)
    step()
    sec = median_time(step, repeats)
    rss1 = peak_memory_mib(cpu)["rss"]
    mode = "bf16+channels_last" if fast else "fp32"
    rows.append((f"(c) vgg16_bn one iteration, batch {batch}, {mode}", f"{sec:.2f} s"))
    if batch != 2048:
        rows.append((f"(c) ... extrapolated linearly to batch 2048, {mode}",
                     f"{sec * 2048 / batch:.1f} s"))
    rows.append((f"(c) peak RSS of the process (ru_maxrss), {mode}", f"{rss1:.0f} MiB"))
    rows.append((f"(c) peak RSS minus RSS before building the model, {mode}",
                 f"{rss1 - rss0:.0f} MiB"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n_labels", type=int, default=40_000)
    p.add_argument("--batch", type=int, default=2048, help="sampler batch (a)")
    p.add_argument("--step_batch", type=int, default=256, help="training batch (b)")
    p.add_argument("--encoders", default=DEFAULT_ENCODER, help="comma list of encoders (b)")
    p.add_argument("--vgg_batch", type=int, default=256, help="vgg16_bn batch (c)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip", default="", help="comma list of parts to skip: a,b,c")
    p.add_argument("--vgg_mode", default="both", choices=("both", "fp32", "bf16"))
    p.add_argument("--rows_only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    skip = set(args.skip.split(","))
    torch.manual_seed(0)
    rows: list[tuple[str, str]] = [
        ("torch threads", str(torch.get_num_threads())),
        # (b) and (c) force bf16; reprlab's --autocast uses it on a CPU only where this is True
        ("CPU with native bf16 (AMX or AVX512-BF16)", str(cpu_has_native_bf16())),
    ]
    if "a" not in skip:
        bench_sampler(rows, args.n_labels, args.batch)
    if "b" not in skip:
        for name in args.encoders.split(","):
            bench_steps(rows, name, args.step_batch, args.repeats)
    if "c" not in skip:
        if args.vgg_mode == "both":
            # each precision in a fresh process, so ru_maxrss (a high-water mark) is its own
            for mode in ("fp32", "bf16"):
                out = subprocess.run(
                    [sys.executable, __file__, "--skip", "a,b", "--vgg_mode", mode,
                     "--vgg_batch", str(args.vgg_batch), "--repeats", str(args.repeats),
                     "--rows_only"],
                    check=True, capture_output=True, text=True,
                ).stdout
                rows += [tuple(line.split(" | ", 1)) for line in out.splitlines() if " | " in line]
        else:
            bench_vgg(rows, args.vgg_batch, args.vgg_mode == "bf16", max(2, args.repeats // 2))
    if args.rows_only:
        for name, value in rows[2:]:
            print(f"{name} | {value}")
        return
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark'.ljust(width)} | result")
    print(f"{'-' * width}-+-{'-' * 16}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


if __name__ == "__main__":
    main()
