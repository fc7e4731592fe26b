"""Logging of the daemons (controller, agent, VNF-level AM): one format, to stderr."""

from __future__ import annotations

import logging
import sys


def setup_logging(process: str, level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format=f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: a line per etcd renewal, health look and long
    # poll, which buries what matters and costs a cluster member CPU.
    logging.getLogger("httpx").setLevel(logging.WARNING)
