"""``nfvha director``: the HA director of one controller (ADR 0014).

Started beside its controller (the test bed's ``spawn_control``), with the same
configuration file; it outlives a crash of the controller and keeps the HA path -
liveness, lease grants, failovers - going meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from nfvha.controller.config import ControllerConfig
from nfvha.director.service import Director
from nfvha.model.topology import load_topology
from nfvha.util.gcfreeze import freeze_long_lived
from nfvha.util.logs import setup_logging


async def _run(cfg: ControllerConfig, config_topology: Path) -> None:
    director = Director(cfg, load_topology(config_topology))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    freeze_long_lived()  # no full collection walks the modules and topology mid-run
    await director.run(stop)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nfvha director")
    p.add_argument("--config", type=Path, required=True,
                   help="the controller's configuration (controller.json)")
    args = p.parse_args(argv)
    setup_logging("director")
    cfg = ControllerConfig.load(args.config)
    if cfg.topology_file is None:
        raise SystemExit("director: the configuration has no topology_file")
    asyncio.run(_run(cfg, cfg.topology_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
