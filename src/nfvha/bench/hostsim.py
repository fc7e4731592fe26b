"""``python -m nfvha.bench.hostsim --role supervisors|agents``: many simulated hosts in
one process, talking to the real controller and HA director over real loopback sockets
(``nfvha bench scale``).

A host's supervisor and its agent are two processes on a real host, and so they are
here: one simulator process plays the supervisors of its share of the hosts
(``simsupervisors``: heartbeats, pings, witnessing), another their agents
(``simagents``: the event streams). Nothing the agents do - hundreds of streams
connecting at once, say - can delay a heartbeat: in one process the two competed for
the event loop, and in two threads for the interpreter lock, and heartbeats were late
by up to two seconds on a busy machine.

Control: ``nfvha.bench.simwire`` requests on stdin, replies on stdout. The first line
out is ``Bound`` (the supervisors': every host's UDP port).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from nfvha.bench.scaleplan import SimSpec, shard
from nfvha.bench.simagents import AgentSim
from nfvha.bench.simsupervisors import SupervisorSim
from nfvha.bench.simwire import (
    SIM_REQUEST,
    Bound,
    Crash,
    GetStats,
    PowerOff,
    PowerOn,
    Reply,
    Start,
    Stop,
)

Role = Literal["supervisors", "agents"]


def _write(out: Bound | Reply) -> None:
    sys.stdout.write(out.model_dump_json() + "\n")
    sys.stdout.flush()


async def serve(sim: SupervisorSim | AgentSim) -> None:
    """Answer the bench's requests until it says stop (or is gone)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    ports = sim.ports if isinstance(sim, SupervisorSim) else {}
    _write(Bound(pid=os.getpid(), ports=ports, nice=os.getpriority(os.PRIO_PROCESS, 0)))
    started = False
    while True:
        line = await reader.readline()
        if not line:
            return  # the bench is gone: so are its hosts
        try:
            req = SIM_REQUEST.validate_json(line)
        except ValidationError as e:
            _write(Reply(id=-1, ok=False, error=f"bad request: {e}"))
            continue
        try:
            if isinstance(req, Stop):
                _write(Reply(id=req.id))
                return
            if isinstance(req, Start):
                if not started:
                    sim.start((req.controller_ip, req.controller_port))
                    started = True
                _write(Reply(id=req.id, at_mono_ns=time.monotonic_ns()))
            elif isinstance(req, GetStats):
                _write(Reply(id=req.id, stats=sim.stats(req.reset)))
            elif isinstance(req, PowerOff):
                _write(Reply(id=req.id, at_mono_ns=sim.power_off(req.host)))
            elif isinstance(req, PowerOn):
                _write(Reply(id=req.id, at_mono_ns=sim.power_on(req.host)))
            elif isinstance(req, Crash):
                if not isinstance(sim, AgentSim):
                    raise ValueError("VMs crash in the agents' simulator")
                _write(Reply(id=req.id, at_mono_ns=sim.crash_vm(req.host, req.vm)))
        except ValueError as e:
            _write(Reply(id=req.id, ok=False, error=str(e)))


async def _main(role: Role, spec: SimSpec, index: int, count: int) -> None:
    hosts = shard(spec.hosts, index, count)
    # Distinct stand-in pids per simulator process.
    sim = SupervisorSim(spec, hosts) if role == "supervisors" \
        else AgentSim(spec, hosts, pid_base=4_000_000 + index * 10**6)
    try:
        await serve(sim)
    finally:
        sim.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nfvha.bench.hostsim")
    p.add_argument("--role", choices=["supervisors", "agents"], required=True)
    p.add_argument("--spec", type=Path, required=True, help="a SimSpec (JSON)")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--nice", type=int, default=None,
                   help="run at this niceness if allowed (root: e.g. -10)")
    args = p.parse_args(argv)
    if args.nice is not None:
        # Simulated hosts stand for machines of their own, which the controller's
        # machine never starves: served first, they keep their timing on a busy
        # machine (they use little CPU). Not allowed: as it is.
        with contextlib.suppress(PermissionError, OSError):
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    spec = SimSpec.model_validate_json(args.spec.read_bytes())
    asyncio.run(_main(args.role, spec, args.shard, args.shards))
    return 0


if __name__ == "__main__":
    sys.exit(main())
