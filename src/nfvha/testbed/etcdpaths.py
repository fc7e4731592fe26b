"""Cuttable paths from controllers to etcd, for fault tests and the chaos benchmark:
one TCP proxy per (controller, etcd member). A cut drops bytes both ways and leaves
new connections hanging, as a network partition does (no FIN, no RST), so the
controller's own timeouts - not a closed socket - tell it etcd is gone."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from typing import Any


class EtcdPaths:
    """One TCP proxy per (controller, etcd member), on a loop of its own thread (the
    test's loop may block). ``cut(controller)``: from then on that controller's bytes
    to and from etcd are dropped and new connections hang, as a partition does (no
    FIN, no RST); ``heal(controller)`` closes what was cut and forwards again."""

    def __init__(self, etcd_endpoints: list[str]) -> None:
        self._upstreams = [(u.split("//")[1].split(":")[0], int(u.rsplit(":", 1)[1]))
                           for u in etcd_endpoints]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                         name="etcd-paths")
        self._thread.start()
        self._cut: set[str] = set()
        self._conns: dict[str, set[asyncio.StreamWriter]] = {}
        self._servers: list[asyncio.Server] = []

    def _run(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(10)

    def endpoints_for(self, controller: str) -> list[str]:
        return [f"http://127.0.0.1:{self._run(self._listen(controller, up))}"
                for up in self._upstreams]

    async def _listen(self, controller: str, upstream: tuple[str, int]) -> int:
        self._conns.setdefault(controller, set())

        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            # Cancelled only by close(): end quietly (asyncio logs a cancelled
            # connection handler as an error).
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve(controller, upstream, r, w)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, controller: str, upstream: tuple[str, int],
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns = self._conns[controller]
        conns.add(writer)
        try:
            while controller in self._cut:  # a partition: the connection just hangs
                await asyncio.sleep(0.05)
                if writer.is_closing():
                    return
            ur, uw = await asyncio.open_connection(*upstream)
            conns.add(uw)
            await asyncio.gather(self._pipe(controller, reader, uw),
                                 self._pipe(controller, ur, writer))
        except OSError:
            pass
        finally:
            writer.close()

    async def _pipe(self, controller: str, src: asyncio.StreamReader,
                    dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if controller in self._cut:
                    continue  # dropped
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()

    def cut(self, controller: str) -> None:
        self._loop.call_soon_threadsafe(self._cut.add, controller)

    def heal(self, controller: str) -> None:
        def heal() -> None:
            for w in list(self._conns.get(controller, ())):
                w.close()
            self._conns[controller] = set()
            self._cut.discard(controller)

        self._loop.call_soon_threadsafe(heal)

    def close(self) -> None:
        async def stop() -> None:
            for s in self._servers:
                s.close()
            for conns in self._conns.values():
                for w in conns:
                    w.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._run(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
