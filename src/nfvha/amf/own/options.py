"""``nfvha vnf-am``'s command line, apart from the process so the CLI can offer it
without importing the AM (standard library only)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path,
                   help="a VnfAmConfig JSON file (what the test bed writes); or the flags")
    p.add_argument("--vnf", help="the VNF this AM manages (vnfm: own in the topology)")
    p.add_argument("--vim", help="the VIM's API, http://ip:port")
    p.add_argument("--token-file", type=Path, help="an API token of the operator role")
    p.add_argument("--topology", type=Path, help="the topology file")
    p.add_argument("--listen", help="ip:port the VNF's components connect to (--am)")
    p.add_argument("--db", type=Path, help="its assignment records (default: ./<vnf>-am.db)")
    p.add_argument("--vm-address", action="append", default=[], metavar="VM=IP",
                   help="where a VM of the VNF is reached (state sync); default the"
                        " listen address")
    p.add_argument("--vip", help="the VNF's VIP as address/prefixlen, if it has one")
