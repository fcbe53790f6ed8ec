"""``p2p-offers start-all`` refuses to start when another network holds its ports."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from p2p_offers.cluster import GRAPE_API_BASE, NODE_BASE
from p2p_offers.node.config import RPC_PORT_OFFSET


@pytest.mark.parametrize("busy", [GRAPE_API_BASE, NODE_BASE + RPC_PORT_OFFSET])
def test_start_all_names_a_busy_port_and_starts_nothing(tmp_path, busy):
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", busy))
    except OSError:
        holder.close()
        pytest.skip(f"port {busy} is taken on this machine; cannot stage the test")
    holder.listen()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "p2p_offers", "start-all", "--data-dir", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        holder.close()
    assert done.returncode != 0
    assert f"{busy}/tcp" in done.stderr
    assert "ready" not in done.stdout
    assert not (tmp_path / "d").exists()  # nothing started, nothing written
