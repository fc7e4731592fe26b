"""Whether this machine can run a topology's hypervisors (issue 12): checked by
``nfvha up`` before it creates anything, and by ``nfvha validate``.

A ``process`` host runs anywhere the test bed runs (also on the loopback fallback). A
``libvirt`` host needs the namespaced test bed (its guests' NICs are taps on the
host namespace's ``br0``, its libvirtd runs in that namespace), the packages of ADR
0018 and the guest image of ADR 0017. Each problem says what is missing and the
command that installs it, so a failed ``nfvha up`` is one command away from a good
one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nfvha.model.topology import Topology
from nfvha.nfvi import guestimage, libvirtd

BOOTSTRAP = "./scripts/bootstrap"


def _image_problem(directory: Path) -> str | None:
    if guestimage.load_image(directory) is not None:
        return None
    return (f"the guest image is not built in {directory}: run {BOOTSTRAP} as root (or"
            f" 'python -m nfvha.nfvi.guestimage build'; ${guestimage.ENV_DIR} picks"
            " another directory)")


def hypervisor_problems(
    topology: Topology, *, namespaced: bool, why_not: str = "",
    prerequisites: Callable[[], str | None] = libvirtd.missing_prerequisites,
    image_dir: Path | None = None,
) -> list[str]:
    """Why this machine cannot run ``topology``'s hypervisors (empty: it can).

    ``namespaced``/``why_not``: whether the namespaced test bed runs here
    (``deploy.namespaces_available()``). O(hosts); the checks of the machine run once,
    and only when some host is ``libvirt``.
    """
    libvirt_hosts = topology.hosts_with("libvirt")
    if not libvirt_hosts:
        return []
    named = ", ".join(libvirt_hosts[:5]) + (f" and {len(libvirt_hosts) - 5} more"
                                           if len(libvirt_hosts) > 5 else "")
    out: list[str] = []
    if not namespaced:
        out.append(f"hosts {named} have hypervisor 'libvirt', which needs the namespaced"
                   f" test bed (root, network namespaces); here it falls back to loopback"
                   f" ({why_not or 'no namespaces'}): use hypervisor 'process' here, or run"
                   " where the namespaced test bed runs (root, iproute2, NFVHA_LOOPBACK"
                   " unset)")
        return out  # the rest cannot matter on loopback
    missing = prerequisites()
    if missing is not None:
        out.append(f"hypervisor 'libvirt' (hosts {named}): {missing}; {BOOTSTRAP} as root"
                   " installs libvirt, QEMU and the Python binding")
    image = _image_problem(image_dir if image_dir is not None else guestimage.default_dir())
    if image is not None:
        out.append(f"hypervisor 'libvirt' (hosts {named}): {image}")
    return out
