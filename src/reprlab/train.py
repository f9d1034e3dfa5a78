"""The one training loop of the neural modes (``cont_rep``, ``fine_tune_nn``), nanoGPT style.

    result = train(model, sample, step, TrainConfig(num_iters=500, lr=1e-3),
                   evaluate=lambda it: {"knn_acc": ...}, run_dir="runs/x", meta={"z_dim": 64})

* ``sample(it, rng) -> batch`` draws the batch of iteration ``it``; ``rng`` holds a torch and a
  NumPy generator seeded from ``(seed, it)``, so the data order depends only on the seed and the
  iteration: a resumed run sees exactly the batches an uninterrupted run would have seen.
* ``step(batch) -> (loss, extras)`` is the forward pass (run under ``torch.autocast``); the loop
  does backward, clipping, the optimiser step, the learning-rate schedule and the EMA.
* ``evaluate(it) -> dict`` runs every ``eval_every`` iterations and at the end (in eval mode,
  without gradients, on the EMA weights when EMA is on).

The loss is summed on the device and read back only every ``log_every`` iterations (one host
sync), where it is checked for NaN/Inf: then training stops, the last good checkpoint is kept,
and :class:`~reprlab.errors.TrainingFailed` is raised. Checkpoints (atomic, via
:func:`reprlab.io.save_checkpoint`) hold the model, optimiser, EMA, early-stopping state, best
weights, metrics rows, elapsed time and every RNG state, so ``resume=True`` continues bit for bit
(on CPU) where the run stopped: after a crash, a SIGKILL or a Ctrl-C (which saves, then re-raises).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from reprlab.config import RunConfig, arg, positive
from reprlab.early_stopping import EarlyStopping
from reprlab.errors import ReprlabError, Terminated, TrainingFailed, one_line
from reprlab.io import load_checkpoint, read_jsonl, save_checkpoint, write_jsonl

CHECKPOINT_VERSION = 1
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear", "onecycle")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class ComputeConfig(RunConfig):
    """Where and how the torch modes compute (every mode that runs an encoder)."""

    device: str = arg("auto", "auto (cuda, mps, cpu) | cpu | cuda | cuda:N | mps")
    autocast: bool = arg(
        True,
        "bfloat16 autocast where the hardware has bf16 (CUDA from Ampere on; CPUs with AMX or "
        "AVX512-BF16), float32 elsewhere; --no-autocast: float32 everywhere",
    )


@dataclass
class NeuralRunConfig(ComputeConfig):
    """The flags of the neural modes' training loop (``cont_rep``, ``fine_tune_nn``).

    Defaults are airbench94's recipe (Jordan 2024) at batch 256; a mode redeclares a field to
    change its default, with the measurement behind it.
    """

    # --- augmentation (tensors, on the device) -----------------------------------------------
    augment: bool = arg(True, "random translate-crop + horizontal flip of every batch")
    # airbench: 2-pixel translations (4 measured worse there in short runs)
    translate: int = arg(2, "largest random translation in pixels (reflect padding)")
    # --- optimisation --------------------------------------------------------------------------
    # 256 images per step: the same images/s as larger batches on a CPU, more updates a minute
    batch_size: int = arg(256, "images per batch (report: 2048)")
    num_iters: int = arg(1000, "training iterations")
    optimizer: str = arg("sgd", "adam (report) | adamw | sgd (Nesterov)", choices=OPTIMIZERS)
    momentum: float = arg(0.85, "SGD (Nesterov) momentum (airbench: 0.85)")
    # airbench's 11.5 per 1024 examples of a summed loss = 0.375 for a mean loss at batch 256
    lr: float = arg(0.375, "peak learning rate (report: 1e-4)")
    # airbench: each weight decays by 5e-4 of itself per step (= lr x wd); the convolutions
    # before BatchNorm are scale-invariant, so this sets their effective learning rate
    weight_decay: float = arg(1.33e-3, "weight decay of weights with ndim > 1 (coupled, SGD)")
    norm_lr_scale: float = arg(
        64.0,
        "BatchNorm shifts learn at lr x this, with weight decay / this (airbench's bias "
        "scaler; 0: like other biases, no decay)",
    )
    # airbench: the first 20 % warm up from 0.2 x lr, then linear decay to 0
    schedule: str = arg(
        "linear", "lr schedule after warm-up: " + " | ".join(SCHEDULES), choices=SCHEDULES
    )
    # a fraction, so that a shorter or longer --num_iters keeps the schedule's shape
    warmup_frac: float = arg(0.2, "linear learning-rate warm-up over this fraction of --num_iters")
    warmup_iters: int | None = arg(
        None, "warm-up iterations, overriding --warmup_frac (none: use the fraction)"
    )
    warmup_start: float = arg(0.2, "lr at the start of the warm-up, as a fraction of --lr")
    lookahead: bool = arg(
        True, "airbench's lookahead: pull the weights to a slow average every 5 iterations"
    )
    early_stop_from: float = arg(
        0.0,
        "early stopping ignores the checks before this fraction of --num_iters: they neither "
        "count toward --patience nor are kept as the best",
    )
    ema_decay: float = arg(0.0, "EMA of the weights, evaluated and kept (0: off)")
    grad_clip: float = arg(0.0, "max global gradient norm (0: off)")
    # for a machine slower (or faster) than the one the defaults were sized on: the schedule's
    # shape is kept (warm-up fraction, decay, lookahead), only its length changes
    time_budget: float = arg(
        0.0,
        "seconds of training: time a few steps and an evaluation first, then set --num_iters "
        "to what fits (0: off; the count used is in summary.json)",
    )
    # --- checkpoints ---------------------------------------------------------------------------
    checkpoint_every: int = arg(100, "iterations between checkpoints (0: end and Ctrl-C only)")
    resume: bool = arg(False, "continue from checkpoint.pt in --out")

    def validate(self) -> None:
        super().validate()
        positive(self, "batch_size")
        positive(self, "translate", "norm_lr_scale", "time_budget", allow_zero=True)
        if not 0.0 <= self.warmup_frac <= 1.0:
            raise ReprlabError(f"--warmup_frac must be in [0, 1], got {self.warmup_frac}")
        if self.resume and self.out is None:
            raise ReprlabError("--resume needs --out (the run folder to continue)")
        # the loop's own checks, here too: a bad value fails before the run folder is written
        TrainConfig.from_mode(self, torch.device("cpu"), desc="").validate()

    def validate_for(self, images: np.ndarray, source: str) -> None:
        """The checks that need the training images (``(N, H, W, C)``), also before the run
        folder is written."""
        h, w = images.shape[1:3]
        if self.augment and self.translate >= min(h, w):  # reflect padding needs a wider image
            raise ReprlabError(
                f"--translate must be below {min(h, w)} for the {h}x{w} images of {source}, "
                f"got {self.translate}"
            )


@dataclass
class TrainConfig:
    """Everything the loop needs; modes fill it from their run config."""

    num_iters: int
    lr: float
    optimizer: str = "adam"  # adam | adamw | sgd (nesterov when momentum > 0)
    momentum: float = 0.9  # SGD momentum; Adam uses betas
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | linear | onecycle (after warmup)
    warmup_iters: int = 0
    # when set, warmup_iters is this fraction of num_iters (kept when a time budget sets it)
    warmup_frac: float | None = None
    warmup_start: float = 0.0  # lr at the first warmup iteration, as a fraction of the peak
    final_lr_frac: float = 0.0  # lr at the last iteration, as a fraction of the peak
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    ema_decay: float = 0.0  # EMA of the weights (evaluated and returned); 0 = off
    # airbench's lookahead: every 5 iterations the weights are pulled to a slow copy that
    # averages them with decay 0.95^5 (t/T)^3 (none early, strong at the end); ends on it
    lookahead: bool = False
    log_every: int = 10  # report: the loss is sampled every 10 iterations
    eval_every: int = 100
    checkpoint_every: int = 200  # 0 = only at the end / on Ctrl-C
    patience: int = 0  # checks without improvement before stopping; 0 = off
    # checks before this fraction of num_iters (as first planned, like the warm-up) neither
    # count nor are kept
    early_stop_from: float = 0.0
    # > 0: num_iters is replaced by what fits this many seconds (see fit_time_budget)
    time_budget: float = 0.0
    # a timed run (time budget or deadline) moves its end at each evaluation to keep to it
    replan: bool = True
    early_stop_metric: str = "train_loss"  # train_loss (checked every log) or an eval key
    min_delta: float = 0.0
    # end with the best weights seen by the early-stopping metric (with lookahead: only when
    # early stopping ended the run; a run that reaches num_iters ends on the slow weights)
    restore_best: bool = True
    device: str = "auto"  # auto -> cuda, mps, cpu
    autocast: bool = True  # bfloat16 autocast on CPU and CUDA
    # deterministic kernels on CPU (e.g. the scatter-add behind indexing's backward is
    # otherwise multi-threaded and order-dependent): needed for bit-identical resume
    deterministic: bool = True
    channels_last: bool = True
    seed: int = 0
    progress: bool = True
    desc: str = "train"

    # the fields a mode's config (cont_rep, fine_tune_nn) shares with the loop, by name
    MODE_FIELDS: ClassVar[tuple[str, ...]] = (
        "num_iters", "lr", "optimizer", "momentum", "weight_decay", "schedule", "warmup_iters",
        "warmup_start", "grad_clip", "ema_decay", "lookahead", "eval_every", "checkpoint_every",
        "patience", "early_stop_from", "early_stop_metric", "autocast", "seed", "progress",
        "time_budget",
    )  # fmt: skip

    @classmethod
    def from_mode(cls, cfg: Any, device: torch.device, desc: str) -> TrainConfig:
        """The loop's configuration from a mode's config (fields shared by name)."""
        fields = {n: getattr(cfg, n) for n in cls.MODE_FIELDS}
        if fields["warmup_iters"] is None:  # the mode's --warmup_frac of its --num_iters
            fields.update(warmup_iters=0, warmup_frac=cfg.warmup_frac)
        return cls(**fields, device=str(device), desc=desc)

    def __post_init__(self) -> None:
        if self.warmup_frac is not None:
            self.warmup_iters = round(self.warmup_frac * self.num_iters)

    def with_num_iters(self, n: int) -> TrainConfig:
        """This configuration for ``n`` iterations (a warm-up fraction scales with it)."""
        return replace(self, num_iters=n)

    def validate(self) -> None:
        """Check every field the loop uses; errors name the mode's flag (``--lr``)."""
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in choices:
                raise ReprlabError(
                    f"--{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}"
                )
        positive(self, "lr", "log_every", "eval_every")
        # 0 iterations: the model as initialised (a baseline of random features, or the start
        # of fine-tuning from scratch: `cont_rep --num_iters 0`)
        positive(
            self, "num_iters", "weight_decay", "warmup_iters", "grad_clip", "checkpoint_every",
            "patience", "time_budget", allow_zero=True,
        )  # fmt: skip
        for name in ("ema_decay", "momentum", "early_stop_from"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ReprlabError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.warmup_start <= 1.0:
            raise ReprlabError(f"--warmup_start must be in [0, 1], got {self.warmup_start}")
        if self.lookahead and self.ema_decay > 0:
            raise ReprlabError("--lookahead and --ema_decay are two kinds of averaging: pick one")


@dataclass
class TrainResult:
    status: str  # "finished" (a failed run raises instead)
    stop_reason: str  # "num_iters" | "early_stopping"
    iterations: int  # iterations completed
    rows: list[dict[str, Any]]
    wall_time_s: float
    best: float | None = None
    best_iter: int | None = None
    final_loss: float | None = None
    resumed_from: int | None = None
    # the training seconds of the sessions before a resume (in wall_time_s; their set-up and
    # final passes are not on record), which a mode adds to its own wall time
    earlier_s: float = 0.0
    steps_per_s: float = 0.0
    peak_memory_mib: dict[str, float] = field(default_factory=dict)
    precision: str = "float32"  # of the forward passes: "bfloat16" under autocast
    # with a time budget: the measured step and evaluation times and the iterations they fit
    time_budget: dict[str, float] | None = None
    # which weights the model ends with: "lookahead" (airbench's slow weights, a run that
    # reached num_iters), "best" (by the early-stopping metric), "ema" or "last"
    weights: str = "last"

    def run_facts(self) -> dict[str, Any]:
        """How the training went, as every neural mode's ``summary.json`` records it."""
        return {
            "resumed_from": self.resumed_from,
            "train_wall_time_s": self.wall_time_s,
            "steps_per_s": self.steps_per_s,
            "peak_memory_mib": self.peak_memory_mib,
            "precision": self.precision,
            "time_budget": self.time_budget,
        }


def record_failure(
    run: Any, base: dict[str, Any], e: TrainingFailed, t0: float, plot: Callable[[list], None]
) -> None:
    """A neural run that :func:`train` gave up on (``e``): its curves so far (``plot(rows)``)
    and a ``summary.json`` with ``status: failed``, the error and the iterations it ran."""
    rows = read_jsonl(run.file("metrics.jsonl"))
    if rows:
        plot(rows)
    run.write_summary(
        {
            **base,
            "status": "failed",
            "stop_reason": "nan_loss",
            "error": str(e),
            "iterations": e.iteration or (rows[-1]["iter"] if rows else 0),
            "wall_time_s": time.perf_counter() - t0,
        }
    )


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; anything else is checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ReprlabError(f"--device: unknown device {name!r}") from None
    if dev.type not in ("cpu", "cuda", "mps"):  # torch knows more (meta, xpu, ...); not run here
        raise ReprlabError(f"--device {name}: reprlab runs on cpu, cuda[:N] or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ReprlabError(f"--device {name}: no CUDA device available")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ReprlabError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            "numbered from 0"
        )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ReprlabError(f"--device {name}: MPS is not available")
    return dev


def peak_memory_mib(device: torch.device) -> dict[str, float]:
    """Peak memory in MiB: the process's resident set so far (``rss``, every stage of a pipeline
    that ran in this process included) and, on CUDA, the most the tensors held
    (``gpu_allocated``) and the caching allocator reserved (``gpu_reserved``) since the last
    ``torch.cuda.reset_peak_memory_stats`` (the training loop resets it when it starts)."""
    out: dict[str, float] = {}
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        out["rss"] = round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)
    except ImportError:  # Windows has no resource module
        pass
    if device.type == "cuda":
        out["gpu_allocated"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["gpu_reserved"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    return out


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX tiles or AVX512-BF16).

    Without them oneDNN emulates bf16, and a training step is about 3x *slower* than float32
    (``benchmarks/bench_triplets.py``: ``airbench_cpu`` at batch 256, channels_last, on a Xeon
    with AVX-512 but neither, 0.74 against 2.36 steps/s; with native bf16 it is ~2.4x faster
    than float32). ``REPRLAB_CPU_BF16=1`` / ``0`` overrides.
    """
    forced = os.environ.get("REPRLAB_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    probes = [getattr(torch.cpu, n, None) for n in ("_is_amx_tile_supported",
                                                     "_is_avx512_bf16_supported")]
    if all(p is not None for p in probes):
        return any(p() for p in probes)
    try:  # a torch without the probes: the kernel's CPU flags (Linux)
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def uses_bf16(device: torch.device, enabled: bool = True) -> bool:
    """Whether ``--autocast`` means bfloat16 on this device: on CUDA cards with bf16 (Ampere and
    later) and CPUs with native bf16; elsewhere float32 is the faster choice."""
    if not enabled:
        return False
    if device.type == "cuda":  # compute capability 8 (Ampere) on; torch's is_bf16_supported()
        # also says yes where bf16 is emulated (a T4 or V100), which is slower than float32
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8
    return device.type == "cpu" and cpu_has_native_bf16()


def autocast_ctx(device: torch.device, bf16: bool) -> Any:
    """bfloat16 autocast on ``device`` if ``bf16`` (decided once per run or call with
    :func:`uses_bf16`, not per step); a no-op otherwise."""
    return torch.autocast(device.type if bf16 else "cpu", dtype=torch.bfloat16, enabled=bf16)


class StepRNG:
    """Per-iteration generators derived from ``(seed, iteration)`` only (resume-safe)."""

    def __init__(self, seed: int, it: int):
        self.seed, self.it = seed, it
        self._torch: torch.Generator | None = None
        self._numpy: np.random.Generator | None = None

    @property
    def torch(self) -> torch.Generator:
        if self._torch is None:
            ss = np.random.SeedSequence([self.seed, self.it, 1])
            self._torch = torch.Generator().manual_seed(int(ss.generate_state(1, np.uint64)[0]))
        return self._torch

    @property
    def numpy(self) -> np.random.Generator:
        if self._numpy is None:
            self._numpy = np.random.default_rng([self.seed, self.it, 2])
        return self._numpy


def lr_multiplier(cfg: TrainConfig, it: int) -> float:
    """Learning-rate factor at iteration ``it`` (0-based): linear warmup, then the schedule."""
    if cfg.schedule == "onecycle":
        # one-cycle: warm up over the first 25% (or warmup_iters), then decay linearly to the end
        warm = cfg.warmup_iters or max(1, cfg.num_iters // 4)
    else:
        warm = cfg.warmup_iters
    if it < warm:
        if cfg.warmup_start:  # airbench: from warmup_start x lr at the first iteration
            return cfg.warmup_start + (1.0 - cfg.warmup_start) * it / warm
        return (it + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.num_iters - warm)
    t = min(1.0, (it - warm + 1) / span)
    lo = cfg.final_lr_frac
    if cfg.schedule == "cosine":
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))
    return lo + (1 - lo) * (1 - t)  # linear / onecycle tail


def lookahead_decay(it: int, num_iters: int) -> float:
    """airbench's lookahead decay after iteration ``it``: 0.95^5 (it/T)^3 (0 early on)."""
    return 0.95**5 * (it / max(1, num_iters)) ** 3


def param_groups(
    module: torch.nn.Module,
    weight_decay: float,
    lr: float | None = None,
    name: str = "",
    start_iter: int = 0,
    norm_lr_scale: float = 0.0,
) -> list[dict[str, Any]]:
    """Groups of ``module``'s trainable parameters: weights (ndim > 1) with ``weight_decay``,
    biases and norm parameters without (the usual recipe). ``lr`` (absolute, default: the
    config's), ``name`` and ``start_iter`` (frozen before that iteration) apply to all.

    ``norm_lr_scale > 0`` gives the BatchNorm biases (shifts) a group of their own with the
    learning rate times that scale and the weight decay divided by it, so they decay by the same
    fraction per step as the weights (airbench's ``bias_scaler`` of 64; its BatchNorm scales are
    frozen)."""
    norm_ids: set[int] = set()
    if norm_lr_scale > 0:
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.bias is not None:
                norm_ids.add(id(m.bias))
    trainable = [p for p in module.parameters() if p.requires_grad]
    norm = [p for p in trainable if id(p) in norm_ids]
    decay = [p for p in trainable if id(p) not in norm_ids and p.ndim > 1]
    no_decay = [p for p in trainable if id(p) not in norm_ids and p.ndim <= 1]
    groups = []
    for params, wd, suffix, scale in (
        (decay, weight_decay, "", 1.0),
        (no_decay, 0.0, "/no_decay", 1.0),
        (norm, weight_decay / max(norm_lr_scale, 1e-12), "/norm", norm_lr_scale),
    ):
        if params:
            g: dict[str, Any] = {"params": params, "weight_decay": wd, "name": name + suffix}
            g["start_iter"] = start_iter
            g["lr_scale"] = scale
            if lr is not None:
                g["lr"] = lr * scale
            groups.append(g)
    return groups


def make_optimizer(
    cfg: TrainConfig, params: Iterable[torch.nn.Parameter] | list[dict[str, Any]]
) -> torch.optim.Optimizer:
    """Adam (report), AdamW or SGD-Nesterov; ``params`` may be param groups with their own
    ``lr`` (absolute) and ``start_iter`` (the group is frozen before that iteration)."""
    groups = list(params)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    for g in groups:
        scale = g.pop("lr_scale", 1.0)
        g.setdefault("lr", cfg.lr * scale)
        g["base_lr"] = g["lr"]
        g.setdefault("start_iter", 0)
        g.setdefault("name", "")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def rng_state(device: torch.device) -> dict[str, Any]:
    """All global RNG states as tensors / plain Python data (loadable with weights_only)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": np_state[1].tolist(),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["name"],
            np.array(n["keys"], dtype=np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class EMA:
    """Exponential moving average of a model's parameters and float buffers."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.state = _state_copy(model)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, decay: float | None = None) -> None:
        """Average ``model`` in with ``decay`` (default: the one given at construction)."""
        d = self.decay if decay is None else decay
        for k, v in model.state_dict().items():
            e = self.state[k]
            if e.is_floating_point():
                e.lerp_(v.detach(), 1.0 - d)
            else:
                e.copy_(v)

    @torch.no_grad()
    def pull(self, model: torch.nn.Module, decay: float) -> None:
        """Average with ``decay``, then set ``model``'s weights to the average (lookahead)."""
        self.update(model, decay)
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                v.copy_(self.state[k])


@contextlib.contextmanager
def deterministic_algorithms(on: bool = True) -> Iterator[None]:
    """Run a block with ``torch.use_deterministic_algorithms`` (restored afterwards)."""
    if not on:
        yield
        return
    prev, prev_warn = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


class _SigintDeferred:
    """First Ctrl-C (or SIGTERM: ``kill``, a container or job scheduler stopping the run) sets a
    flag (the loop saves at the next iteration boundary and raises :meth:`interrupt`); a second
    one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.hit = False
        self.signum = signal.SIGINT
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _SigintDeferred:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.hit:  # the second: at once, as that signal
            raise self.interrupt(signum)
        self.hit, self.signum = True, signum

    def interrupt(self, signum: int | None = None) -> KeyboardInterrupt:
        """The exception for a signal (default: the first one): :class:`Terminated` for SIGTERM
        (the CLI exits 143), else :class:`KeyboardInterrupt` (130)."""
        sig = self.signum if signum is None else signum
        return Terminated() if sig == signal.SIGTERM else KeyboardInterrupt()

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


#: Iterations a time budget is rounded down to a multiple of (one log interval).
BUDGET_ROUND = 10
#: A timed run re-plans its count when, at its pace so far, it would end more than this
#: fraction of its training time away from its target end (a slower or faster machine).
REPLAN_TOLERANCE = 0.02


def iterations_that_fit(seconds: float, per_iter: float, minimum: int = BUDGET_ROUND) -> int:
    """Whole iterations of ``per_iter`` seconds in ``seconds``, rounded down to a multiple of
    :data:`BUDGET_ROUND`, at least ``minimum``."""
    n = int(max(0.0, seconds) / max(per_iter, 1e-9))
    return max(minimum, n - n % BUDGET_ROUND)


def fit_time_budget(
    cfg: TrainConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    update: Callable[[int], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    run_eval: Callable[[int], dict[str, float]],
    device: torch.device,
    steps: int = 8,
    warmup: int = 2,
) -> dict[str, Any]:
    """A time budget's measurements on this machine: a step's and an evaluation's seconds.

    Runs ``warmup + steps`` real updates and one evaluation, then puts the weights, optimiser
    state and every RNG back: the run that follows is the run ``--num_iters N`` would give.
    The timed updates use iterations far past the schedule's frozen phases, so they cost what
    a full step costs. The budget covers these seconds too (``calibration_s``); :func:`train`
    sizes the run from them.
    """
    t0 = time.perf_counter()
    saved_model = _state_copy(model)
    saved_opt = copy.deepcopy(optimizer.state_dict())
    saved_rng = rng_state(device)
    far = 1 << 40  # an iteration no schedule or frozen phase reaches
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        loss, _ = update(far + i)
        float(loss.detach())  # waits for the device
        times.append(time.perf_counter() - t)
    # the mean, not the median: a run's total is a sum, and slow steps are part of it
    step_s = float(np.mean(times[warmup:]))
    t = time.perf_counter()
    run_eval(far)
    eval_s = time.perf_counter() - t
    model.load_state_dict(saved_model)
    optimizer.load_state_dict(saved_opt)
    set_rng_state(saved_rng)
    return {
        "budget_s": cfg.time_budget,
        "calibration_s": time.perf_counter() - t0,
        "step_s": step_s,
        "eval_s": eval_s,
    }


def planned_count(cfg: TrainConfig, plan: dict[str, Any] | None) -> int:
    """The count a run was first planned for, which sizes its warm-up and early stopping's
    start (re-plans move only its end): its plan's, else its own ``num_iters``."""
    if plan is None:
        return cfg.num_iters
    return int(plan.get("planned_iters", plan["num_iters"]))


def planned_config(cfg: TrainConfig, plan: dict[str, Any]) -> TrainConfig:
    """``cfg`` as a plan sets it: the warm-up sized by the planned count, the end where the
    latest re-plan put it."""
    first = cfg.with_num_iters(planned_count(cfg, plan))
    n = int(plan["num_iters"])
    # a run cut inside its planned warm-up (a deadline close at hand) still decays to 0 by its
    # end: half of it warms up, half decays
    warm = first.warmup_iters if first.warmup_iters < n else n // 2
    return replace(first, num_iters=n, warmup_frac=None, warmup_iters=warm)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


class _LossMeter:
    """The training loss and a step's extras, summed on the device between two logged rows:
    one host sync a row. Its sums are part of a checkpoint (a resumed run logs the same rows)."""

    def __init__(
        self,
        device: torch.device,
        loss_sum: torch.Tensor | None = None,
        count: int = 0,
        extra_sums: dict[str, torch.Tensor] | None = None,
    ):
        self.device = device
        self.loss_sum = (
            loss_sum if loss_sum is not None
            else torch.zeros((), device=device, dtype=torch.float32)
        )  # fmt: skip
        self.count = count
        self.extra_sums = dict(extra_sums or {})

    def add(self, loss: torch.Tensor, extras: dict[str, torch.Tensor]) -> None:
        self.loss_sum += loss.detach().float()
        self.count += 1
        for k, v in extras.items():
            v = torch.as_tensor(v, device=self.device).detach().float()
            self.extra_sums[k] = self.extra_sums[k] + v if k in self.extra_sums else v.clone()

    def take(self, it: int) -> tuple[float, dict[str, float]]:
        """The means since the last row (then start again); a NaN or Inf loss raises."""
        mean = float(self.loss_sum) / max(1, self.count)
        if not math.isfinite(mean):
            raise _NonFinite(it, mean)
        extras = {k: float(v) / self.count for k, v in self.extra_sums.items()}
        self.loss_sum.zero_()
        self.count, self.extra_sums = 0, {}
        return mean, extras

    def state(self) -> dict[str, Any]:
        """The checkpoint's keys for the sums (read back by :meth:`from_state`)."""
        return {
            "loss_sum": self.loss_sum.detach().cpu(),
            "loss_count": self.count,
            "extra_sums": {k: v.detach().cpu() for k, v in self.extra_sums.items()},
        }

    @classmethod
    def from_state(cls, ck: dict[str, Any], device: torch.device) -> _LossMeter:
        return cls(
            device,
            ck["loss_sum"].to(device),
            int(ck["loss_count"]),
            {k: v.to(device) for k, v in ck["extra_sums"].items()},
        )


class _Plan:
    """Where a run should end, by the clock: the end of its ``--time_budget`` (which counts the
    timing and the training seconds of earlier sessions of the run) and the caller's
    ``deadline`` less its work after training, whichever comes first (``perf_counter`` times).

    ``budget`` is the plan kept in the checkpoint: :func:`fit_time_budget`'s measurements, the
    count first planned (``planned_iters``, which sizes the warm-up and early stopping's start)
    and the latest end (``num_iters``, which re-plans move), with a record of each re-plan.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        budget: dict[str, Any] | None,
        it0: int,
        elapsed0: float,
        deadline_pc: float | None,
        after_evals: float,
    ):
        self.unplanned = cfg  # every plan and re-plan is applied to it (planned_config)
        self.budget = budget
        self.it0 = it0
        self.t_start = time.perf_counter()
        self.budget_end = (
            self.t_start + budget["budget_s"] - budget["calibration_s"] - elapsed0
            if budget is not None and budget.get("budget_s")
            else None
        )
        # an evaluation's seconds: timed at the start, then the latest one
        self.eval_s = float(budget["eval_s"]) if budget is not None and "eval_s" in budget else 0.0
        self.deadline_pc, self.after_evals = deadline_pc, after_evals
        # a counted run (no budget's end) never grows past its count, as planned so far
        self.most = (
            None if self.budget_end is not None
            else int(budget["num_iters"]) if budget is not None
            else cfg.num_iters
        )  # fmt: skip
        self.pace = 0.0  # seconds an iteration, at the latest re-plan check

    def end_by(self) -> float | None:
        ends = [self.budget_end]
        if self.deadline_pc is not None:
            ends.append(self.deadline_pc - self.after_evals * self.eval_s)
        return min((e for e in ends if e is not None), default=None)

    def first(self, eval_every: int) -> None:
        """Size a freshly timed run: its steps, with an evaluation every ``eval_every`` of them
        and one more at the end, fill the time to its end."""
        budget, end = self.budget, self.end_by()
        assert budget is not None and end is not None
        n = iterations_that_fit(
            end - self.t_start - self.eval_s, budget["step_s"] + self.eval_s / eval_every
        )
        budget.update(num_iters=n, planned_iters=n, replans=[])
        if self.deadline_pc is not None:  # seconds left to the deadline when the timing began
            left = self.deadline_pc - self.t_start + budget["calibration_s"]
            budget.update(deadline_s=left, after_s=self.after_evals * self.eval_s)

    def config(self) -> TrainConfig:
        """The run's configuration as planned (the count, the warm-up)."""
        if self.budget is None:
            return self.unplanned
        return planned_config(self.unplanned, self.budget)

    def replan(self, it: int, num_iters: int) -> int | None:
        """At an evaluation: the new end, if the run should move it so that, at this session's
        pace so far (steps, evaluations and checkpoints; the mean, which rides out the
        minute-long swings of a shared machine), it ends when it should; else None."""
        now, target = time.perf_counter(), self.end_by()
        if target is None or it >= num_iters:
            return None
        pace = self.pace = (now - self.t_start) / max(1, it - self.it0)
        projected = now + (num_iters - it) * pace + self.eval_s  # and the final evaluation
        # a move smaller than one step of the rounding is noise (on a short budget, where
        # BUDGET_ROUND iterations exceed the tolerance, the end would swing back and forth)
        tolerance = max(REPLAN_TOLERANCE * max(1e-9, target - self.t_start), BUDGET_ROUND * pace)
        if abs(projected - target) <= tolerance:
            return None
        # the new end: the last multiple of BUDGET_ROUND that fits (never before this
        # iteration); rounded once, the end itself, not the count from here
        last = it + int(max(0.0, target - now - self.eval_s) / max(pace, 1e-9))
        n = max(it, last - last % BUDGET_ROUND)
        n = n if self.most is None else min(n, self.most)
        if n == num_iters:
            return None
        if self.budget is None:  # a counted run the deadline shortens
            self.budget = {"budget_s": 0.0, "num_iters": num_iters,
                           "planned_iters": num_iters, "replans": []}  # fmt: skip
        self.budget["num_iters"] = n
        self.budget.setdefault("replans", []).append(
            {"iter": it, "iter_s": round(pace, 4), "num_iters": n}
        )
        return n


def train(
    model: torch.nn.Module,
    sample: Callable[[int, StepRNG], Any],
    step: Callable[[Any], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    cfg: TrainConfig,
    *,
    params: Iterable[torch.nn.Parameter] | list[dict[str, Any]] | None = None,
    evaluate: Callable[[int], dict[str, float]] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    on_train_mode: Callable[[torch.nn.Module, int], None] | None = None,
    deadline: float | None = None,
    after_evals: float = 0.0,
) -> TrainResult:
    """Train ``model`` in place; see the module docstring.

    ``meta`` (architecture name, z_dim, ...) is stored in the checkpoint and must match on
    resume. ``on_train_mode(model, it)`` lets a mode adjust train/eval modes per iteration
    (e.g. keep a frozen encoder's BatchNorm in eval mode). Returns a :class:`TrainResult`; the
    model ends with the lookahead's slow weights when it reaches ``num_iters`` with
    ``lookahead`` (airbench), else the best weights (``restore_best``), else the EMA weights
    (``ema_decay > 0``); ``TrainResult.weights`` says which.

    Timed runs: ``cfg.time_budget`` sizes ``num_iters`` by the clock (:func:`fit_time_budget`);
    ``deadline`` (a ``time.time()``) is when the caller must be done, ``after_evals`` evaluations
    after training included. Either way the run re-plans its end at each evaluation
    (``cfg.replan``; :class:`_Plan`); a counted run under a deadline only ever shortens.
    """
    cfg.validate()
    # the deadline on this process's monotonic clock
    deadline_pc = None if deadline is None else time.perf_counter() + deadline - time.time()
    device = pick_device(cfg.device)
    bf16 = uses_bf16(device, cfg.autocast)
    meta = dict(meta or {})
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, params if params is not None else model.parameters())
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    slow = EMA(model, 0.0) if cfg.lookahead else None
    stopper = EarlyStopping(cfg.patience, metric=cfg.early_stop_metric, min_delta=cfg.min_delta)

    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_path = run_dir / "checkpoint.pt" if run_dir is not None else None
    metrics_path = run_dir / "metrics.jsonl" if run_dir is not None else None

    it0, rows, elapsed0 = 0, [], 0.0
    budget: dict[str, Any] | None = None  # a timed run's plan (fit_time_budget)
    meter = _LossMeter(device)
    resumed_from = None
    if resume and ckpt_path is not None and ckpt_path.exists():
        r = _restore(ckpt_path, meta, cfg, device, model, optimizer, ema, slow, stopper)
        it0, rows, elapsed0, meter, budget = r
        resumed_from = it0
    elif resume and ckpt_path is not None and cfg.progress:
        tqdm.write(f"{cfg.desc}: no checkpoint in {ckpt_path.parent}: starting from the "
                   "beginning", file=sys.stderr)  # fmt: skip
    if ckpt_path is not None:
        _checkpoint_ready(ckpt_path)

    def checkpoint(it: int) -> None:
        if ckpt_path is None:
            return
        if not all(
            bool(torch.isfinite(t).all())
            for t in model.state_dict().values()
            if t.is_floating_point()
        ):
            raise _NonFinite(it, float("nan"))  # never overwrite a good checkpoint with NaNs
        save_checkpoint(
            ckpt_path,
            {
                "version": CHECKPOINT_VERSION,
                "meta": meta,
                "iter": it,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "ema": ema.state if ema is not None else None,
                "lookahead": slow.state if slow is not None else None,
                "early_stopping": stopper.state_dict(),
                "best_state": stopper.best_state,
                "rows": rows,
                "elapsed_s": elapsed0 + (time.perf_counter() - plan.t_start),
                **meter.state(),
                "rng": rng_state(device),
                "train_config": _plain(asdict(cfg)),
                "time_budget": plan.budget,
            },
        )
        if metrics_path is not None:
            write_jsonl(metrics_path, rows)

    def run_eval(it: int) -> dict[str, float]:
        if evaluate is None:
            return {}
        saved = None
        if ema is not None:
            saved = _state_copy(model)
            model.load_state_dict(ema.state)
        model.eval()
        with torch.no_grad(), autocast_ctx(device, bf16):
            out = {k: float(v) for k, v in evaluate(it).items()}
        if saved is not None:
            model.load_state_dict(saved)
        return out

    def early_stop(it: int, value: float) -> bool:
        """One check of the stopping metric at iteration ``it``; those before ``stop_from``
        are ignored."""
        best = ema.state if ema is not None else model.state_dict()
        return stopper.update(it, value, state=best, start=stop_from)

    def update(it: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One iteration: sample, forward, backward, optimiser step."""
        mult = lr_multiplier(cfg, it)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * mult
        model.train()
        if on_train_mode is not None:
            on_train_mode(model, it)
        batch = sample(it, StepRNG(cfg.seed, it))
        with autocast_ctx(device, bf16):
            loss, extras = step(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for g in optimizer.param_groups:
            if it < g["start_iter"]:  # frozen group (e.g. encoder while the head warms up)
                for p in g["params"]:
                    p.grad = None
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        return loss, extras

    timed_now = budget is None and cfg.time_budget > 0  # a fresh timed run: time it first
    if timed_now:
        with deterministic_algorithms(cfg.deterministic and device.type == "cpu"):
            budget = fit_time_budget(cfg, model, optimizer, update, run_eval, device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    plan = _Plan(cfg, budget, it0, elapsed0, deadline_pc, after_evals)  # starts the clock
    if timed_now:
        plan.first(cfg.eval_every)
    cfg = plan.config()
    timed = plan.budget is not None and "step_s" in plan.budget  # not only cut by a deadline
    if cfg.progress and timed:
        tqdm.write(
            f"{cfg.desc}: --time_budget {cfg.time_budget:g} s: {plan.budget['step_s']:.3f} s a "
            f"step, {plan.budget['eval_s']:.2f} s an evaluation -> {cfg.num_iters} iterations",
            file=sys.stderr,
        )
    # early stopping's first check: a fraction of the run as first planned (a re-plan moves the
    # end, not this, so a best value kept before a re-plan is never behind the start)
    stop_from = round(cfg.early_stop_from * planned_count(cfg, plan.budget))

    stop_reason, it = "num_iters", it0
    # a resumed finished run does no iteration: its last logged loss is the checkpoint's
    last_loss: float | None = rows[-1]["train_loss"] if rows else None
    bar = tqdm(
        total=cfg.num_iters,
        initial=it0,
        desc=cfg.desc,
        disable=not cfg.progress,
        leave=False,
        dynamic_ncols=True,
    )

    def replan(it: int) -> TrainConfig:
        """At an evaluation: the configuration with its end moved where the pace says (the
        decay and lookahead follow the new end), or as it is."""
        n = plan.replan(it, cfg.num_iters)
        if n is None:
            return cfg
        bar.total = n
        bar.refresh()
        if cfg.progress:
            tqdm.write(f"{cfg.desc}: {plan.pace:.3f} s an iteration at {it}: to end in time, "
                       f"{n} iterations", file=sys.stderr)  # fmt: skip
        return plan.config()

    stop_now = stopper.should_stop
    try:
        with (
            _SigintDeferred() as sigint,
            deterministic_algorithms(cfg.deterministic and device.type == "cpu"),
        ):
            while it < cfg.num_iters and not stop_now:
                loss, extras = update(it)
                if ema is not None:
                    ema.update(model)
                if slow is not None and (it + 1) % 5 == 0:
                    slow.pull(model, lookahead_decay(it + 1, cfg.num_iters))
                meter.add(loss, extras)
                it += 1
                bar.update(1)

                # ---- logging (one host sync every log_every iterations) ------------------
                do_eval = it % cfg.eval_every == 0 or it == cfg.num_iters
                if it % cfg.log_every == 0 or do_eval:
                    last_loss, means = meter.take(it)
                    row: dict[str, Any] = {
                        "iter": it,
                        "train_loss": last_loss,
                        "lr": optimizer.param_groups[0]["lr"],
                        **means,
                    }
                    shown = {"loss": f"{last_loss:.4f}"}
                    if cfg.early_stop_metric == "train_loss":
                        stop_now = early_stop(it, last_loss)
                    if do_eval:
                        t_ev = time.perf_counter()
                        ev = run_eval(it)
                        plan.eval_s = time.perf_counter() - t_ev
                        row.update(ev)
                        shown.update({k: f"{v:.4f}" for k, v in ev.items()})
                        if cfg.early_stop_metric != "train_loss":
                            if cfg.early_stop_metric not in ev:
                                raise ReprlabError(
                                    f"early stopping metric {cfg.early_stop_metric!r} is not "
                                    f"computed (have {sorted(ev)})"
                                )
                            stop_now = early_stop(it, ev[cfg.early_stop_metric])
                    bar.set_postfix(shown, refresh=False)
                    row["elapsed_s"] = round(elapsed0 + time.perf_counter() - plan.t_start, 3)
                    rows.append(row)
                    if do_eval:
                        if metrics_path is not None:
                            write_jsonl(metrics_path, rows)
                        if cfg.replan:
                            cfg = replan(it)
                # every checkpoint_every iterations, logged or not (the partial loss sums are
                # part of the checkpoint); NaN weights are refused by checkpoint() itself
                if cfg.checkpoint_every and it % cfg.checkpoint_every == 0:
                    checkpoint(it)
                if sigint.hit:
                    checkpoint(it)
                    raise sigint.interrupt()
            checkpoint(it)  # final state (resuming a finished run is then a no-op)
    except _NonFinite as e:
        bar.close()
        if metrics_path is not None:
            write_jsonl(metrics_path, rows)
        where = (
            f"; the last good checkpoint is {ckpt_path}"
            if ckpt_path is not None and ckpt_path.exists()
            else "; no checkpoint had been saved yet"
        )
        raise TrainingFailed(
            f"loss became {e.value} by iteration {e.it} (try a lower --lr){where}", e.it
        ) from None
    except KeyboardInterrupt:
        bar.close()
        raise
    bar.close()

    if stop_now:
        stop_reason = "early_stopping"
    weights = "last"
    if ema is not None:
        model.load_state_dict(ema.state)
        weights = "ema"
    if slow is not None and not stop_now:  # airbench ends on the slow weights
        model.load_state_dict(slow.state)
        weights = "lookahead"
    elif cfg.restore_best and stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
        weights = "best"
    wall = elapsed0 + time.perf_counter() - plan.t_start
    return TrainResult(
        status="finished",
        stop_reason=stop_reason,
        iterations=it,
        rows=rows,
        wall_time_s=wall,
        best=None if math.isinf(stopper.best) else stopper.best,
        best_iter=stopper.best_step,
        final_loss=last_loss,
        resumed_from=resumed_from,
        earlier_s=elapsed0,
        steps_per_s=it / max(1e-9, wall),  # of the whole run, resumed sessions included
        peak_memory_mib=peak_memory_mib(device),
        precision="bfloat16" if bf16 else "float32",
        time_budget=plan.budget,
        weights=weights,
    )


class _Restored(NamedTuple):
    """What :func:`_restore` gives back to the loop besides the objects it loads in place."""

    it: int
    rows: list[dict[str, Any]]
    elapsed_s: float  # training seconds of the sessions before
    meter: _LossMeter  # the partial sums of the loss since the last logged row
    budget: dict[str, Any] | None  # a timed run's plan, as started and re-planned


def _restore(
    path: Path,
    meta: dict[str, Any],
    cfg: TrainConfig,
    device: torch.device,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    slow: EMA | None,
    stopper: EarlyStopping,
) -> _Restored:
    """Load the checkpoint at ``path`` into the model, optimiser, averages and stopper, and set
    every RNG as it was; the rest of the loop's state comes back. A checkpoint of another model
    or run is a one-line :class:`ReprlabError`."""
    ck = load_checkpoint(path)
    _check_meta(path, ck, meta)
    try:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ReprlabError(f"{path}: does not fit this model ({one_line(e, 200)})") from None
    try:  # a file that loads (plain data only) but is not what checkpoint() writes
        if ema is not None and ck.get("ema") is not None:
            ema.state = {k: v.to(device) for k, v in ck["ema"].items()}
        if slow is not None and ck.get("lookahead") is not None:
            slow.state = {k: v.to(device) for k, v in ck["lookahead"].items()}
        stopper.load_state_dict(ck["early_stopping"])
        stopper.best_state = ck.get("best_state")
        restored = _Restored(
            int(ck["iter"]),
            list(ck["rows"]),
            float(ck["elapsed_s"]),
            _LossMeter.from_state(ck, device),
            # the count the run was started with (and re-planned to), not a new timing
            ck.get("time_budget"),
        )
        set_rng_state(ck["rng"])
        end = restored.budget["num_iters"] if restored.budget is not None else cfg.num_iters
        if not (
            0 <= restored.it <= end and all(isinstance(r, dict) for r in restored.rows)
        ):
            raise ValueError(f"iteration {restored.it} of {end}")
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise ReprlabError(
            f"{path}: not a checkpoint of this run ({one_line(e, 120)}); pass --overwrite to "
            "start again"
        ) from None
    if cfg.time_budget > 0 and (restored.budget is None or not restored.budget.get("budget_s")):
        raise ReprlabError(f"{path}: was not started with a --time_budget")
    # said with progress bars or without (a log of a --no-progress run shows where it resumed)
    tqdm.write(f"{cfg.desc}: resuming at iteration {restored.it} of {end} from {path}",
               file=sys.stderr)  # fmt: skip
    return restored


class _NonFinite(Exception):
    def __init__(self, it: int, value: float):
        self.it, self.value = it, value


def _check_meta(path: Path, ck: dict[str, Any], meta: dict[str, Any]) -> None:
    if ck.get("version") != CHECKPOINT_VERSION or "model" not in ck:
        raise ReprlabError(f"{path}: not a reprlab training checkpoint")
    old = ck.get("meta") or {}
    diff = [k for k in sorted(set(old) | set(meta)) if old.get(k) != meta.get(k)]
    if diff:
        what = ", ".join(f"{k}={old.get(k)!r} (now {meta.get(k)!r})" for k in diff)
        raise ReprlabError(f"{path}: checkpoint of another model: {what}")


def _checkpoint_ready(path: Path) -> None:
    """Create the checkpoint's folder before any training."""
    path.parent.mkdir(parents=True, exist_ok=True)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
