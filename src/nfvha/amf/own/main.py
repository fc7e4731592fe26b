"""``nfvha vnf-am``: a VNF's own availability manager as a process (ADR 0008).

Started by the test bed for every VNF with ``vnfm: own`` (``--config``), or by hand
with flags. SIGTERM/SIGINT end it; its records stay in its database for the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from nfvha.amf.config import AmfConfig, ComponentEndpoint
from nfvha.amf.own.am import VnfAm
from nfvha.amf.own.config import VnfAmConfig
from nfvha.amf.own.options import add_options
from nfvha.amf.own.repair import ApiRepair
from nfvha.amf.own.vim import VimClient, read_token
from nfvha.model.topology import load_topology
from nfvha.store.assignments import SqliteAssignmentStore
from nfvha.util.clock import SYSTEM_CLOCK, Clock
from nfvha.util.logs import setup_logging

log = logging.getLogger("nfvha.amf.own")


async def serve(cfg: VnfAmConfig, clock: Clock = SYSTEM_CLOCK,
                stop: asyncio.Event | None = None) -> None:
    topology = load_topology(cfg.topology_file)
    vim = VimClient(cfg.vim_url, read_token(cfg.token_file), timeout_s=cfg.request_timeout_s)
    store = SqliteAssignmentStore(cfg.db_path, fsync=cfg.db_fsync)
    async with contextlib.AsyncExitStack() as done:
        done.push_async_callback(vim.close)
        done.callback(store.close)
        am = VnfAm(topology, cfg.vnf, cfg.amf, vim, store, clock=clock,
                   repair=ApiRepair(vim, clock, repair_timeout_s=cfg.repair_timeout_s),
                   poll_wait_s=cfg.poll_wait_s)
        done.push_async_callback(am.close)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await am.start()
        log.info("AM of %s: components on %s:%d, VIM %s", cfg.vnf, cfg.amf.listen_ip,
                 cfg.amf.port, cfg.vim_url)
        await stop.wait()


def config_from_args(args: argparse.Namespace) -> VnfAmConfig:
    """The flags' form: endpoints from the topology (a component's sync port is its
    service port + 1, as the sample VNFC has it)."""
    missing = [f"--{n.replace('_', '-')}" for n in ("vnf", "vim", "token_file", "topology",
                                                    "listen")
               if getattr(args, n) is None]
    if missing:
        raise ValueError(f"give --config, or {' '.join(missing)}")
    ip, _, port = str(args.listen).rpartition(":")
    if not ip or not port.isdigit():
        raise ValueError(f"--listen {args.listen!r}: expected ip:port")
    addresses = dict(a.split("=", 1) for a in args.vm_address if "=" in a)
    topology = load_topology(args.topology)
    spec = topology.vnf(args.vnf)
    components = [ComponentEndpoint(
        name=c.name, vnf=spec.name, vm=c.vm, host=topology.vm(c.vm).host,
        address=addresses.get(c.vm, ip), port=c.port, sync_port=c.port + 1)
        for c in spec.components]
    return VnfAmConfig(
        vnf=spec.name, vim_url=args.vim, token_file=args.token_file,
        topology_file=args.topology, db_path=args.db or Path(f"{spec.name}-am.db"),
        amf=AmfConfig(listen_ip=ip, port=int(port), components=components,
                      vips={spec.name: args.vip} if args.vip else {}))


def run(args: argparse.Namespace) -> int:
    setup_logging("vnf-am")
    cfg = VnfAmConfig.load(args.config) if args.config else config_from_args(args)
    asyncio.run(serve(cfg))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nfvha vnf-am", description=__doc__)
    add_options(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
