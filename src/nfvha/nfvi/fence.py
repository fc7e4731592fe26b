"""Fence drivers: how the VIM isolates a host before its VMs run anywhere else (REC-1).

One small interface, two drivers (ADR 0011):

* ``LocalFence``: the test bed's power device (``nfvi.power``), called in-process;
* ``AgentFence``: any standard fence agent (ClusterLabs FenceAgentAPI). The agent is
  an executable ``fence_*`` that reads ``name=value`` lines on its standard input
  (``action=off|on|reboot|status|monitor``, ``plug=...``, device options) and answers
  with its exit status: 0 success; for ``status`` 0 on, 2 off, 1 could not tell.
  A run that outlives its time limit is killed and counts as a failure, never as
  success (FenceAgentAPI: "timeout is a failure").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

from nfvha.model.topology import FenceSpec
from nfvha.nfvi.power import LocalPowerDevice, PowerError

PowerState = Literal["on", "off"]
FenceAction = Literal["off", "on", "reboot", "status", "monitor"]
OptionValue = str | int | float | bool
STATUS_ON, STATUS_ERROR, STATUS_OFF = 0, 1, 2  # FenceAgentAPI exit codes of "status"
STDERR_KEPT = 400  # characters of an agent's complaint kept in the error


class FenceError(RuntimeError):
    """The fence device could not do it, or could not tell: the host is NOT known
    to be isolated."""


class FenceDriver(Protocol):
    @property
    def description(self) -> str: ...

    def quick_status(self) -> PowerState | None:
        """The power state without blocking, when the device can tell that cheaply;
        None: ask :meth:`status`."""
        ...

    async def status(self) -> PowerState: ...

    async def off(self) -> None: ...

    async def on(self) -> None: ...


class LocalFence:
    def __init__(self, device: LocalPowerDevice) -> None:
        self._device = device

    @property
    def description(self) -> str:
        return f"local power device of {self._device.host}"

    def quick_status(self) -> PowerState | None:
        return self._device.status()  # a cgroup read: cheap enough for every tick

    async def status(self) -> PowerState:
        return await asyncio.to_thread(self._device.status)

    async def off(self) -> None:
        await asyncio.to_thread(self._device.off)

    async def on(self) -> None:
        if await self.status() == "on":
            return
        try:
            await asyncio.to_thread(self._device.on)
        except PowerError as e:
            raise FenceError(str(e)) from None


def encode_options(action: FenceAction, host: str,
                   options: Mapping[str, OptionValue]) -> str:
    """The agent's standard input. The node is ``plug`` unless the options name a plug
    or port (a PDU outlet, a VM name), and always ``nodename``. A name given twice
    counts by its last line, so ours come last."""
    lines = [f"{k}={_value(v)}" for k, v in options.items()]
    if "plug" not in options and "port" not in options:
        lines.append(f"plug={host}")
    lines += [f"nodename={host}", f"action={action}"]
    return "\n".join(lines) + "\n"


def _value(v: OptionValue) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    text = str(v)
    if "\n" in text or "\r" in text:
        raise ValueError("a fence option value cannot contain a line break")
    return text


def agent_search_path() -> list[str]:
    """PATH, then the directory of this Python: a virtual environment's console
    scripts (``fence_nfvha``) are there even when it is not on PATH."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    here = os.path.dirname(sys.executable)
    return dirs if here in dirs else [*dirs, here]


def resolve_agent(agent: str, search_path: Sequence[str] | None = None) -> str:
    if os.path.isabs(agent):
        if not os.access(agent, os.X_OK):
            raise FenceError(f"fence agent {agent} is not an executable file")
        return agent
    dirs = list(search_path) if search_path is not None else agent_search_path()
    found = shutil.which(agent, path=os.pathsep.join(dirs))
    if found is None:
        raise FenceError(f"fence agent {agent} not found in {os.pathsep.join(dirs)}")
    return found


class AgentFence:
    def __init__(self, agent: str, host: str, options: Mapping[str, OptionValue] | None = None,
                 *, timeout_s: float = 20.0, search_path: Sequence[str] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.agent = agent
        self.host = host
        self.options = dict(options or {})
        self.timeout_s = timeout_s
        self._search_path = search_path
        self._env = dict(env) if env is not None else None
        self._path: str | None = None

    @property
    def description(self) -> str:
        return f"fence agent {self.agent} (plug {self.options.get('plug', self.host)})"

    def quick_status(self) -> PowerState | None:
        return None  # a process per query: never from a liveness tick

    async def status(self) -> PowerState:
        rc, err = await self.run("status")
        if rc == STATUS_ON:
            return "on"
        if rc == STATUS_OFF:
            return "off"
        raise FenceError(f"{self.description}: status unknown (exit {rc}){err}")

    async def off(self) -> None:
        await self._act("off")

    async def on(self) -> None:
        await self._act("on")

    async def reboot(self) -> None:
        await self._act("reboot")

    async def monitor(self) -> None:
        await self._act("monitor")

    async def _act(self, action: FenceAction) -> None:
        rc, err = await self.run(action)
        if rc != 0:
            raise FenceError(f"{self.description}: {action} failed (exit {rc}){err}")

    async def run(self, action: FenceAction) -> tuple[int, str]:
        """Run the agent once: (exit status, ": <what it said on stderr>" or "")."""
        if self._path is None:
            self._path = resolve_agent(self.agent, self._search_path)
        stdin = encode_options(action, self.host, self.options).encode()
        try:
            proc = await asyncio.create_subprocess_exec(
                self._path, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env=self._env, start_new_session=True)
        except OSError as e:
            raise FenceError(f"{self.description}: cannot run {self._path}: {e}") from None
        try:
            _, err = await asyncio.wait_for(proc.communicate(stdin), self.timeout_s)
        except TimeoutError:
            # Its own session: whatever it started (ipmitool, ssh) goes with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise FenceError(f"{self.description}: {action} took longer than"
                             f" {self.timeout_s:g} s") from None
        assert proc.returncode is not None
        said = err.decode(errors="replace").strip()[-STDERR_KEPT:]
        return proc.returncode, f": {said}" if said else ""


def fence_driver(spec: FenceSpec, host: str,
                 local: LocalPowerDevice | None = None) -> FenceDriver | None:
    """The driver a host's fence spec asks for; None for ``none`` (and for ``local``
    where there is no local power device: the loopback fallback)."""
    if spec.type == "agent":
        assert spec.agent is not None  # the spec's validator
        return AgentFence(spec.agent, host, spec.options, timeout_s=spec.timeout_s)
    if spec.type == "local" and local is not None:
        return LocalFence(local)
    return None
