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
