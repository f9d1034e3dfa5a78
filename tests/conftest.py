"""Shared fixtures. The real CIFAR-10 copy is required: tests fail (not skip) without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_cifar_dir() -> Path:
    d = Path(os.environ.get("REPRLAB_TEST_DATA", ROOT.parent / "shared" / "datasets" / "cifar10"))
    if not (d / "cifar10_train.tar.xz").is_file():
        pytest.fail(f"shared CIFAR-10 not found at {d} (set REPRLAB_TEST_DATA)")
    return d


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """Folder with cifar10_train.tar.xz and cifar10_test_images.npz."""
    return shared_cifar_dir()


@pytest.fixture(scope="session")
def cifar_train(cifar_dir: Path) -> Path:
    return cifar_dir / "cifar10_train.tar.xz"


@pytest.fixture(scope="session")
def cifar_test(cifar_dir: Path) -> Path:
    return cifar_dir / "cifar10_test_images.npz"


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory: pytest.TempPathFactory, cifar_train: Path, cifar_test: Path):
    """``reprlab pipeline --preset smoke`` on the real data, run once per test session.

    Shared by tests/test_pipeline.py and tests/test_report.py (the report is rendered in
    Chromium). Returns a dict: ``dir``, ``argv``, ``rc``, ``stdout``, ``wall_s``.
    """
    import contextlib
    import io
    import time

    from reprlab.cli import main

    out = tmp_path_factory.mktemp("smoke") / "pipeline"
    argv = [
        "pipeline",
        "--preset",
        "smoke",
        "--data",
        str(cifar_train),
        "--test_data",
        str(cifar_test),
        "--out",
        str(out),
    ]
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return {
        "dir": out,
        "argv": argv,
        "rc": rc,
        "stdout": buf.getvalue(),
        "wall_s": time.perf_counter() - t0,
    }
