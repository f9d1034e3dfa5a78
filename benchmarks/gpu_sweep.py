"""Recipe research on a lent GPU (not in CI): a queue of short ``reprlab`` runs in parallel.

A GPU runs the CPU recipes' short trainings in seconds, so one device session can compare many
variants of ``cont_rep`` / ``fine_tune_linear`` / ``fine_tune_nn`` at the *iteration counts* the
2-core CPU affords (the accuracy after N steps does not depend on the device). Each job is a real
``reprlab`` command; this script only schedules them (``--workers`` at a time, dependencies,
a deadline) and appends every finished run's summary to ``results.jsonl``.

Two research encoders are registered for the width study (not in the library): ``airbench_w16``
(widths 16/64/256) and ``airbench_w96`` (32/96/192); on this CPU their steps cost about 1/1.7
and 1/1.2 of ``airbench_cpu``'s, so they get that many more iterations.

    python benchmarks/gpu_sweep.py --data D --out runs/gpu-sweep --workers 5 --deadline 400
    python benchmarks/gpu_sweep.py --run cont_rep --encoder airbench_w16 ...   # one job
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# name, mode, extra flags, dependency (a job whose run folder is the --encoder_path)
C = "cont_rep"
F = "fine_tune_nn"
L = "fine_tune_linear"
Job = tuple[str, str, list[str], str | None]
# the encoder as initialised, for fine-tuning from scratch (the sessions of 2026-11-27/28, before
# `cont_rep --num_iters 0` existed, ran 1 iteration at lr 1e-9: the same weights, with the
# BatchNorm statistics of one batch)
R = ["--num_iters", "0"]
# the first lent session (2026-11-27): variants of the fast recipe at the CPU's iteration counts
RECIPES: list[Job] = [
    ("c0", C, [], None),
    ("l_c0", L, [], "c0"),
    ("f_c0", F, [], "c0"),
    ("c_w16", C, ["--encoder", "airbench_w16", "--num_iters", "3100", "--warmup_iters", "620"],
     None),
    ("c_m01", C, ["--margin", "0.1"], None),
    ("c_m03", C, ["--margin", "0.3"], None),
    ("c_semihard", C, ["--mining", "semihard"], None),
    ("c_2300", C, ["--num_iters", "2300", "--warmup_iters", "460"], None),
    ("f_c0_ls01", F, ["--label_smoothing", "0.1"], "c0"),
    ("f_c0_2400", F, ["--num_iters", "2400", "--warmup_iters", "480"], "c0"),
    ("c_init", C, R, None),
    ("f_init_3300", F, ["--num_iters", "3300", "--warmup_iters", "660"], "c_init"),
    ("c_w96", C, ["--encoder", "airbench_w96", "--num_iters", "2150", "--warmup_iters", "430"],
     None),
    ("c_z256", C, ["--z_dim", "256"], None),
    ("f_c0_warm100", F, ["--warmup_iters", "100"], "c0"),
    ("f_c0_lin", F, ["--head", "linear"], "c0"),
    ("c_lr075", C, ["--lr", "0.75"], None),
    ("c_lr17", C, ["--lr", "1.7"], None),
    ("c_t4", C, ["--translate", "4"], None),
    ("f_init_1500", F, [], "c_init"),
    ("c_3600", C, ["--num_iters", "3600", "--warmup_iters", "720"], None),
    ("c_wd2", C, ["--weight_decay", "0.000888"], None),
    ("f_c0_freeze100", F, ["--freeze_encoder_iters", "100"], "c0"),
    # the same comparison on another split, initialisation and sampling (seed 1): noise check
    ("c0_s1", C, ["--seed", "1"], None),
    ("c_2300_s1", C, ["--seed", "1", "--num_iters", "2300", "--warmup_iters", "460"], None),
]
for _name, _mode, _flags, _dep in list(RECIPES):  # a linear probe of every finished encoder
    if _mode == C and _name not in ("c0", "c_init"):
        RECIPES.append((f"l_{_name}", L, [], _name))

# the second (2026-11-28): how far more compute takes the same recipes, at batch 256 as on the
# CPU. The fast pipeline spends ~2100 cont_rep + 1500 fine_tune_nn steps of airbench_cpu; here
# 2x the triplet steps, the wide airbench encoder, and plain supervised training of both nets
# from a random start (no cont_rep) for 10, 25 and 50 epochs of the 40k training split. Longest
# first; no early stopping (patience 0), so each runs its steps.
SUP = ["--warmup_frac", "0.2", "--patience", "0"]  # airbench's 20 % warm-up from scratch
CEILING: list[Job] = [
    ("c_4200", C, ["--num_iters", "4200"], None),
    ("i_ab", C, ["--encoder", "airbench", *R], None),
    ("s_ab_7800", F, ["--num_iters", "7800", *SUP], "i_ab"),
    ("c_ab_2100", C, ["--encoder", "airbench"], None),
    ("i_cpu", C, R, None),
    ("s_cpu_7800", F, ["--num_iters", "7800", *SUP], "i_cpu"),
    ("s_ab_3900", F, ["--num_iters", "3900", *SUP], "i_ab"),
    ("s_ab_1560", F, ["--num_iters", "1560", *SUP], "i_ab"),
    ("f_c_4200", F, [], "c_4200"),
    ("l_c_4200", L, [], "c_4200"),
    ("f_c_ab_2100", F, [], "c_ab_2100"),
    ("l_c_ab_2100", L, [], "c_ab_2100"),
    ("s_cpu_3900", F, ["--num_iters", "3900", *SUP], "i_cpu"),
]
# the third (2026-11-28, beside `pipeline --preset gpu`, which trains airbench_wide with the
# fast recipes): the same net with 4-pixel translations (airbench96 trains with 4 + cutout),
# and plain supervised training of it for 25 epochs, the pipeline's fine-tuning length
WIDE_NET = ["--encoder", "airbench_wide"]
WIDE: list[Job] = [
    ("i_w", C, [*WIDE_NET, *R], None),
    ("c_w_t4", C, [*WIDE_NET, "--num_iters", "4200", "--translate", "4"], None),
    ("s_w_3900", F, ["--num_iters", "3900", *SUP], "i_w"),
    ("l_c_w_t4", L, [], "c_w_t4"),
    ("f_c_w_t4", F, ["--num_iters", "3900", "--translate", "4"], "c_w_t4"),
]
SETS = {"recipes": RECIPES, "ceiling": CEILING, "wide": WIDE}


COMMON = {
    C: ["--no-tsne", "--checkpoint_every", "0"],
    L: [],
    F: ["--checkpoint_every", "0"],
}


def register_research_encoders() -> None:
    """Add the width-study encoders to the library's registry (this process only)."""
    from reprlab.encoders import ENCODERS, airbench_at

    ENCODERS["airbench_w16"] = airbench_at((16, 64, 256))
    ENCODERS["airbench_w96"] = airbench_at((32, 96, 192))


def schedule(a: argparse.Namespace) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    t0 = time.time()
    jobs = SETS[a.set]
    pending = [j for j in jobs if not a.only or j[0] in a.only.split(",")]
    running: dict[str, tuple[subprocess.Popen, float, list[str]]] = {}
    done = {j[0]: 0 for j in jobs if (out / j[0] / "summary.json").exists()}  # earlier runs
    pending = [j for j in pending if j[0] not in done]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONUNBUFFERED": "1"}

    def gate_open() -> bool:
        return (not a.wait_for or Path(a.wait_for).exists() or time.time() - t0 > a.wait_max)

    while pending or running:
        left = a.deadline - (time.time() - t0)
        for name, (p, start, cmd) in list(running.items()):
            if p.poll() is None and left > 0:
                continue
            if p.poll() is None:
                p.terminate()
                p.wait()
            del running[name]
            done[name] = p.returncode
            row: dict = {"job": name, "rc": p.returncode, "cmd": cmd[3:],
                         "job_s": round(time.time() - start, 1)}
            summary = out / name / "summary.json"
            if summary.exists():
                s = json.loads(summary.read_text())
                s.pop("classification_report", None)
                row.update(s)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[{time.time() - t0:6.0f}s] {name} rc={p.returncode} "
                  f"knn={row.get('knn_acc')} val_acc={row.get('val_acc')}", flush=True)
        if left <= 0:
            print(f"deadline: {len(pending)} jobs not started", flush=True)
            break
        is_open = gate_open()
        slots = (a.workers if is_open else a.workers_before) - len(running)
        for job in list(pending):
            if slots <= 0:
                break
            name, mode, flags, dep = job
            if not is_open and name not in a.early.split(","):
                continue
            if dep is not None and dep not in done:
                if not any(dep == j[0] for j in pending) and dep not in running:
                    pending.remove(job)  # its dependency never ran
                continue
            pending.remove(job)
            if dep is not None and done[dep] != 0:
                continue
            cmd = [sys.executable, __file__, "--run", mode, "--data", a.data,
                   "--out", str(out / name), "--device", a.device, "--no-progress",
                   *COMMON[mode], *flags, *a.extra.split()]
            if dep is not None:
                cmd += ["--encoder_path", str(out / dep / "encoder.pt")]
            log = (out / f"{name}.log").open("w")
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                              env=env), time.time(), cmd)
            slots -= 1
            print(f"[{time.time() - t0:6.0f}s] start {name}", flush=True)
        time.sleep(1)


def main() -> None:
    if "--run" in sys.argv:  # one job: the reprlab CLI with the research encoders known
        i = sys.argv.index("--run")
        register_research_encoders()
        from reprlab.cli import main as cli

        sys.exit(cli([sys.argv[i + 1], *sys.argv[1:i], *sys.argv[i + 2:]]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workers", type=int, default=5)
    ap.add_argument("--workers_before", type=int, default=0,
                    help="jobs at a time until --wait_for exists (or --wait_max seconds pass)")
    ap.add_argument("--wait_for", help="a file whose appearance opens all --workers slots")
    ap.add_argument("--wait_max", type=float, default=0.0)
    ap.add_argument("--early", default="c0", help="the jobs that may start before the gate")
    ap.add_argument("--deadline", type=float, default=400.0, help="seconds; then stop all")
    ap.add_argument("--threads", type=int, default=2, help="OMP threads per job")
    ap.add_argument("--set", default="recipes", choices=sorted(SETS), help="which job list")
    ap.add_argument("--only", help="comma-separated job names")
    ap.add_argument("--extra", default=os.environ.get("SWEEP_JOB_FLAGS", ""),
                    help="flags added to every job (e.g. '--limit 600')")
    schedule(ap.parse_args())


if __name__ == "__main__":
    main()
