"""The containment graph: site > rack > host > VM > VNFC.

It is also the fault-zone graph: a host failure is the root cause of the
failures of everything it contains, and repeated failures of the contained
escalate to the container.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from nfvha.model.topology import Topology

# "control": a part of the control plane (controller, etcd member, PostgreSQL): in no
# container, the root of nothing.
EntityKind = Literal["site", "rack", "host", "vm", "vnfc", "control"]


@dataclass(frozen=True, order=True, slots=True)
class EntityRef:
    kind: EntityKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> EntityRef:
        kind, _, name = text.partition("/")
        if kind not in ("site", "rack", "host", "vm", "vnfc", "control") or not name:
            raise ValueError(f"not an entity reference: {text!r} (want e.g. 'vm/gw-vm1')")
        return cls(kind, name)  # type: ignore[arg-type]


@dataclass
class ContainmentGraph:
    parent: dict[EntityRef, EntityRef] = field(default_factory=dict)
    children: dict[EntityRef, list[EntityRef]] = field(default_factory=dict)

    @classmethod
    def from_topology(cls, t: Topology) -> ContainmentGraph:
        g = cls()
        for site in t.sites:
            s = EntityRef("site", site.name)
            g.children.setdefault(s, [])
            for rack in site.racks:
                r = EntityRef("rack", rack.name)
                g._link(s, r)
                for host in rack.hosts:
                    g._link(r, EntityRef("host", host.name))
        for vm in t.vms:
            g._link(EntityRef("host", vm.host), EntityRef("vm", vm.name))
        for _, comp in t.components():
            g._link(EntityRef("vm", comp.vm), EntityRef("vnfc", comp.name))
        return g

    def _link(self, parent: EntityRef, child: EntityRef) -> None:
        self.parent[child] = parent
        self.children.setdefault(parent, []).append(child)
        self.children.setdefault(child, [])

    def __contains__(self, ref: EntityRef) -> bool:
        return ref in self.children

    def ancestors(self, ref: EntityRef) -> Iterator[EntityRef]:
        """Parent, grandparent, ... up to the site."""
        cur = self.parent.get(ref)
        while cur is not None:
            yield cur
            cur = self.parent.get(cur)

    def descendants(self, ref: EntityRef) -> Iterator[EntityRef]:
        stack = list(reversed(self.children.get(ref, [])))
        while stack:
            cur = stack.pop()
            yield cur
            stack.extend(reversed(self.children.get(cur, [])))

    def container(self, ref: EntityRef, kind: EntityKind) -> EntityRef | None:
        """The enclosing entity of ``kind`` (e.g. the host of a VNFC)."""
        for a in self.ancestors(ref):
            if a.kind == kind:
                return a
        return None
