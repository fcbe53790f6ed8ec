"""docker-compose.yml: accepted by Compose, and the same topology as ``start-all``.

No Docker engine is needed: ``docker-compose config`` only parses and validates. The
topology test reads the file itself, because a file Compose accepts can still wire the
network wrongly (a grape bootstrapping to an address no grape has, a node announcing an
address that is not its own), and then containers start but never find each other.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
GRAPES = 3
NODES = 3


def _compose_command() -> list[str] | None:
    """The Compose CLI available here: v1 ``docker-compose`` or the v2 ``docker compose`` plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_compose_config_accepted():
    command = _compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _flag(command: list[str], name: str) -> str:
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def test_compose_topology_matches_start_all():
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    spec = yaml.safe_load(COMPOSE_FILE.read_text())
    services = spec["services"]
    network = next(iter(spec["networks"]))

    grapes = {}  # service name -> (ip, dht port, api port)
    for i in range(GRAPES):
        svc = services[f"grape{i}"]
        cmd = [str(part) for part in svc["command"]]
        assert cmd[0] == "grape"
        assert _flag(cmd, "-b") == "0.0.0.0", "a grape must accept peers from other containers"
        ip = svc["networks"][network]["ipv4_address"]
        grapes[f"grape{i}"] = (ip, int(_flag(cmd, "--dp")), int(_flag(cmd, "--aph")))
    assert sorted(g[1] for g in grapes.values()) == [20001 + i for i in range(GRAPES)]
    assert sorted(g[2] for g in grapes.values()) == [30001 + i for i in range(GRAPES)]

    # Each grape bootstraps to every other grape by IP:port (kademlia cannot resolve names).
    for name, (ip, _, _) in grapes.items():
        cmd = [str(part) for part in services[name]["command"]]
        bootstrap = set(_flag(cmd, "--bn").split(","))
        others = {f"{o_ip}:{o_dht}" for o_ip, o_dht, _ in grapes.values() if o_ip != ip}
        assert bootstrap == others, name

    for i in range(NODES):
        svc = services[f"node{i}"]
        cmd = [str(part) for part in svc["command"]]
        port = 4000 + i
        assert cmd[0] == "node"
        assert int(_flag(cmd, "--port")) == port
        assert _flag(cmd, "--host") == "0.0.0.0"
        own_ip = svc["networks"][network]["ipv4_address"]
        assert _flag(cmd, "--announce-host") == own_ip, "peers must dial the container address"
        grape_ip, _, grape_api = grapes[f"grape{i % GRAPES}"]
        assert _flag(cmd, "--grape") == f"http://{grape_ip}:{grape_api}"
        assert f"{port}:{port}" in [str(p) for p in svc["ports"]]
        assert _flag(cmd, "--data-dir") in {v.split(":")[1] for v in svc["volumes"]}
