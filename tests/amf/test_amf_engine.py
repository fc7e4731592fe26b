"""The assignment engine, one redundancy model at a time."""

from __future__ import annotations

import pytest
from amf_support import IN, NOW, OUT, SUSPECT, UNKNOWN, group, record, snapshot, vnf
from pydantic import ValidationError

from nfvha.amf.engine import decide, orders
from nfvha.amf.model import (
    AssignmentRecord,
    HaState,
    Order,
    Readiness,
    ServiceGroup,
    Snapshot,
)


def settle(s: Snapshot) -> Snapshot:
    """Apply decisions until there are none (at most a few cycles)."""
    for _ in range(5):
        new = decide(s)
        if not new:
            return s
        s = s.applied(new)
    raise AssertionError("decide() does not settle")


def roles(s: Snapshot, si: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    r = s.record(si)
    assert r is not None
    return r.active, r.standby


# -- service groups ---------------------------------------------------------

def test_service_groups_from_the_topology() -> None:
    assert group("gw", "2n", 2).sis == ("gw",)
    assert group("gw", "none", 1).sis == ("gw",)
    assert group("lb", "n-way-active", 3).sis == ("lb",)
    assert group("w", "n+m", 3, active=2, spare=1).sis == ("w-1", "w-2")
    assert group("w", "n-way", 4).sis == ("w-1", "w-2", "w-3")
    assert group("w", "n-way", 2).sis == ("w-1",)
    g = group("gw", "2n", 2)
    assert g.sus == ("gw-a", "gw-b")
    assert g.escalation == vnf("gw", "2n", 2).escalation
    assert g.single_active("gw")
    assert not group("lb", "n-way-active", 3).single_active("lb")


def test_a_record_holds_an_su_once() -> None:
    with pytest.raises(ValidationError):
        record("gw", 1, active=["a"], standby=["a"])
    r = record("gw", 1, active=["a"], standby=["b"])
    assert (r.ha_state_of("a"), r.ha_state_of("b"), r.ha_state_of("c")) == (
        HaState.ACTIVE, HaState.STANDBY, None)


def test_a_group_with_two_sis_cannot_be_2n() -> None:
    with pytest.raises(ValidationError):
        ServiceGroup(name="gw", redundancy="2n", sus=("a", "b"), sis=("x", "y"))


# -- 2N ---------------------------------------------------------------------

def test_2n_first_assignment_then_nothing_to_do() -> None:
    g = group("gw", "2n", 2)
    new = decide(snapshot(g))
    assert new == [record("gw", 1, active=["gw-a"], standby=["gw-b"])]
    assert decide(snapshot(g, records=new)) == []


def test_2n_waits_for_unknown_sus() -> None:
    g = group("gw", "2n", 2)
    assert decide(snapshot(g, {"gw-a": UNKNOWN, "gw-b": UNKNOWN})) == []
    assert decide(snapshot(g, {"gw-a": UNKNOWN})) == [record("gw", 1, active=["gw-b"])]


def test_2n_failover_promotes_the_standby() -> None:
    g = group("gw", "2n", 2)
    old = record("gw", 4, active=["gw-a"], standby=["gw-b"])
    new = decide(snapshot(g, {"gw-a": OUT}, [old], now=NOW + 5))
    assert new == [record("gw", 5, active=["gw-b"], changed_time=NOW + 5)]
    assert orders(old, new[0]) == [
        Order(su="gw-a", si="gw", ha_state=None, epoch=5),
        Order(su="gw-b", si="gw", ha_state=HaState.ACTIVE, epoch=5),
    ]


@pytest.mark.parametrize("readiness", [SUSPECT, UNKNOWN, IN])
def test_2n_active_that_may_still_act_keeps_its_role(readiness: Readiness) -> None:
    g = group("gw", "2n", 2)
    old = record("gw", 4, active=["gw-a"], standby=["gw-b"])
    assert decide(snapshot(g, {"gw-a": readiness}, [old])) == []


def test_2n_repaired_su_becomes_standby_without_fail_back() -> None:
    g = group("gw", "2n", 2)
    s = settle(snapshot(g, {"gw-a": OUT}, [record("gw", 1, active=["gw-a"],
                                                  standby=["gw-b"])]))
    assert roles(s, "gw") == (("gw-b",), ())
    s = settle(s.model_copy(update={"sus": snapshot(g).sus}))
    assert roles(s, "gw") == (("gw-b",), ("gw-a",))
    assert s.records["gw"] == record("gw", 3, active=["gw-b"], standby=["gw-a"])


def test_2n_suspect_standby_is_not_promoted_but_kept() -> None:
    g = group("gw", "2n", 2)
    old = record("gw", 1, active=["gw-a"], standby=["gw-b"])
    new = decide(snapshot(g, {"gw-a": OUT, "gw-b": SUSPECT}, [old]))
    assert new == [record("gw", 2, standby=["gw-b"])]
    # Back in service, the standby (it has the state) is promoted.
    s = snapshot(g, {"gw-a": OUT}, new)
    assert decide(s) == [record("gw", 3, active=["gw-b"])]


@pytest.mark.req("VNFHA-10")
@pytest.mark.parametrize("standby", [SUSPECT, UNKNOWN])
def test_2n_stateful_waits_for_its_standby_rather_than_activate_a_restarted_su(
        standby: Readiness) -> None:
    """A new AM (a controller failover) hears the restarted active before the standby
    reconnects: the SI waits for the standby (it has the state); a stateless one
    takes the first SU in service."""
    old = record("gw", 1, standby=["gw-b"])  # gw-a failed, removed, restarted
    waiting = snapshot(group("gw", "2n", 2, stateful=True), {"gw-b": standby}, [old])
    assert decide(waiting) == []
    assert decide(waiting.model_copy(update={"sus": snapshot(waiting.group).sus})) == [
        record("gw", 2, active=["gw-b"], standby=["gw-a"])]
    stateless = snapshot(group("gw", "2n", 2), {"gw-b": standby}, [old])
    assert decide(stateless) == [record("gw", 2, active=["gw-a"], standby=["gw-b"])]
    # A standby confirmed gone is not waited for: the state is lost either way.
    gone = snapshot(group("gw", "2n", 2, stateful=True), {"gw-b": OUT}, [old])
    assert roles(settle(gone), "gw") == (("gw-a",), ())


def test_2n_both_lost_then_one_back_without_state() -> None:
    g = group("gw", "2n", 2)
    s = settle(snapshot(g, {"gw-a": OUT, "gw-b": OUT},
                        [record("gw", 1, active=["gw-a"], standby=["gw-b"])]))
    assert roles(s, "gw") == ((), ())
    s = settle(snapshot(g, {"gw-b": OUT}, [r for r in s.records.values() if r]))
    assert roles(s, "gw") == (("gw-a",), ())


# -- N+M --------------------------------------------------------------------

def test_nm_one_spare_protects_every_active() -> None:
    g = group("w", "n+m", 3, active=2, spare=1)
    s = settle(snapshot(g))
    assert roles(s, "w-1") == (("w-a",), ("w-c",))
    assert roles(s, "w-2") == (("w-b",), ("w-c",))


def test_nm_spares_share_the_load() -> None:
    g = group("w", "n+m", 4, active=2, spare=2)
    s = settle(snapshot(g))
    assert roles(s, "w-1") == (("w-a",), ("w-c",))
    assert roles(s, "w-2") == (("w-b",), ("w-d",))


def test_nm_promoted_spare_stops_protecting_the_others() -> None:
    g = group("w", "n+m", 3, active=2, spare=1)
    s = settle(snapshot(g))
    new = decide(snapshot(g, {"w-a": OUT}, [r for r in s.records.values() if r]))
    assert {r.si: (r.active, r.standby, r.epoch) for r in new} == {
        "w-1": (("w-c",), (), 2),
        "w-2": (("w-b",), (), 2),
    }
    # Then the second active fails too: no SU left to take it; w-2 waits.
    s = settle(snapshot(g, {"w-a": OUT, "w-b": OUT}, new))
    assert roles(s, "w-2") == ((), ())
    # The repaired SU is assigned as spare-turned-active, no fail-back on w-1.
    s = settle(s.model_copy(update={"sus": snapshot(g, {"w-b": OUT}).sus}))
    assert roles(s, "w-1") == (("w-c",), ())
    assert roles(s, "w-2") == (("w-a",), ())


# -- N-way ------------------------------------------------------------------

def test_nway_an_active_may_also_be_standby() -> None:
    g = group("w", "n-way", 3)
    s = settle(snapshot(g))
    assert roles(s, "w-1") == (("w-a",), ("w-c",))
    assert roles(s, "w-2") == (("w-b",), ("w-c",))
    s = settle(snapshot(g, {"w-a": OUT}, [r for r in s.records.values() if r]))
    assert roles(s, "w-1") == (("w-c",), ("w-b",))
    assert roles(s, "w-2") == (("w-b",), ("w-c",))


# -- none and N-way-active -------------------------------------------------

def test_none_reassigns_the_same_su_after_repair() -> None:
    g = group("one", "none", 1)
    s = settle(snapshot(g))
    assert roles(s, "one") == (("one-a",), ())
    s = settle(snapshot(g, {"one-a": OUT}, [r for r in s.records.values() if r]))
    assert roles(s, "one") == ((), ())
    s = settle(s.model_copy(update={"sus": snapshot(g).sus}))
    assert roles(s, "one") == (("one-a",), ())


def test_nway_active_every_in_service_su_is_active() -> None:
    g = group("lb", "n-way-active", 4)
    s = settle(snapshot(g, {"lb-d": UNKNOWN}))
    assert roles(s, "lb") == (("lb-a", "lb-b", "lb-c"), ())
    new = decide(snapshot(g, {"lb-a": OUT, "lb-b": SUSPECT}, [r for r in s.records.values()
                                                              if r]))
    assert new == [record("lb", 2, active=["lb-b", "lb-c", "lb-d"])]


# -- orders -------------------------------------------------------------------

def test_orders_release_before_promote_and_refresh_the_rest() -> None:
    old = record("w", 3, active=["a"], standby=["b"])
    new = record("w", 4, active=["b"], standby=["c"])
    assert [(o.su, o.ha_state) for o in orders(old, new)] == [
        ("a", None), ("c", HaState.STANDBY), ("b", HaState.ACTIVE)]
    assert {o.epoch for o in orders(old, new)} == {4}
    repaired = record("w", 5, active=["b"], standby=["c", "a"])
    assert [(o.su, o.ha_state) for o in orders(new, repaired)] == [
        ("c", HaState.STANDBY), ("a", HaState.STANDBY), ("b", HaState.ACTIVE)]
    assert [o.su for o in orders(new, repaired, only_changed=True)] == ["a"]
    assert [o.su for o in orders(None, new)] == ["c", "b"]


def test_orders_refuse_records_of_two_sis() -> None:
    with pytest.raises(ValueError, match="different SIs"):
        orders(record("x", 1, active=["a"]), record("y", 2, active=["a"]))


def test_every_record_is_one_epoch_newer() -> None:
    g = group("w", "n+m", 5, active=3, spare=2)
    s = settle(snapshot(g))
    before: dict[str, AssignmentRecord | None] = dict(s.records)
    new = decide(snapshot(g, {"w-a": OUT, "w-d": OUT}, [r for r in before.values() if r]))
    assert new
    for r in new:
        old = before[r.si]
        assert old is not None and r.epoch == old.epoch + 1
