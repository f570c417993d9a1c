"""Shared fixtures: paths to the repository and to the shared Caffe examples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
SHARED_CAFFE = ROOT.parent / "shared" / "caffe"

os.environ.setdefault("NETSPEC_TEST", "1")


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def caffe_examples() -> Path:
    if not SHARED_CAFFE.exists():
        pytest.skip("../shared/caffe is not present")
    return SHARED_CAFFE / "examples"
