"""A small etcd v3 client over etcd's JSON gRPC gateway, on httpx (ADR 0012).

Only what the cluster stores use: range, put, delete, transactions, leases,
watches, member status. Keys and values are bytes (base64 on the wire, as the
gateway's JSON mapping of protobuf wants; 64-bit integers travel as strings).

Failure contract (Patroni's): an answer is returned, an unreachable cluster is
``StoreUnavailable``. Every call has a deadline (``op_timeout_s``) within which
it moves on to the next endpoint and tries again, but a write is sent again only
when it cannot have been applied: the connection was never made, or etcd refused
it before proposing it (no leader, too many requests). A write whose request went
out and whose answer did not come back may have been committed: that raises
``OutcomeUnknown`` (a ``StoreUnavailable``) at once. A caller that cannot tell
treats it as not acknowledged; a conditional write can tell, by sending itself
again (its condition now fails if the first one was committed) and reading what
is there (``write_conditionally``). Reads, lease keep-alives and revocations are
safe to repeat.

Time: I/O deadlines are real time (``time.monotonic``), as the sockets' are.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from nfvha.store.base import StoreUnavailable

# gRPC status codes etcd answers with when the cluster, not the request, is the problem.
_CLUSTER_CODES = frozenset({1, 4, 8, 10, 14})  # cancelled, deadline, exhausted, aborted, unavail.
# Refusals etcd makes before it proposes a write: sending the write again is safe.
_NOT_PROPOSED = ("etcdserver: no leader", "etcdserver: too many requests",
                 "etcdserver: not capable")


class EtcdError(Exception):
    """etcd answered, and the answer is an error about the request (a bug, not an outage)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd error {code}: {message}")
        self.code = code
        self.message = message


class OutcomeUnknown(StoreUnavailable):
    """A write went out and no answer came back: it may or may not have been committed."""


class EtcdCompacted(Exception):
    """A watch asked for history etcd has compacted away; the watcher must re-read."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"etcd history compacted up to revision {compact_revision}")
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class WatchEvent:
    type: Literal["put", "delete"]
    kv: KeyValue


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[dict[str, Any]]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def parse_kv(d: dict[str, Any]) -> KeyValue:
    return KeyValue(key=base64.b64decode(d.get("key", "")),
                    value=base64.b64decode(d.get("value", "")),
                    create_revision=int(d.get("create_revision", 0)),
                    mod_revision=int(d.get("mod_revision", 0)),
                    version=int(d.get("version", 0)), lease=int(d.get("lease", 0)))


# -- transaction parts -----------------------------------------------------------------


def cmp_version(key: bytes, version: int) -> dict[str, Any]:
    """The key's version (writes since its creation; 0: it does not exist) equals ``version``."""
    return {"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": str(version)}


def cmp_create_revision(key: bytes, revision: int) -> dict[str, Any]:
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL",
            "create_revision": str(revision)}


def op_put(key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False) -> dict[str, Any]:
    req: dict[str, Any] = {"key": b64(key), "value": b64(value), "prev_kv": prev_kv}
    if lease:
        req["lease"] = str(lease)
    return {"request_put": req}


def op_range(key: bytes) -> dict[str, Any]:
    return {"request_range": {"key": b64(key)}}


def op_delete(key: bytes) -> dict[str, Any]:
    return {"request_delete_range": {"key": b64(key)}}


class _Retry(Exception):
    """This endpoint could not answer; another one may."""


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], *, op_timeout_s: float = 2.0,
                 request_timeout_s: float = 1.0, connect_timeout_s: float = 0.3,
                 watch_reconnect_timeout_s: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.op_timeout_s = op_timeout_s
        self.watch_reconnect_timeout_s = watch_reconnect_timeout_s
        self._timeout = httpx.Timeout(request_timeout_s, connect=connect_timeout_s)
        # trust_env=False: etcd members are cluster-internal; no proxy from the environment
        self._http = httpx.Client(timeout=self._timeout, trust_env=False,
                                  transport=httpx.HTTPTransport(retries=0))
        self._lock = threading.Lock()
        self._current = 0

    # -- endpoints and calls -------------------------------------------------------------

    def _endpoint(self) -> str:
        with self._lock:
            return self.endpoints[self._current]

    def _rotate(self, failed: str) -> None:
        with self._lock:
            if self.endpoints[self._current] == failed:
                self._current = (self._current + 1) % len(self.endpoints)

    def call(self, path: str, body: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        """POST ``body`` to ``path`` on some endpoint (see the module's failure contract)."""
        deadline = time.monotonic() + self.op_timeout_s
        pause = 0.02
        while True:
            ep = self._endpoint()
            try:
                return self._post(ep, path, body, idempotent)
            except _Retry as e:
                self._rotate(ep)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreUnavailable(
                        f"etcd {path}: no endpoint answered within {self.op_timeout_s} s;"
                        f" last: {e}") from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, 0.2)

    def _post(self, ep: str, path: str, body: dict[str, Any],
              idempotent: bool) -> dict[str, Any]:
        try:
            resp = self._http.post(ep + path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
            raise _Retry(f"{ep}: {e!r}") from e  # never sent
        except httpx.TransportError as e:
            if idempotent:
                raise _Retry(f"{ep}: {e!r}") from e
            self._rotate(ep)
            raise OutcomeUnknown(f"etcd {ep}{path}: {e!r}; outcome unknown") from e
        try:
            data: dict[str, Any] = resp.json()
        except ValueError:
            data = {}
        if resp.status_code == 200 and "error" not in data:
            return data
        code = int(data.get("code", 14 if resp.status_code >= 500 else 2))
        message = str(data.get("message") or data.get("error") or resp.reason_phrase)
        if code not in _CLUSTER_CODES and resp.status_code < 500:
            raise EtcdError(code, message)
        if idempotent or any(m in message for m in _NOT_PROPOSED):
            raise _Retry(f"{ep}: {message}")
        self._rotate(ep)
        raise OutcomeUnknown(f"etcd {ep}{path}: {message}; outcome unknown")

    # -- key-value -----------------------------------------------------------------------

    def range(self, key: bytes, *, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """The keys (one, or all under a prefix) and the store's revision they were read at."""
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_end(key))
        data = self.call("/v3/kv/range", body, idempotent=True)
        return ([parse_kv(kv) for kv in data.get("kvs", [])],
                int(data.get("header", {}).get("revision", 0)))

    def get(self, key: bytes) -> KeyValue | None:
        kvs, _ = self.range(key)
        return kvs[0] if kvs else None

    def put(self, key: bytes, value: bytes, *, lease: int = 0) -> KeyValue | None:
        """Write ``key``; returns what it held before (None: it did not exist)."""
        body = op_put(key, value, lease=lease, prev_kv=True)["request_put"]
        data = self.call("/v3/kv/put", body, idempotent=False)
        prev = data.get("prev_kv")
        return parse_kv(prev) if prev else None

    def delete(self, key: bytes, *, prefix: bool = False) -> int:
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_end(key))
        return int(self.call("/v3/kv/deleterange", body, idempotent=False).get("deleted", 0))

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> TxnResult:
        body = {"compare": compare, "success": success, "failure": failure or []}
        read_only = all("request_range" in op for op in success + (failure or []))
        data = self.call("/v3/kv/txn", body, idempotent=read_only)
        return TxnResult(bool(data.get("succeeded", False)),
                         int(data.get("header", {}).get("revision", 0)),
                         list(data.get("responses", [])))

    def write_conditionally(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                            mine: Callable[[KeyValue | None], bool], key: bytes) -> TxnResult:
        """``txn(compare, success, [range key])``, sent again after an unknown outcome until
        ``op_timeout_s``. If a later try fails its comparison, ``mine(kv)`` says whether what
        ``key`` holds is the earlier try's write: then it succeeded after all."""
        deadline = time.monotonic() + self.op_timeout_s
        unknown = False
        while True:
            try:
                result = self.txn(compare, success, [op_range(key)])
            except OutcomeUnknown:
                if time.monotonic() >= deadline:
                    raise
                unknown = True
                continue
            if result.succeeded or not unknown:
                return result
            kvs = result.responses[0].get("response_range", {}).get("kvs", []) \
                if result.responses else []
            held = parse_kv(kvs[0]) if kvs else None
            return TxnResult(mine(held), result.revision, result.responses)

    # -- leases --------------------------------------------------------------------------

    def lease_grant(self, ttl_s: int) -> tuple[int, int]:
        """A new lease; returns (id, TTL granted in seconds: etcd may raise it to its minimum).
        Not repeated on an unknown outcome: a lease granted unknowingly just expires."""
        data = self.call("/v3/lease/grant", {"TTL": str(ttl_s)}, idempotent=False)
        return int(data["ID"]), int(data["TTL"])

    def lease_keepalive(self, lease: int) -> int:
        """Renew ``lease`` to its full TTL; returns that TTL, 0 if the lease is gone."""
        data = self.call("/v3/lease/keepalive", {"ID": str(lease)}, idempotent=True)
        return max(0, int(data.get("result", {}).get("TTL", 0)))

    def lease_revoke(self, lease: int) -> None:
        """Revoke ``lease`` and delete its keys; a lease already gone is not an error."""
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease)}, idempotent=True)
        except EtcdError as e:
            if "lease not found" not in e.message:
                raise

    # -- cluster -------------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        return list(self.call("/v3/cluster/member/list", {}, idempotent=True)
                    .get("members", []))

    def member_status(self, client_url: str, timeout_s: float = 0.5) -> dict[str, Any] | None:
        """One member's own status (no failover: it is that member's answer), None if it
        does not answer."""
        try:
            resp = self._http.post(client_url.rstrip("/") + "/v3/maintenance/status", json={},
                                   timeout=timeout_s)
            data: dict[str, Any] = resp.json()
        except (httpx.HTTPError, ValueError):
            return None
        return data if resp.status_code == 200 and "error" not in data else None

    # -- watches -------------------------------------------------------------------------

    async def watch(self, key: bytes, *, prefix: bool = False,
                    start_revision: int = 0) -> AsyncIterator[tuple[int, WatchEvent]]:
        """Changes of ``key`` (or every key under it) from ``start_revision`` on (0: from
        now), as (revision, event), in revision order, across endpoint failures: a broken
        stream is resumed on the next endpoint after the last revision seen. Raises
        ``StoreUnavailable`` once no endpoint has served it for
        ``watch_reconnect_timeout_s``, ``EtcdCompacted`` if the history is gone.

        A member that loses its leader ends the stream (the ``hasleader`` metadata, as
        etcd's own client sends with ``WithRequireLeader``), so a watcher cut off with a
        minority member moves on instead of waiting in silence."""
        next_rev = start_revision
        broken_since: float | None = None
        timeout = httpx.Timeout(self._timeout.connect or 1.0, read=None)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False,
                                     transport=httpx.AsyncHTTPTransport(retries=0)) as http:
            while True:
                ep = self._endpoint()
                create: dict[str, Any] = {"key": b64(key)}
                if prefix:
                    create["range_end"] = b64(prefix_end(key))
                if next_rev:
                    create["start_revision"] = str(next_rev)
                try:
                    async with http.stream("POST", ep + "/v3/watch",
                                           json={"create_request": create},
                                           headers={"Grpc-Metadata-hasleader": "true"}) as resp:
                        if resp.status_code != 200:
                            raise _Retry(f"{ep}: HTTP {resp.status_code}")
                        async for line in resp.aiter_lines():
                            if not line.strip():
                                continue
                            res = _watch_result(ep, line)
                            broken_since = None
                            if not next_rev:
                                next_rev = int(res.get("header", {}).get("revision", 0)) + 1
                            for ev in res.get("events", []):
                                kv = parse_kv(ev.get("kv", {}))
                                next_rev = kv.mod_revision + 1
                                kind: Literal["put", "delete"] = (
                                    "delete" if ev.get("type") == "DELETE" else "put")
                                yield kv.mod_revision, WatchEvent(kind, kv)
                        raise _Retry(f"{ep}: watch stream ended")
                except (httpx.TransportError, _Retry) as e:
                    self._rotate(ep)
                    now = time.monotonic()
                    broken_since = broken_since or now
                    if now - broken_since >= self.watch_reconnect_timeout_s:
                        raise StoreUnavailable(f"etcd watch: no endpoint for"
                                               f" {self.watch_reconnect_timeout_s} s: {e}") from e
                    await asyncio.sleep(0.05)

    def close(self) -> None:
        self._http.close()


def _watch_result(ep: str, line: str) -> dict[str, Any]:
    try:
        msg = json.loads(line)
    except ValueError as e:
        raise _Retry(f"{ep}: unreadable watch message {line[:200]!r}") from e
    if "error" in msg:
        raise _Retry(f"{ep}: {msg['error']}")
    res: dict[str, Any] = msg.get("result", {})
    if res.get("canceled"):
        compacted = int(res.get("compact_revision", 0))
        if compacted:
            raise EtcdCompacted(compacted)
        raise _Retry(f"{ep}: watch cancelled: {res.get('cancel_reason', '')}")
    return res
