"""The store health classification (MW-3) from member states, without servers: the
states a live cluster shows only briefly (rebuilding) are built here."""

from __future__ import annotations

import pytest

from nfvha.store.health import MemberHealth, classify

pytestmark = pytest.mark.req("MW-3")


def member(i: int, *, up: bool = True, leader: str = "1", index: int = 500,
           applied: int | None = None, learner: bool = False,
           errors: list[str] | None = None) -> tuple[MemberHealth, str | None]:
    m = MemberHealth(name=f"m{i}", id=str(i), endpoint=f"http://127.0.0.1:{2379 + i}",
                     reachable=up, is_leader=up and leader == str(i), learner=learner,
                     has_leader=up and leader != "0", raft_index=index if up else None,
                     applied_index=(index if applied is None else applied) if up else None,
                     errors=errors or [])
    return m, (leader if up else None)


def health(*members: tuple[MemberHealth, str | None], lag: int = 100) -> tuple[str, str]:
    ms = [m for m, _ in members]
    leaders = {m.id: v for m, v in members if v is not None}
    h = classify(ms, leaders, rebuild_lag=lag)
    return h.state, h.reason


def test_all_up_and_applied_is_in_sync() -> None:
    state, _ = health(member(1), member(2, applied=480), member(3))
    assert state == "in-sync"


def test_a_member_far_behind_or_a_learner_is_rebuilding() -> None:
    state, reason = health(member(1, index=5000), member(2, index=5000, applied=1200),
                           member(3, index=5000))
    assert (state, reason) == ("rebuilding", "catching up: m2")
    state, reason = health(member(1), member(2), member(3), member(4, learner=True))
    assert (state, reason) == ("rebuilding", "catching up: m4")


def test_a_member_down_leaderless_or_alarmed_is_degraded() -> None:
    assert health(member(1), member(2), member(3, up=False))[0] == "degraded"
    assert health(member(1), member(2), member(3, leader="0"))[0] == "degraded"
    state, reason = health(member(1), member(2), member(3, errors=["NOSPACE"]))
    assert state == "degraded" and "m3: NOSPACE" in reason


def test_no_quorum_agreeing_on_a_leader_is_unavailable() -> None:
    assert health(member(1), member(2, up=False), member(3, up=False))[0] == "unavailable"
    assert health(member(1, leader="0"), member(2, leader="0"), member(3, up=False))[0] == \
        "unavailable"
    # two leaders claimed (a stale one in a minority): only a quorum's counts
    assert health(member(1, leader="1"), member(2, leader="2"), member(3, up=False))[0] == \
        "unavailable"
