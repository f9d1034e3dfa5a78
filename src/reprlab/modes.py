"""The registry of commands, and running a mode from plain values (:func:`run_mode`, what the
CLI, ``pipeline`` and ``sweep`` call). The CLI imports only the module of the command it runs.

A *mode* is a training command made of a config dataclass and a ``run(cfg) -> summary`` function.
A *tool* is any other command; its module provides ``add_arguments(parser)`` and
``main(args) -> int``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from reprlab.config import build, from_mapping
from reprlab.errors import ReprlabError


@dataclass(frozen=True)
class Mode:
    name: str
    help: str
    module: str
    config: str  # name of the RunConfig subclass in ``module``
    run: str  # name of ``run(cfg) -> dict`` in ``module``

    def load(self) -> tuple[type, Any]:
        mod = importlib.import_module(self.module)
        return getattr(mod, self.config), getattr(mod, self.run)


MODES: dict[str, Mode] = {
    m.name: m
    for m in [
        Mode(
            "logistic",
            "binary logistic regression on pixels (NumPy, from scratch)",
            "reprlab.linear_modes",
            "LogisticConfig",
            "run_logistic",
        ),
        Mode(
            "softmax",
            "multi-class softmax regression on pixels (NumPy, from scratch)",
            "reprlab.linear_modes",
            "SoftmaxConfig",
            "run_softmax",
        ),
        Mode(
            "cont_rep",
            "train a CNN encoder with the triplet margin loss; kNN and t-SNE",
            "reprlab.contrastive",
            "ContRepConfig",
            "run_cont_rep",
        ),
        Mode(
            "fine_tune_linear",
            "softmax regression on frozen encoder embeddings",
            "reprlab.finetune",
            "FineTuneLinearConfig",
            "run_fine_tune_linear",
        ),
        Mode(
            "fine_tune_nn",
            "encoder + MLP head trained end to end",
            "reprlab.finetune",
            "FineTuneNNConfig",
            "run_fine_tune_nn",
        ),
    ]
}

#: The pipeline's stages, in the course report's order (``pipeline`` runs them, ``report``
#: shows them so).
PIPELINE_STAGES: tuple[str, ...] = (
    "logistic", "softmax", "cont_rep", "fine_tune_linear", "fine_tune_nn"
)  # fmt: skip

# Other commands: name -> (help, module)
TOOLS: dict[str, tuple[str, str]] = {
    "predict": ("predict labels with a finished run's model", "reprlab.predict"),
    "pipeline": ("run every mode and write one HTML report", "reprlab.pipeline"),
    "sweep": ("run a mode over a grid of flags and compare the runs", "reprlab.sweep"),
    "report": ("write the HTML report of a pipeline or run folder", "reprlab.report"),
}


def config_for(mode: str, overrides: dict[str, Any], preset: str | None = None) -> Any:
    """A mode's validated config: preset (or the class defaults), then ``overrides``."""
    cls, _ = MODES[mode].load()
    presets = getattr(cls, "PRESETS", None)
    base = None
    if presets:
        name = preset or cls.DEFAULT_PRESET
        if name not in presets:
            raise ReprlabError(f"--preset: unknown preset {name!r} (choose from {sorted(presets)})")
        base = from_mapping(cls, presets[name], where=f"preset {name!r}")
    return build(cls, overrides, base)


def with_inherited(mode: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` (flags a user set) and the defaults the mode takes from its inputs where they
    leave them out (``inherited_defaults``: a fine-tuning run, the split of the encoder's run).
    The commands apply it where the user's flags are known, before a run is planned."""
    cls, _ = MODES[mode].load()
    inherited = getattr(cls, "inherited_defaults", None)
    return given if inherited is None else {**inherited(given), **given}


def run_mode(
    mode: str, overrides: dict[str, Any], preset: str | None = None, **runtime: Any
) -> dict[str, Any]:
    """Run ``mode``; ``runtime`` (e.g. the pipeline's ``deadline``) goes to its run function.
    ``overrides`` are taken as they are: a caller that wants a fine-tuning run to split as its
    encoder's run passes them through :func:`with_inherited` first, as the commands do."""
    cfg = config_for(mode, overrides, preset)
    _, run = MODES[mode].load()
    return run(cfg, **runtime)
