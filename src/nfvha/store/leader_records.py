"""The assignment records as the leader of a term keeps them (ADR 0012, 0013, 0014)."""

from __future__ import annotations

import functools
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from nfvha.amf.model import AssignmentRecord
from nfvha.store.assignments import AssignmentStore
from nfvha.store.base import StoreUnavailable


class LeaderRecords:
    """The assignment records as the leader of a term keeps them: read once from etcd,
    then from memory, updated by its own compare-and-sets. Sound because nobody else
    writes during the term (the writes are fenced by it). The VNFM reads the records
    for every lease grant, on the event loop: from etcd, each read would hold the loop
    for a round trip, and for the whole deadline while etcd cannot be reached.

    Writes (and checkpoints) run in worker threads; the caller waits ``block_s`` at
    most. An answer later than that is "no answer" (``StoreUnavailable``: the write
    may still land, ADR 0012): the loop is never held for etcd's deadline - which, in
    an etcd leader election, outlasted the controller's own lease renewals and cost it
    its term. Until such a write is settled, another write of the same record is
    refused at once.

    A write that lost (another record is there) or got no answer makes the record
    uncertain: it is read again in the background, and until then the old one is
    served. Serving it is safe: the record that may have replaced it has the next
    epoch and none of its orders went out; a decision taken from the old one fails its
    compare-and-set and is taken again, and the lease grants state whatever record
    the cache holds once it is settled."""

    def __init__(self, store: AssignmentStore, *, block_s: float = 0.1,
                 workers: int = 4) -> None:
        self._store = store
        self._block_s = block_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="records")
        self._known: dict[str, AssignmentRecord | None] = {}
        self._writes: dict[str, int] = {}  # si -> local writes, to drop stale refreshes
        self._inflight: set[str] = set()
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()

    def get(self, si: str) -> AssignmentRecord | None:
        with self._lock:
            if si in self._known:
                return self._known[si]
        rec = self._store.get(si)
        with self._lock:
            self._known.setdefault(si, rec)
            return self._known[si]

    def all(self) -> dict[str, AssignmentRecord]:
        records = self._store.all()
        with self._lock:
            self._known.update(records)
        return records

    def compare_and_set(self, si: str, expected_epoch: int, record: AssignmentRecord) -> bool:
        with self._lock:
            if si in self._inflight:
                raise StoreUnavailable(f"an earlier write of {si} has no answer yet")
            self._inflight.add(si)
            self._writes[si] = self._writes.get(si, 0) + 1
        try:
            fut = self._submit(self._store.compare_and_set, si, expected_epoch, record)
        except StoreUnavailable:
            with self._lock:
                self._inflight.discard(si)
            raise
        fut.add_done_callback(functools.partial(self._settled, si, record))
        ok = bool(self._wait(fut, f"compare-and-set of {si}"))
        if ok:  # the done callback may not have run yet: the next read must see it
            with self._lock:
                self._known[si] = record
        return ok

    def checkpoint_write(self, owner: str, key: str, value: Any) -> int:
        return int(self._wait(self._submit(self._store.checkpoint_write, owner, key, value),
                              f"checkpoint {owner}/{key}"))

    def checkpoint_read(self, owner: str, key: str) -> tuple[int, Any] | None:
        got: tuple[int, Any] | None = self._wait(
            self._submit(self._store.checkpoint_read, owner, key), f"checkpoint {owner}/{key}")
        return got

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._store.close()

    def _submit(self, fn: Any, *args: Any) -> Future[Any]:
        try:
            return self._pool.submit(fn, *args)
        except RuntimeError as e:  # shut down with the term
            raise StoreUnavailable(f"the store is closed: {e}") from None

    def _wait(self, fut: Future[Any], what: str) -> Any:
        try:
            return fut.result(timeout=self._block_s)
        except FutureTimeout:
            raise StoreUnavailable(f"{what}: no answer within {self._block_s:g} s; it may"
                                   " still be written") from None

    def _settled(self, si: str, record: AssignmentRecord,
                 fut: Future[bool]) -> None:
        with self._lock:
            self._inflight.discard(si)
        if not fut.cancelled() and fut.exception() is None and fut.result():
            with self._lock:
                self._known[si] = record
        else:
            self._refresh(si)

    def _refresh(self, si: str, pause_s: float = 0.1) -> None:
        """Read ``si`` again in a thread of its own, until etcd answers."""
        with self._lock:
            if si in self._refreshing:
                return
            self._refreshing.add(si)
            writes = self._writes.get(si, 0)

        def read() -> None:
            while True:
                try:
                    rec = self._store.get(si)
                except StoreUnavailable:
                    time.sleep(pause_s)
                    continue
                except Exception:  # closed with the term: nothing left to keep fresh
                    break
                with self._lock:
                    if self._writes.get(si, 0) == writes:
                        self._known[si] = rec
                break
            with self._lock:
                self._refreshing.discard(si)

        threading.Thread(target=read, name=f"refresh-{si}", daemon=True).start()
