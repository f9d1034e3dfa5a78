"""The one early-stopping helper, used by every trainer (report, Algorithm 1).

    stopper = EarlyStopping(patience=50, metric="val_loss")
    for it in ...:
        ...
        if stopper.update(it, val_loss, state=model_state):   # True when it is time to stop
            break
    best = stopper.best_state                                 # restore the best weights

``patience`` counts evaluations without improvement; ``patience <= 0`` disables stopping
(the best state is still tracked, so the best weights can be restored at the end).
``update(..., start=N)`` ignores evaluations before step N (Keras's ``start_from_epoch``): a
warm-up in which no improvement is expected neither counts nor is kept as the best.
"""

from __future__ import annotations

import copy
import math
from typing import Any

MAXIMISE = {"val_acc", "acc", "accuracy", "knn_acc"}


class EarlyStopping:
    def __init__(
        self,
        patience: int = 0,
        metric: str = "val_loss",
        min_delta: float = 0.0,
        mode: str | None = None,
    ):
        if mode is None:
            mode = "max" if metric in MAXIMISE else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.patience = patience
        self.metric = metric
        self.min_delta = min_delta
        self.mode = mode
        self.best: float = -math.inf if mode == "max" else math.inf
        self.best_step: int | None = None
        self.best_state: Any = None
        self.bad_evals = 0
        self.stopped_step: int | None = None

    def improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, step: int, value: float, state: Any = None, start: int = 0) -> bool:
        """Record one evaluation; keep a copy of ``state`` if it is the best so far. An
        evaluation before step ``start`` is ignored.

        Returns True when training should stop.
        """
        if step < start:
            return False
        if self.improved(value):
            self.best, self.best_step, self.bad_evals = float(value), step, 0
            if state is not None:
                self.best_state = copy.deepcopy(state)
        else:
            self.bad_evals += 1
        if self.patience > 0 and self.bad_evals >= self.patience:
            self.stopped_step = step
            return True
        return False

    @property
    def should_stop(self) -> bool:
        return self.stopped_step is not None

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (the best state itself is saved by the trainer)."""
        return {
            "best": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "stopped_step": self.stopped_step,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.best = float(d["best"])
        self.best_step = d["best_step"]
        self.bad_evals = int(d["bad_evals"])
        self.stopped_step = d["stopped_step"]
