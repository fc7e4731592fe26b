"""``nfvha front``: the API's public address of a single controller (ADR 0014 "The API
front").

Serves ``api_host:api_port`` with ``FrontApp`` and passes what it takes on to the
controller's own API on ``127.0.0.1:api_internal_port``: bodies bounded and
well-formed, a few requests at a time, the client's address in ``X-Forwarded-For``.
A process of its own, started beside the controller with the same configuration
file (the test bed puts it in a cgroup with a low CPU weight): parsing a flood of
requests, answering its 503s and holding its slow clients costs this process, not
the controller's event loop, which also reads the agents' event streams. It
outlives a restart of the controller (and answers 503 meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from nfvha.controller.config import ControllerConfig
from nfvha.controller.front import FrontApp
from nfvha.controller.httpserver import QuietServer, server_config
from nfvha.util.gcfreeze import freeze_long_lived
from nfvha.util.logs import setup_logging

log = logging.getLogger("nfvha.front")


def front_app(cfg: ControllerConfig) -> FrontApp:
    """The front of the controller configured in ``cfg`` (which has an internal port)."""
    if cfg.api_internal_port is None:
        raise ValueError("the configuration has no api_internal_port: the controller"
                         " serves its API itself, without a front")
    upstream = f"http://127.0.0.1:{cfg.api_internal_port}"
    return FrontApp(lambda: upstream, limits=cfg.api, upstream="the controller")


async def serve_front(cfg: ControllerConfig, stop: asyncio.Event | None = None) -> None:
    front = front_app(cfg)
    server = QuietServer(server_config(front, cfg.api_host, cfg.api_port, cfg.api,
                                       timeout_graceful_shutdown=1))
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(server.serve(), name="front")
    log.info("front of controller %s: on http://%s:%d, passing on to 127.0.0.1:%d"
             " (%d at once)", cfg.run_id, cfg.api_host, cfg.api_port, cfg.api_internal_port,
             cfg.api.forward_concurrency)
    freeze_long_lived()
    try:
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        server.should_exit = True
        await task
    finally:
        await front.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nfvha front")
    p.add_argument("--config", type=Path, required=True,
                   help="the controller's configuration (controller.json)")
    args = p.parse_args(argv)
    setup_logging("front")
    cfg = ControllerConfig.load(args.config)
    try:
        asyncio.run(serve_front(cfg))
    except ValueError as e:
        raise SystemExit(f"front: {e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
