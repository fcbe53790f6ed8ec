"""The Postman collection runs green under newman against a real 3-grape/3-node network.

The collection is what a user runs against ``make start-all``; running it here keeps it
true to the API. The network gets free ports (so a developer's own start-all on 4000-4002
is left alone) and the environment's URLs are overridden with ``--env-var``. newman is an
npm package: it is installed once into a cache folder outside the repository, so the
clone never holds node_modules and later runs reuse it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import node_js_available

from devtools import npm as grenache
from p2p_offers.cluster import free_ports, local_network

REPO = Path(__file__).resolve().parent.parent
COLLECTION = REPO / "postman" / "p2p-offers.postman_collection.json"
ENVIRONMENT = REPO / "postman" / "local.postman_environment.json"
pytestmark = pytest.mark.node_js


def _newman() -> Path:
    """Path of the cached newman, installing it on first use (skips when npm cannot)."""
    try:
        folder = grenache.install(grenache.NEWMAN)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"npm could not install {grenache.NEWMAN}: {exc}")
    return folder.parent / ".bin" / "newman"


@pytest.mark.parametrize("token", [None, "postman-test-token"], ids=["open", "api-token"])
def test_collection_runs_green(cluster, tmp_path, token):
    """As after `make start-all`; and with --api-token, which the collection must send."""
    if not node_js_available():
        pytest.skip("Node.js and npm are not installed; newman needs them")
    newman = _newman()

    ports = free_ports(9)
    dht, api, nodes = ports[0:3], ports[3:6], ports[6:9]
    node_extra = ["--api-token", token] if token else []
    _, node_procs = local_network(
        cluster, 3, 3, dht, api, nodes, tmp_path / "data", node_extra=node_extra
    )

    argv = [str(newman), "run", str(COLLECTION), "-e", str(ENVIRONMENT)]
    for i, proc in enumerate(node_procs):
        argv += ["--env-var", f"node{i}={proc.url}"]
    if token:
        argv += ["--env-var", f"api_token={token}"]
    argv += ["--reporters", "cli", "--color", "off", "--disable-unicode", "--timeout", "120000"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)

    logs = "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in node_procs)
    assert result.returncode == 0, f"newman failed:\n{result.stdout[-8000:]}\n{logs}"
