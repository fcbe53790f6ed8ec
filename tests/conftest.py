"""Shared fixtures: shared test data, a Cluster of real processes per test, one real grape."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from p2p_offers.cluster import Cluster, free_ports

# Hypothesis' per-example deadline is a timing assertion: on a shared 2-core machine it
# fails correct code. Speed is measured in bench/, never asserted in tests.
settings.register_profile("p2p-offers", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("p2p-offers")

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


@pytest.fixture(scope="session")
def grape_url(tmp_path_factory) -> Iterator[str]:
    """One real grape for the in-process node tests (``node_helpers.local_node``).

    Started without bootstrap nodes it runs standalone: puts, gets, announces and
    lookups are answered from its own storage. It is shared by every test that
    asks for it, so tests keep to names of their own (records are salted with
    fresh offer ids; owner names come from fresh keys) and nothing leaks between
    them. Its TTLs run on real time, not on a test's ``Clock``.
    """
    dht_port, api_port = free_ports(2)
    with Cluster(tmp_path_factory.mktemp("grape")) as cluster:
        grape = cluster.grape(dht_port, api_port)
        cluster.wait_ready([grape])
        yield grape.url


def node_js_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None
