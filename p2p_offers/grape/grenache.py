"""Grenache's own Node.js packages, installed on demand, to check our grape against the real thing.

Used by the compatibility test (their client against our grape) and by the grape
benchmark (the same client against their stock grape). Packages go to a cache
folder outside the repository and are reused; nothing here runs without ``node``
and ``npm`` on the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CACHE = Path(os.environ.get("P2P_OFFERS_NPM_CACHE", Path.home() / ".cache/p2p-offers/npm"))
LINK = "grenache-nodejs-link@1.0.2"
GRAPE = "grenache-grape@1.0.0"


def node_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def install(spec: str, cache: Path = CACHE) -> Path:
    """``npm install spec`` into ``cache`` unless that version is already there; its folder."""
    name, _, version = spec.rpartition("@")
    folder = cache / "node_modules" / name
    manifest = folder / "package.json"
    if not (manifest.exists() and f'"version": "{version}"' in manifest.read_text()):
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(cache), spec],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return folder


def stock_grape_argv(dht_port: int, api_port: int, bootstrap: list[int]) -> list[str]:
    """argv of a stock ``grenache-grape`` on loopback, bootstrapped to the given DHT ports."""
    bin_js = install(GRAPE) / "bin" / "grape.js"
    peers = ",".join(f"127.0.0.1:{port}" for port in bootstrap)
    return ["node", str(bin_js), "--dp", str(dht_port), "--aph", str(api_port), "--bn", peers]
