"""Grenache's own Node.js packages, installed on demand, to check our code against the real thing.

A development tool, not part of the installed package: used by the compatibility
tests (their Link against our grapes, their PeerRPC against our PeerRPC and
nodes), the grape benchmark (the same client against their stock grape) and the
Postman test (newman). Packages go to a cache folder outside the repository and
are reused; nothing here runs without ``node`` and ``npm`` on the machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

CACHE = Path(os.environ.get("P2P_OFFERS_NPM_CACHE", Path.home() / ".cache/p2p-offers/npm"))
LINK = "grenache-nodejs-link@1.0.2"
GRAPE = "grenache-grape@1.0.0"
# 0.7.x is the wire SPEC §8 names (the one Bitfinex services speak); 1.x only changed its deps.
HTTP = "grenache-nodejs-http@0.7.13"
NEWMAN = "newman@6"


def node_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def node_env() -> dict[str, str]:
    """The environment for ``node script.js`` to ``require`` the installed packages."""
    return dict(os.environ, NODE_PATH=str(CACHE / "node_modules"))


def install(spec: str, cache: Path = CACHE) -> Path:
    """``npm install spec`` into ``cache`` unless that version is already there; its folder.

    ``spec`` is ``name@version`` where version is exact or a major (``newman@6``).
    Test runs and benchmarks share the cache, so installs take a file lock.
    """
    name, _, version = spec.rpartition("@")
    folder = cache / "node_modules" / name
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed(folder / "package.json", version):
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
                 "--prefix", str(cache), spec],
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
    return folder


def _installed(manifest: Path, version: str) -> bool:
    if not manifest.exists():
        return False
    found = json.loads(manifest.read_text()).get("version", "")
    return found == version or found.split(".")[0] == version


def stock_grape_argv(dht_port: int, api_port: int, bootstrap: list[int]) -> list[str]:
    """argv of a stock ``grenache-grape`` on loopback, bootstrapped to the given DHT ports."""
    bin_js = install(GRAPE) / "bin" / "grape.js"
    peers = ",".join(f"127.0.0.1:{port}" for port in bootstrap)
    return ["node", str(bin_js), "--dp", str(dht_port), "--aph", str(api_port), "--bn", peers]
