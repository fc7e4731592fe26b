"""Random fault sequences against the engine, the store and simulated components.

The simulation plays the AM's caller (ADR 0008): it decides from a snapshot,
writes each record by compare-and-set before sending its orders, and reports a
restarted component out-of-service until it is out of every record.

Components follow the SDK's rules: keep the highest epoch seen per SI and
refuse lower ones; act as active only while holding a lease. Orders are
delivered late, out of order and more than once, so a lease cannot be renewed
by whatever message arrives (a late one would extend it past what the AM
counted on): a lease is granted in reply to the component's own request, and
the reply carries the component's current assignments at their epochs. A
partitioned component's lease lapses; the AM, once the lease and its margin
have passed, counts it out-of-service and grants it no lease until it is out
of every record. A crashed component loses its orders with its connection.

Properties, after every step:
- no stored record of a single-active SI has two actives, and no two live
  components believe they are active for it (so no two hold its VIP: IF-1);
- an active is moved only away from an SU confirmed out-of-service;
- the stored epoch of an SI rises by exactly one per write, and the orders for
  an SI carry strictly increasing epochs;
- decide() applied and decided again does nothing;
- two AMs deciding from the same snapshot: exactly one write wins per SI;
- healed, the system converges: every component's role is its record's.

Deterministic cases below pin the protocol rules the random search found or
needs many steps to reach.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from amf_support import IN, OUT, SUSPECT, vnf
from hypothesis import given, settings
from hypothesis import strategies as st

from nfvha.amf.engine import decide, orders
from nfvha.amf.model import (
    AssignmentRecord,
    HaState,
    Order,
    ServiceGroup,
    Snapshot,
    SuView,
)
from nfvha.model.topology import Redundancy
from nfvha.store.assignments import SqliteAssignmentStore

_names = itertools.count()


@dataclass
class Component:
    alive: bool = True
    suspect: bool = False
    latched: bool = False  # restarted or lease lapsed: out-of-service until out of every record
    leased: bool = False
    highest: dict[str, int] = field(default_factory=dict)
    role: dict[str, HaState | None] = field(default_factory=dict)
    inbox: list[Order] = field(default_factory=list)  # not yet delivered
    sent: list[Order] = field(default_factory=list)  # all this incarnation was sent

    def deliver(self, order: Order) -> bool:
        if order.epoch < self.highest.get(order.si, 0):
            return False  # refused: stale
        self.highest[order.si] = order.epoch
        self.role[order.si] = order.ha_state
        return True

    def acts_as_active(self, si: str) -> bool:
        return self.alive and self.leased and self.role.get(si) is HaState.ACTIVE


class World:
    def __init__(self, group: ServiceGroup, store: SqliteAssignmentStore) -> None:
        self.group = group
        self.store = store
        self.components = {su: Component() for su in group.sus}
        self.epochs: dict[str, int] = dict.fromkeys(group.sis, 0)
        self.order_epochs: dict[str, int] = dict.fromkeys(group.sis, 0)
        self.now = 1_800_000_000.0

    def ranked(self) -> list[str]:
        """SUs, actives first, then standbys: low step indexes hit the interesting ones."""
        records = [r for r in self.records().values() if r]
        def rank(su: str) -> int:
            return min((0 if su in r.active else 1 if su in r.standby else 2 for r in records),
                       default=2)
        return sorted(self.group.sus, key=rank)

    def records(self) -> dict[str, AssignmentRecord | None]:
        return {si: self.store.get(si) for si in self.group.sis}

    def snapshot(self) -> Snapshot:
        records = self.records()
        views = {}
        for su, c in self.components.items():
            if c.latched and not any(r and su in r.members for r in records.values()):
                c.latched = False
            ready = OUT if not c.alive or c.latched else SUSPECT if c.suspect else IN
            views[su] = SuView(name=su, readiness=ready)
        self.now += 1
        return Snapshot(group=self.group, sus=views, records=records, now=self.now)

    # -- steps --------------------------------------------------------------
    def fail(self, su: str) -> None:
        self.components[su] = Component(alive=False)

    def repair(self, su: str) -> None:
        if not self.components[su].alive:
            self.components[su] = Component(latched=True)

    def lease_lapses(self, su: str) -> None:
        """Partitioned long enough: the component quiesces itself, and the AM, once
        the lease and its margin have passed, counts it out-of-service."""
        c = self.components[su]
        c.suspect = True
        if c.alive:
            for si, state in c.role.items():
                if state is HaState.ACTIVE:
                    c.role[si] = HaState.QUIESCED
            c.leased = False
            c.latched = True

    def renew(self, su: str) -> None:
        """The component asks for its lease; the reply carries its assignments."""
        c = self.components[su]
        if not c.alive or c.suspect or c.latched:
            return  # unreachable, or the AM has counted it out: no lease
        for si, r in self.records().items():
            if r is not None:
                c.deliver(Order(su=su, si=si, ha_state=r.ha_state_of(su), epoch=r.epoch))
        c.leased = True

    def decide_and_apply(self) -> None:
        snap = self.snapshot()
        new = decide(snap)
        for r in new:
            old = snap.record(r.si)
            self.check_decision(snap, old, r)
            assert self.store.compare_and_set(r.si, old.epoch if old else 0, r)
            self.send(orders(old, r))
        assert decide(snap.applied(new)) == []

    def race(self) -> None:
        """Two AMs decide from one snapshot; the second loses every write."""
        snap = self.snapshot()
        first, second = decide(snap), decide(snap)
        for r in first:
            old = snap.record(r.si)
            assert self.store.compare_and_set(r.si, old.epoch if old else 0, r)
            self.send(orders(old, r))
        for r in second:
            old = snap.record(r.si)
            assert not self.store.compare_and_set(r.si, old.epoch if old else 0, r)

    def send(self, sent: list[Order]) -> None:
        for o in sent:
            assert o.epoch > self.order_epochs[o.si]
            c = self.components[o.su]
            if c.alive:
                c.inbox.append(o)
                c.sent.append(o)
        for o in sent:
            self.order_epochs[o.si] = o.epoch

    def deliver_next(self, su: str) -> None:
        c = self.components[su]
        if c.alive and c.inbox:
            c.deliver(c.inbox.pop(0))

    def flush(self) -> None:
        for su, c in self.components.items():
            while c.alive and c.inbox:
                self.deliver_next(su)

    def deliver_any(self, su: str, pick: int) -> None:
        """A late, reordered or duplicated order (e.g. from a deposed AM); for an
        even ``pick`` one that made the component active, the dangerous kind."""
        c = self.components[su]
        promotions = [o for o in c.sent if o.ha_state is HaState.ACTIVE]
        choices = promotions if promotions and pick % 2 == 0 else c.sent
        if c.alive and choices:
            order = choices[pick // 2 % len(choices)]
            if c.deliver(order) and order in c.inbox:
                c.inbox.remove(order)

    def replay(self, pick: int) -> None:
        """Every component gets one of its older orders again."""
        for su in self.components:
            self.deliver_any(su, pick)

    # -- properties -----------------------------------------------------------
    def check_decision(self, snap: Snapshot, old: AssignmentRecord | None,
                       new: AssignmentRecord) -> None:
        if self.group.single_active(new.si):
            assert len(new.active) <= 1
        for su in old.active if old else ():
            if su not in new.active:
                assert snap.readiness(su) is OUT, f"active {su} moved while {snap.readiness(su)}"

    def check(self) -> None:
        for si, r in self.records().items():
            epoch = r.epoch if r else 0
            assert epoch >= self.epochs[si]
            self.epochs[si] = epoch
            if r is not None and self.group.single_active(si):
                assert len(r.active) <= 1
                believers = [su for su, c in self.components.items() if c.acts_as_active(si)]
                assert len(believers) <= 1, f"{si}: {believers} all act as active"

    def heal_and_converge(self) -> None:
        for su, c in self.components.items():
            self.repair(su)
            c.suspect = False
        for _ in range(4):
            self.decide_and_apply()
        self.flush()
        for su in self.components:
            self.renew(su)
        self.check()
        assert decide(self.snapshot()) == []
        for si, r in self.records().items():
            for su, c in self.components.items():
                assert c.role.get(si) == (r.ha_state_of(su) if r else None), (si, su)
            if self.group.single_active(si):
                assert r is not None and len(r.active) == 1


@st.composite
def shapes(draw: st.DrawFn) -> tuple[Redundancy, int, int | None, int | None]:
    redundancy: Redundancy = draw(st.sampled_from(["2n", "n+m", "n-way", "n-way-active",
                                                   "none"]))
    if redundancy == "2n":
        return redundancy, 2, None, None
    if redundancy == "none":
        return redundancy, 1, None, None
    if redundancy == "n+m":
        n, m = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        return redundancy, n + m, n, m
    return redundancy, draw(st.integers(2, 4)), None, None


STEPS = st.lists(st.tuples(
    # Weighted by repetition: decisions and deliveries are what faults interleave with.
    st.sampled_from(["fail", "repair", "suspect", "trust", "lapse", "renew", "tick", "tick",
                     "decide", "decide", "race", "flush", "flush", "next", "any", "replay",
                     "replay"]),
    st.integers(0, 4), st.integers(0, 1_000)), min_size=30, max_size=80)


@pytest.fixture(scope="module")
def shared_store() -> Iterator[SqliteAssignmentStore]:
    # One database for every example: each example's VNF (and so its SIs) has a
    # name of its own, and a migration per example would cost more than the test.
    with tempfile.TemporaryDirectory(prefix="nfvha-test-amf-") as d:
        store = SqliteAssignmentStore(Path(d) / "amf.db")
        try:
            yield store
        finally:
            store.close()


@pytest.mark.req("IF-1")
@settings(max_examples=500, deadline=None)
@given(shape=shapes(), steps=STEPS)
def test_no_two_actives_under_random_faults(
        shared_store: SqliteAssignmentStore,
        shape: tuple[Redundancy, int, int | None, int | None],
        steps: list[tuple[str, int, int]]) -> None:
    redundancy, n, active, spare = shape
    group = ServiceGroup.from_vnf(vnf(f"v{next(_names)}", redundancy, n, active=active,
                                      spare=spare))
    world = World(group, shared_store)
    for op, i, pick in steps:
        su = world.ranked()[i % len(group.sus)]
        c = world.components[su]
        if op == "fail":
            world.fail(su)
        elif op == "repair":
            world.repair(su)
        elif op == "suspect":
            c.suspect = True
        elif op == "trust":
            c.suspect = False
        elif op == "lapse":
            world.lease_lapses(su)
        elif op == "renew":
            world.renew(su)
        elif op == "tick":  # every reachable component renews its lease
            for name in group.sus:
                world.renew(name)
        elif op == "replay":
            world.replay(pick)
        elif op == "decide":
            world.decide_and_apply()
        elif op == "race":
            world.race()
        elif op == "next":
            world.deliver_next(su)
        elif op == "flush":
            world.flush()
        else:
            world.deliver_any(su, pick)
        world.check()
    world.heal_and_converge()


def test_a_late_order_does_not_revive_a_lapsed_active(
        shared_store: SqliteAssignmentStore) -> None:
    """The old active, partitioned, lets its lease lapse; the standby takes over;
    the partition heals; the old order to be active arrives late."""
    group = ServiceGroup.from_vnf(vnf(f"v{next(_names)}", "2n", 2))
    world = World(group, shared_store)
    a, b = group.sus
    si = group.sis[0]
    world.decide_and_apply()
    world.flush()
    world.renew(a)
    world.renew(b)
    old_order = world.components[a].sent[-1]
    assert old_order.ha_state is HaState.ACTIVE and world.components[a].acts_as_active(si)
    world.lease_lapses(a)
    world.decide_and_apply()
    world.flush()
    assert world.components[b].acts_as_active(si)
    world.components[a].suspect = False
    world.decide_and_apply()  # a, out of every record, is in service again: standby
    world.renew(a)
    assert not world.components[a].deliver(old_order)
    assert not world.components[a].acts_as_active(si)
    world.check()
    world.heal_and_converge()


def test_an_order_delayed_past_the_lease_does_not_make_an_active(
        shared_store: SqliteAssignmentStore) -> None:
    """Found by the property test against ADR 0008's first lease rule ("every AM
    message renews the lease"): the order to be active reaches the component only
    after the AM has counted its lease out and moved the SI."""
    group = ServiceGroup.from_vnf(vnf(f"v{next(_names)}", "2n", 2))
    world = World(group, shared_store)
    a, b = group.sus
    si = group.sis[0]
    world.decide_and_apply()  # a active, b standby; nothing delivered yet
    world.lease_lapses(a)
    world.decide_and_apply()  # b active
    world.deliver_next(a)  # the late order (the removal behind it is later still)
    while world.components[b].inbox:
        world.deliver_next(b)
    world.renew(b)
    assert world.components[a].role[si] is HaState.ACTIVE  # accepted...
    assert not world.components[a].acts_as_active(si)  # ...but without a lease
    assert world.components[b].acts_as_active(si)
    world.check()
    world.heal_and_converge()


def test_an_su_counted_out_gets_no_lease_until_out_of_every_record(
        shared_store: SqliteAssignmentStore) -> None:
    """Between the AM counting a lapsed active out and writing the record that
    moves its SI, a lease granted from the old record would let it act again."""
    group = ServiceGroup.from_vnf(vnf(f"v{next(_names)}", "2n", 2))
    world = World(group, shared_store)
    a, b = group.sus
    si = group.sis[0]
    world.decide_and_apply()
    world.flush()
    world.renew(a)
    world.renew(b)
    world.lease_lapses(a)
    world.components[a].suspect = False  # reachable again, still counted out
    world.renew(a)
    assert not world.components[a].acts_as_active(si)
    world.decide_and_apply()
    world.deliver_next(b)
    world.deliver_next(b)
    assert world.components[b].acts_as_active(si)
    world.check()
    world.heal_and_converge()
