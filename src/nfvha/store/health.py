"""A replicated store's health as the VIM reports it (MW-3): in-sync, rebuilding, degraded.

For etcd it is read from the members themselves: the member list, then each
member's own status (its raft leader, log index, applied index, alarms):

- ``unavailable``: no quorum of members agrees on a leader (``quorum`` is False,
  ``answering`` says which members still answer); nothing can be written;
- ``degraded``: writable, but a member is unreachable, has no leader, or raises an
  alarm (NOSPACE, CORRUPT): one more failure may stop the store;
- ``rebuilding``: every member is up, but one is a learner or its applied index lags
  the newest log index by more than ``rebuild_lag`` entries (a member catching up
  after a restart, from the log or a snapshot);
- ``in-sync``: every member is up, agrees on the leader and has applied (nearly)
  everything.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from nfvha.store.base import StoreUnavailable
from nfvha.store.etcd_client import EtcdClient

StoreState = Literal["in-sync", "rebuilding", "degraded", "unavailable"]
# Entries a member may trail by and still count as in sync: statuses are read one
# member after another while writes go on, so a few entries of lag are normal.
REBUILD_LAG_ENTRIES = 1000


class MemberHealth(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    id: str
    endpoint: str | None
    reachable: bool
    is_leader: bool = False
    learner: bool = False
    has_leader: bool = False
    raft_index: int | None = None
    applied_index: int | None = None
    errors: list[str] = []


class StoreHealth(BaseModel):
    model_config = ConfigDict(frozen=True)
    store: str
    state: StoreState
    reason: str
    leader: str | None = None
    members: list[MemberHealth] = []
    # A quorum of members agrees on a leader, as seen from here: a member cut off from
    # etcd sees no quorum either, and cannot tell the difference.
    quorum: bool = True
    answering: list[str] = []  # the members that answered (status)


def member_health(member: dict[str, Any], status: dict[str, Any] | None) -> MemberHealth:
    mid = str(member.get("ID", ""))
    urls = member.get("clientURLs") or []
    base = MemberHealth(name=str(member.get("name") or mid), id=mid,
                        endpoint=urls[0] if urls else None, reachable=status is not None,
                        learner=bool(member.get("isLearner", False)))
    if status is None:
        return base
    leader = str(status.get("leader", "0"))
    return base.model_copy(update={
        "is_leader": leader == mid, "has_leader": leader not in ("", "0"),
        "raft_index": int(status.get("raftIndex", 0)),
        "applied_index": int(status.get("raftAppliedIndex", status.get("raftIndex", 0))),
        "errors": [str(e) for e in status.get("errors", [])],
    })


def classify(members: list[MemberHealth], leaders: dict[str, str],
             rebuild_lag: int = REBUILD_LAG_ENTRIES, store: str = "etcd") -> StoreHealth:
    """``leaders``: member id -> the leader id that member reports (reachable ones)."""
    voters = [m for m in members if not m.learner]
    quorum = len(voters) // 2 + 1
    votes = Counter(v for v in leaders.values() if v not in ("", "0"))
    leader, agreeing = votes.most_common(1)[0] if votes else (None, 0)
    leader_name = next((m.name for m in members if m.id == leader), leader)
    answering = [m.name for m in members if m.reachable]
    if agreeing < quorum:
        return StoreHealth(store=store, state="unavailable", leader=None, members=members,
                           quorum=False, answering=answering,
                           reason=f"no quorum: {agreeing} of {len(voters)} members agree on"
                                  f" a leader, {quorum} needed; answering:"
                                  f" {', '.join(answering) or 'none'}")
    down = [m.name for m in members if not m.reachable or not m.has_leader]
    alarmed = [f"{m.name}: {', '.join(m.errors)}" for m in members if m.errors]
    if down or alarmed:
        why = [f"unreachable or leaderless: {', '.join(down)}"] if down else []
        return StoreHealth(store=store, state="degraded", leader=leader_name, members=members,
                           answering=answering, reason="; ".join(why + alarmed))
    newest = max(m.raft_index or 0 for m in members)
    behind = [m.name for m in members
              if m.learner or newest - (m.applied_index or 0) > rebuild_lag]
    if behind:
        return StoreHealth(store=store, state="rebuilding", leader=leader_name, members=members,
                           answering=answering, reason=f"catching up: {', '.join(behind)}")
    return StoreHealth(store=store, state="in-sync", leader=leader_name, members=members,
                       answering=answering, reason=f"{len(members)} members in sync")


def etcd_health(client: EtcdClient, rebuild_lag: int = REBUILD_LAG_ENTRIES,
                timeout_s: float = 0.5) -> StoreHealth:
    """Ask the cluster for its members, then each member for its status. The member list
    itself needs a reachable member: when none answers, the endpoints are reported."""
    try:
        listed = client.members()
    except StoreUnavailable as e:
        return StoreHealth(
            store="etcd", state="unavailable", quorum=False,
            reason=f"no quorum: no member answers ({e})",
            members=[MemberHealth(name=ep, id="", endpoint=ep, reachable=False)
                     for ep in client.endpoints])
    members: list[MemberHealth] = []
    leaders: dict[str, str] = {}
    for m in listed:
        urls = m.get("clientURLs") or []
        status = client.member_status(urls[0], timeout_s) if urls else None
        members.append(member_health(m, status))
        if status is not None:
            leaders[str(m.get("ID", ""))] = str(status.get("leader", "0"))
    return classify(members, leaders, rebuild_lag)
