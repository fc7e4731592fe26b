"""The assignment engine: one decision per cycle from an immutable snapshot (Patroni style).

``decide(snapshot)`` returns the records to write (each through the store's
compare-and-set, before any order is sent), only for SIs whose assignment
changes; applied and decided again it returns nothing. The caller reads all
records, decides, writes; if any compare-and-set loses, it re-reads and decides
again rather than send orders from a stale view.

Rules:

- A role is taken from an SU only when the SU is ``out-of-service`` (confirmed
  not acting). ``suspect`` and ``unknown`` SUs keep their roles: replacing an
  active that may still act would make two.
- An SI without an active gets one: its standby first (it has the state), in
  standby order, else the least loaded in-service SU in preference order.
  A stateful SI whose standby is not confirmed gone (suspect, unknown: not yet
  reconnected to a new AM, say) waits for it rather than give the active to an
  SU without the state. An SU holds at most one active; an SI stays unassigned
  rather than overload an SU. In 2N and N+M an SU that becomes active drops its standby roles.
- Standby slots (one per SI except ``none`` and ``n-way-active``) are filled
  from in-service SUs: in 2N and N+M from SUs active nowhere, the least loaded
  first, so one spare may protect several actives (UC-5); in N-way an SU
  active for one SI may be standby for another, SUs active nowhere first.
- ``n-way-active``: every in-service SU is active on the one SI.
- No fail-back: a repaired SU becomes a standby, the active stays where it is.

Contract for the caller: a component that restarted has lost its roles, so
until ``decide`` has removed it from every record the caller reports it
``out-of-service`` (even if it registered again), then ``in-service``. An
active's ``suspect`` becomes ``out-of-service`` only when its active lease plus
a margin has run out since the AM's last grant to it (ADR 0008).
"""

from __future__ import annotations

from nfvha.amf.model import AssignmentRecord, HaState, Order, Readiness, Snapshot

_Roles = dict[str, tuple[list[str], list[str]]]  # si -> (active, standby), being decided


def decide(snapshot: Snapshot) -> list[AssignmentRecord]:
    group = snapshot.group
    roles: _Roles = {}
    for si in group.sis:
        old = snapshot.record(si)
        active = [su for su in old.active if not _gone(snapshot, su)] if old else []
        standby = [su for su in old.standby if not _gone(snapshot, su)] if old else []
        roles[si] = (active, standby)

    if group.redundancy == "n-way-active":
        for si in group.sis:
            active = roles[si][0]
            active.extend(su for su in group.sus
                          if su not in active and _in_service(snapshot, su))
    else:
        for si in group.sis:
            _assign_active(snapshot, roles, si)
        for si in group.sis:
            _fill_standby(snapshot, roles, si)

    out: list[AssignmentRecord] = []
    for si in group.sis:
        old = snapshot.record(si)
        new_active, new_standby = (tuple(r) for r in roles[si])
        if old is None and not new_active and not new_standby:
            continue
        if old is not None and (old.active, old.standby) == (new_active, new_standby):
            continue
        out.append(AssignmentRecord(si=si, epoch=(old.epoch if old else 0) + 1,
                                    active=new_active, standby=new_standby,
                                    changed_time=snapshot.now))
    return out


def orders(old: AssignmentRecord | None, new: AssignmentRecord, *,
           only_changed: bool = False) -> list[Order]:
    """The orders that carry ``new`` to the components, at ``new.epoch``.

    Removals and demotions first, then standbys, the promotion to active last:
    the old holder lets go before the new one takes over. Unchanged members are
    told too (unless ``only_changed``): the new epoch fences older orders, and
    their peer (where state syncs to or from) may have changed."""
    if old is not None and old.si != new.si:
        raise ValueError(f"records of different SIs: {old.si} and {new.si}")
    before = old.members if old is not None else ()
    out: list[Order] = []
    for su in (*before, *(su for su in new.members if su not in before)):
        state = new.ha_state_of(su)
        if only_changed and old is not None and old.ha_state_of(su) == state:
            continue
        out.append(Order(su=su, si=new.si, ha_state=state, epoch=new.epoch))
    rank = {None: 0, HaState.QUIESCED: 0, HaState.QUIESCING: 0, HaState.STANDBY: 1,
            HaState.ACTIVE: 2}
    return sorted(out, key=lambda o: rank[o.ha_state])


def _gone(snapshot: Snapshot, su: str) -> bool:
    return snapshot.readiness(su) is Readiness.OUT_OF_SERVICE


def _in_service(snapshot: Snapshot, su: str) -> bool:
    return snapshot.readiness(su) is Readiness.IN_SERVICE


def _holds_active(roles: _Roles, su: str) -> bool:
    return any(su in active for active, _ in roles.values())


def _load(roles: _Roles, su: str) -> int:
    return sum((su in active) + (su in standby) for active, standby in roles.values())


def _assign_active(snapshot: Snapshot, roles: _Roles, si: str) -> None:
    group = snapshot.group
    active, standby = roles[si]
    if not active:
        free = [su for su in group.sus
                if _in_service(snapshot, su) and not _holds_active(roles, su)]
        promotable = [su for su in standby if su in free]
        others = sorted((su for su in free if su not in standby),
                        key=lambda su: (_load(roles, su), group.preference(su)))
        waiting = group.stateful and not promotable and any(
            not _gone(snapshot, su) for su in standby)
        chosen = [] if waiting else (promotable + others)[:1]
        if chosen:
            active.append(chosen[0])
            if chosen[0] in standby:
                standby.remove(chosen[0])
    if group.exclusive_roles:
        for su in active:
            for _, other_standby in roles.values():
                if su in other_standby:
                    other_standby.remove(su)


def _fill_standby(snapshot: Snapshot, roles: _Roles, si: str) -> None:
    group = snapshot.group
    active, standby = roles[si]
    need = group.standbys_per_si - len(standby)
    if need <= 0:
        return
    candidates = [su for su in group.sus
                  if _in_service(snapshot, su) and su not in active and su not in standby
                  and not (group.exclusive_roles and _holds_active(roles, su))]
    candidates.sort(key=lambda su: (_holds_active(roles, su), _load(roles, su),
                                    group.preference(su)))
    standby.extend(candidates[:need])
