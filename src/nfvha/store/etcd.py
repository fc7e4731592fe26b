"""The coordination stores on etcd: role assignments, checkpoints, the leader lease (ADR 0012).

Keys, under a prefix shared by one nfvha cluster (default ``/nfvha/``); names are
percent-encoded so that a ``/`` in one cannot reach another's key::

    <prefix>amf/assignments/<si>          the AssignmentRecord (JSON)
    <prefix>amf/checkpoints/<owner>/<key>  a checkpoint value (JSON)
    <prefix>leader/<name>                  the leader's name, attached to its lease

Compare-and-set in one round trip: a record is written only by compare-and-set,
each write raises its epoch by exactly one, and etcd counts a key's writes since
its creation in the key's ``version``; so the stored epoch *is* the key's version,
and the transaction compares ``version(key) == expected_epoch`` (0 when the key
does not exist). Reads check the two agree.

A checkpoint's version is etcd's key version too (``prev_kv`` of the put says
what it was); the leader's epoch is the leader key's create revision, which rises
with every new term.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import suppress
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from nfvha.amf.model import AssignmentRecord
from nfvha.store.assignments import check_cas
from nfvha.store.base import StoreUnavailable
from nfvha.store.etcd_client import (
    EtcdClient,
    EtcdError,
    KeyValue,
    OutcomeUnknown,
    TxnResult,
    cmp_create_revision,
    cmp_version,
    op_delete,
    op_put,
    parse_kv,
)
from nfvha.store.leader import HeldTerm, LeaderTerm, whole_seconds
from nfvha.util.clock import SYSTEM_CLOCK, Clock

DEFAULT_PREFIX = "/nfvha/"


def _seg(name: str) -> str:
    return quote(name, safe="")


# The conditions a write must meet besides its own: the leader's term still holds
# (``EtcdLeaderLease.fence``); None: this controller holds no term, write nothing.
WriteFence = Callable[[], list[dict[str, Any]] | None]


class EtcdAssignmentStore:
    def __init__(self, client: EtcdClient, *, prefix: str = DEFAULT_PREFIX,
                 owns_client: bool = False, fence: WriteFence | None = None) -> None:
        """``fence``: in a cluster, the leader lease's (ADR 0013): a record is written only
        while the writer's term is the one in etcd, in the same transaction, so a leader
        that lost its term cannot write one, however late its request arrives."""
        self.client = client
        self._fence = fence
        self._records = f"{prefix}amf/assignments/"
        self._checkpoints = f"{prefix}amf/checkpoints/"
        self._owns_client = owns_client

    @classmethod
    def connect(cls, endpoints: Sequence[str], *, prefix: str = DEFAULT_PREFIX,
                **client_options: Any) -> EtcdAssignmentStore:
        return cls(EtcdClient(endpoints, **client_options), prefix=prefix, owns_client=True)

    def _key(self, si: str) -> bytes:
        return (self._records + _seg(si)).encode()

    def get(self, si: str) -> AssignmentRecord | None:
        kv = self.client.get(self._key(si))
        return self._record(kv) if kv else None

    def all(self) -> dict[str, AssignmentRecord]:
        return self.snapshot()[0]

    def snapshot(self) -> tuple[dict[str, AssignmentRecord], int]:
        """Every record and the store revision they were read at (watch from revision + 1)."""
        kvs, revision = self.client.range(self._records.encode(), prefix=True)
        records = [self._record(kv) for kv in kvs]
        return {r.si: r for r in sorted(records, key=lambda r: r.si)}, revision

    def compare_and_set(self, si: str, expected_epoch: int, record: AssignmentRecord) -> bool:
        check_cas(si, expected_epoch, record)
        key, body = self._key(si), record.model_dump_json().encode()
        fence = self._fence() if self._fence is not None else []
        if fence is None:
            return False  # no term of ours: another leader's decision, or none
        return self.client.write_conditionally(
            [cmp_version(key, expected_epoch), *fence], [op_put(key, body)],
            lambda kv: kv is not None and kv.value == body and kv.version == record.epoch,
            key).succeeded

    def checkpoint_write(self, owner: str, key: str, value: Any) -> int:
        try:
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {owner}/{key} is not JSON: {e}") from e
        ckey = self._ckey(owner, key)
        deadline = time.monotonic() + self.client.op_timeout_s
        while True:
            try:
                prev = self.client.put(ckey, text.encode())
            except OutcomeUnknown:
                # writing the same value again is harmless (the version may skip one)
                if time.monotonic() >= deadline:
                    raise
                continue
            except EtcdError as e:  # too large, mostly: the value is refused, not the store
                raise ValueError(f"checkpoint {owner}/{key} refused by etcd: {e.message}") from e
            return prev.version + 1 if prev else 1

    def checkpoint_read(self, owner: str, key: str) -> tuple[int, Any] | None:
        kv = self.client.get(self._ckey(owner, key))
        if kv is None:
            return None
        try:
            return kv.version, json.loads(kv.value)
        except ValueError as e:
            raise StoreUnavailable(f"unreadable checkpoint {owner}/{key}: {e}") from e

    async def watch(self, after_revision: int) -> AsyncIterator[AssignmentRecord]:
        """Every record written after ``after_revision`` (from ``snapshot()``), in order."""
        async for _rev, ev in self.client.watch(self._records.encode(), prefix=True,
                                                start_revision=after_revision + 1):
            if ev.type == "put":
                yield self._record(ev.kv)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def _ckey(self, owner: str, key: str) -> bytes:
        return f"{self._checkpoints}{_seg(owner)}/{_seg(key)}".encode()

    @staticmethod
    def _record(kv: KeyValue) -> AssignmentRecord:
        try:
            record = AssignmentRecord.model_validate_json(kv.value)
        except ValidationError as e:
            raise StoreUnavailable(f"unreadable assignment record: {e}") from e
        if record.epoch != kv.version:
            raise StoreUnavailable(
                f"assignment record of {record.si} at epoch {record.epoch} was written"
                f" {kv.version} times: not written by compare-and-set alone")
        return record


class EtcdLeaderLease(HeldTerm):
    """The leader key, created only if absent and attached to an etcd lease (see
    ``store.leader`` for the contract). ``ttl_s`` is rounded up to whole seconds."""

    def __init__(self, client: EtcdClient, name: str, holder: str, ttl_s: float, *,
                 prefix: str = DEFAULT_PREFIX, clock: Clock = SYSTEM_CLOCK,
                 owns_client: bool = False) -> None:
        self.client = client
        self.holder = holder
        self.ttl_s = float(whole_seconds(ttl_s))
        self._key = f"{prefix}leader/{_seg(name)}".encode()
        self._clock = clock
        self._owns_client = owns_client
        self._lease = 0
        self._term: LeaderTerm | None = None
        self._valid_until_ns = 0

    def acquire(self) -> bool:
        if self._term is not None and self.renew():
            return True
        sent = self._clock.mono_ns()
        lease, ttl = self.client.lease_grant(int(self.ttl_s))
        try:
            result = self.client.write_conditionally(
                [cmp_create_revision(self._key, 0)],
                [op_put(self._key, self.holder.encode(), lease=lease)],
                lambda kv: kv is not None and kv.lease == lease, self._key)
        except StoreUnavailable:
            self._revoke_quietly(lease)  # if we did win, the unrenewed lease ends the term
            raise
        if not result.succeeded:
            self._revoke_quietly(lease)
            return False
        self._lease = lease
        self._term = LeaderTerm(self.holder, self._created(result))
        self._valid_until_ns = sent + ttl * 1_000_000_000
        return True

    def renew(self) -> bool:
        term = self._term
        if term is None:
            return False
        sent = self._clock.mono_ns()
        ttl = self.client.lease_keepalive(self._lease)
        kv = self.client.get(self._key) if ttl > 0 else None
        if kv is None or kv.lease != self._lease or kv.create_revision != term.epoch:
            self._revoke_quietly(self._lease)
            self._lose()
            return False
        self._valid_until_ns = sent + ttl * 1_000_000_000
        return True

    def release(self) -> None:
        term, lease = self._term, self._lease
        self._lose()
        if term is None:
            return
        self.client.txn([cmp_create_revision(self._key, term.epoch)], [op_delete(self._key)])
        self.client.lease_revoke(lease)

    def leader(self) -> LeaderTerm | None:
        kv = self.client.get(self._key)
        return LeaderTerm(kv.value.decode(), kv.create_revision) if kv else None

    @property
    def key(self) -> str:
        """The leader key: its create revision is the epoch (the write fence)."""
        return self._key.decode()

    def fence(self) -> list[dict[str, Any]] | None:
        """The comparison that holds while our term is etcd's (the leader key still has
        our term's create revision), for writes that only the leader may make; None
        when we hold no term."""
        term = self._term
        return None if term is None else [cmp_create_revision(self._key, term.epoch)]

    async def watch(self) -> AsyncIterator[LeaderTerm | None]:
        """The leader now, then every change: a term when one starts, None when the key
        goes (released, or its lease expired), the moment to campaign."""
        kvs, revision = await asyncio.to_thread(self.client.range, self._key)
        yield LeaderTerm(kvs[0].value.decode(), kvs[0].create_revision) if kvs else None
        async for _rev, ev in self.client.watch(self._key, start_revision=revision + 1):
            yield LeaderTerm(ev.kv.value.decode(), ev.kv.create_revision) \
                if ev.type == "put" else None

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    @staticmethod
    def _created(result: TxnResult) -> int:
        """The leader key's create revision: the put's own revision when it went through
        first time, else (a retried write found ours there) the key's as read."""
        if result.responses and "response_range" in result.responses[0]:
            return parse_kv(result.responses[0]["response_range"]["kvs"][0]).create_revision
        return result.revision

    def _lose(self) -> None:
        self._term = None
        self._lease = 0
        self._valid_until_ns = 0

    def _revoke_quietly(self, lease: int) -> None:
        if not lease:
            return
        with suppress(StoreUnavailable):  # it expires by itself
            self.client.lease_revoke(lease)
