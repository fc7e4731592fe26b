"""What the import-linter contracts (``[tool.importlinter]`` in pyproject.toml, run by
``scripts/test`` as ``lint-imports``) cannot see for themselves.

- Every nfvha package is in the layers contract: a new package outside it would be
  held to nothing.
- The packages that enclose a light process's modules (the processes inside VMs and
  the host supervisor) import nothing: ``python -m nfvha.samples.counter`` runs
  ``nfvha/__init__``, ``nfvha/samples/__init__`` and the ``__init__`` of every package
  it imports from, and import-linter's graph has no edge from a module to its parents.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "nfvha"
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
# The packages whose __init__ a light process runs (see the in-VM and host-supervisor
# contracts).
LIGHT_PACKAGE_INITS = ("", "amf", "nfvi", "samples", "agent", "wire", "util")


def _contract(contract_id: str) -> dict[str, object]:
    return next(c for c in CONFIG["contracts"] if c["id"] == contract_id)


def _layered() -> set[str]:
    names: set[str] = set()
    for layer in _contract("layers")["layers"]:  # type: ignore[attr-defined]
        names.update(n.strip() for n in layer.replace("|", ":").split(":"))
    return names


def test_every_package_is_in_a_layer() -> None:
    layered = _layered()
    packages = {f"nfvha.{p.name}" for p in SRC.iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    amf = {f"nfvha.amf.{p.stem}" for p in (SRC / "amf").iterdir()
           if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert len(packages) > 12 and len(amf) > 6  # the scan sees the tree
    assert packages - {"nfvha.amf"} <= layered, sorted(packages - layered - {"nfvha.amf"})
    assert amf <= layered, sorted(amf - layered)


@pytest.mark.parametrize("package", LIGHT_PACKAGE_INITS)
def test_light_package_inits_import_nothing(package: str) -> None:
    init = SRC / package / "__init__.py"
    tree = ast.parse(init.read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
               and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    assert imports == [], f"{init} imports: it runs in every light process"


def test_the_contracts_hold() -> None:
    """The same check scripts/test runs, so that ``pytest`` alone sees a broken layer."""
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " 0 broken" in r.stdout
