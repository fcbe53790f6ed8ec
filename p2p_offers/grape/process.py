"""The ``p2p-offers grape`` process: the DHT node and its HTTP API on one event loop.

Kept apart from ``server`` so the DHT node can run without HTTP, signals or a
loop of its own (benchmarks run a hundred in one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from p2p_offers.grape.config import GrapeConfig
from p2p_offers.grape.server import GrapeServer

log = logging.getLogger(__name__)


def quiet_libraries() -> None:
    """kademlia logs every RPC at INFO and rpcudp every timeout at ERROR: routine, not news."""
    logging.getLogger("kademlia").setLevel(logging.WARNING)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: a few tenths of a millisecond less per UDP-heavy request."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def serve(config: GrapeConfig, stopped: asyncio.Event | None = None) -> int:
    """DHT node and HTTP API on the running loop until SIGTERM/SIGINT (or ``stopped`` is set)."""
    from aiohttp import web

    from p2p_offers.grape.api import make_app

    loop = asyncio.get_running_loop()
    stopped = stopped or asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stopped.set)
    server = GrapeServer(config)
    runner = web.AppRunner(make_app(server, config), access_log=None, shutdown_timeout=1.0)
    try:
        await server.start()
        await runner.setup()
        await web.TCPSite(runner, config.host, config.api_port).start()
    except OSError as exc:
        log.error("grape cannot start: %s", exc)
        await runner.cleanup()
        server.stop()
        return 1
    log.info(
        "grape ready: DHT udp://%s:%d, API http://%s:%d",
        config.host,
        config.dht_port,
        config.host,
        config.api_port,
    )
    await stopped.wait()
    log.info("grape stopping")
    await runner.cleanup()
    server.stop()
    return 0


def run(config: GrapeConfig) -> int:
    """The ``p2p-offers grape`` process: exit status 0 after a clean SIGTERM/SIGINT."""
    quiet_libraries()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(serve(config))
