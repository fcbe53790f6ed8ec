"""Shared fixtures: paths to shared test data and a Cluster of real processes per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from p2p_offers.cluster import Cluster

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def bep44_vectors_path() -> Path:
    path = SHARED / "testdata" / "bep44_vectors.json"
    if not path.exists():  # a clone without shared/ beside it still has our copy
        path = REPO / "tests" / "data" / "bep44_vectors.json"
    return path


@pytest.fixture
def cluster(tmp_path):
    """Processes started through this cluster are stopped when the test ends, pass or fail."""
    with Cluster(tmp_path / "cluster") as c:
        yield c


def node_js_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None
