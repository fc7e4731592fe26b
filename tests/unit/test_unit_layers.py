"""The import layering of nfvha, checked statically (kopf style): parse every module
under src/nfvha with ``ast`` - nothing is imported - and enforce a one-way order.

Layers, lowest first::

    0  nfvha.util
    1  nfvha.model, nfvha.wire
    2  nfvha.store, nfvha.nfvi, nfvha.samples, nfvha.amf
    3  nfvha.agent
    4  nfvha.controller, nfvha.director
    5  nfvha.api, nfvha.vnfam
    6  nfvha.testbed, nfvha.bench, nfvha.scenarios
    7  nfvha.cli

Rules:

* A module may import (statically, anywhere in the file: top level, inside functions,
  under TYPE_CHECKING) only from its own layer or a lower one.
* Entry-point modules - ``nfvha.agent.main``, ``nfvha.agent.hostd``,
  ``nfvha.controller.main`` and everything in ``nfvha.cli`` - may import any layer.
* No module may import an entry-point module. The modules of ``nfvha.cli`` may import
  each other (it is one package, the top layer); nothing else may import them.
* Every nfvha package must be assigned a layer, so a new package cannot slip through.
* The light processes - ``nfvha.agent.hostd``, ``nfvha.nfvi.guest``, ``nfvha.nfvi.spawn``
  and ``nfvha.samples.*`` - import only the standard library, ``nfvha.util`` and the
  light library modules ``nfvha.amf.sdk``/``nfvha.amf.vip`` (the VNFC side),
  ``nfvha.agent.liveness_endpoint`` and ``nfvha.wire.liveness`` (the host supervisor's
  liveness, ADR 0015). Since
  ``python -m`` also runs every enclosing package's ``__init__`` and every imported
  module runs its own imports, that holds for everything they pull in, too.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT_PACKAGE = "nfvha"

LAYERS: dict[str, int] = {
    "nfvha.util": 0,
    "nfvha.model": 1,
    "nfvha.wire": 1,
    "nfvha.store": 2,
    "nfvha.nfvi": 2,
    "nfvha.samples": 2,
    "nfvha.amf": 2,
    "nfvha.agent": 3,
    "nfvha.faults": 3,
    "nfvha.controller": 4,
    "nfvha.director": 4,
    "nfvha.api": 5,
    "nfvha.vnfam": 5,
    "nfvha.testbed": 6,
    "nfvha.bench": 6,
    "nfvha.scenarios": 6,
    "nfvha.cli": 7,
}
ENTRY_MODULES = frozenset({"nfvha.agent.main", "nfvha.agent.hostd", "nfvha.controller.main"})
ENTRY_PACKAGES = ("nfvha.cli",)
# nfvha.amf itself (its __init__) is light because a VNFC importing nfvha.amf.sdk runs it;
# so is nfvha.wire's, run by the host supervisor's import of nfvha.wire.liveness.
LIGHT_MODULES = frozenset({"nfvha.agent.hostd", "nfvha.nfvi.guest", "nfvha.nfvi.spawn",
                           "nfvha.amf", "nfvha.amf.sdk", "nfvha.amf.vip",
                           "nfvha.agent.liveness_endpoint", "nfvha.wire",
                           "nfvha.wire.liveness"})
LIGHT_PACKAGES = ("nfvha.samples",)
LIGHT_MAY_IMPORT = ("nfvha.util",)


@dataclass(frozen=True)
class Import:
    line: int
    target: str  # absolute dotted name, resolved to a module where one is known


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_of(module: str) -> int | None:
    """The layer of ``module``: its longest enclosing package in LAYERS. The bare root
    package (a docstring) is at the bottom."""
    if module == ROOT_PACKAGE:
        return 0
    best: tuple[int, int] | None = None
    for package, layer in LAYERS.items():
        if within(module, package) and (best is None or len(package) > best[0]):
            best = (len(package), layer)
    return None if best is None else best[1]


def is_entry_point(module: str) -> bool:
    return module in ENTRY_MODULES or any(within(module, p) for p in ENTRY_PACKAGES)


def is_light(module: str) -> bool:
    return module in LIGHT_MODULES or any(within(module, p) for p in LIGHT_PACKAGES)


def discover(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    out: dict[str, Path] = {}
    for path in sorted((src / ROOT_PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(module: str, source: str, known: Iterable[str], *, is_package: bool = False,
               ) -> list[Import]:
    """Every import statement in ``source`` (at any depth), as absolute names.

    ``from pkg import name`` resolves to ``pkg.name`` when that is a known module, so
    ``from nfvha.agent import main`` is seen as importing the entry point.
    """
    known_set = set(known)
    package = module if is_package else module.rpartition(".")[0]
    out: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.extend(Import(node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 > len(parts) - 1:
                    raise ValueError(f"{module}:{node.lineno}: relative import beyond the root")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                out.append(Import(node.lineno, candidate if candidate in known_set else base))
    return out


def layer_violations(module: str, imports: Iterable[Import]) -> list[str]:
    problems: list[str] = []
    own_layer = layer_of(module)
    if own_layer is None:
        problems.append(f"{module}: not in any layer (add its package to LAYERS)")
    for imp in imports:
        if not within(imp.target, ROOT_PACKAGE):
            continue  # standard library / third party: not layered
        where = f"{module}:{imp.line}: imports {imp.target}"
        if is_entry_point(imp.target) and not (
            any(within(module, p) and within(imp.target, p) for p in ENTRY_PACKAGES)
        ):
            problems.append(f"{where}, an entry-point module")
            continue
        target_layer = layer_of(imp.target)
        if target_layer is None:
            problems.append(f"{where}, which is not in any layer")
            continue
        if is_entry_point(module) or own_layer is None:
            continue
        if target_layer > own_layer:
            problems.append(f"{where} (layer {target_layer}) from layer {own_layer}")
    return problems


def light_violations(module: str, imports: Iterable[Import]) -> list[str]:
    """Imports of anything but the standard library, nfvha.util and other light
    modules (which are held to the same rule)."""
    problems: list[str] = []
    for imp in imports:
        top = imp.target.split(".")[0]
        if top == ROOT_PACKAGE:
            if not (any(within(imp.target, p) for p in LIGHT_MAY_IMPORT)
                    or is_light(imp.target)):
                problems.append(f"{module}:{imp.line}: light process imports {imp.target}")
        elif top not in sys.stdlib_module_names:
            problems.append(f"{module}:{imp.line}: light process imports non-stdlib {top}")
    return problems


def enclosing_packages(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


# -- the real tree ----------------------------------------------------------------------

MODULES = discover()


def real_imports(module: str) -> list[Import]:
    path = MODULES[module]
    return imports_of(module, path.read_text(), MODULES, is_package=path.name == "__init__.py")


def nfvha_deps(module: str) -> set[str]:
    """nfvha modules that running ``module`` executes directly: its nfvha imports, and
    the packages enclosing each (Python runs a package's __init__ before a submodule)."""
    deps: set[str] = set(enclosing_packages(module))
    for imp in real_imports(module):
        if within(imp.target, ROOT_PACKAGE):
            target = imp.target
            while target not in MODULES and "." in target:
                target = target.rpartition(".")[0]  # `import a.b.name` of a non-module
            deps.add(target)
            deps.update(enclosing_packages(target))
    return deps & MODULES.keys()


def closure(module: str) -> list[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        todo.extend(nfvha_deps(cur) - seen)
    return sorted(seen)


LIGHT = sorted(m for m in MODULES if is_light(m) and m != "nfvha.samples")


def test_the_tree_is_really_scanned() -> None:
    # Guards against a checker that passes because it sees nothing.
    assert len(MODULES) > 40
    for expected in ("nfvha.util.clock", "nfvha.controller.liveness", "nfvha.cli",
                     "nfvha.agent.hostd", "nfvha.samples.counter"):
        assert expected in MODULES
    edges = [(m, i) for m in MODULES for i in real_imports(m) if within(i.target, "nfvha")]
    assert len(edges) > 100
    assert {"nfvha.nfvi.guest", "nfvha.nfvi.spawn", "nfvha.agent.hostd",
            "nfvha.samples.counter", "nfvha.samples.vswitch", "nfvha.wire",
            "nfvha.wire.liveness", "nfvha.agent.liveness_endpoint"} <= set(LIGHT)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_respects_layers(module: str) -> None:
    assert layer_violations(module, real_imports(module)) == []


@pytest.mark.parametrize("module", LIGHT)
def test_light_process_imports_only_stdlib_and_util(module: str) -> None:
    problems: list[str] = []
    for dep in closure(module):
        problems += light_violations(dep, real_imports(dep))
    assert problems == []


# -- the checker itself, on synthetic sources -----------------------------------------

KNOWN = set(MODULES) | {"nfvha.agent.main"}


def check(module: str, source: str, *, is_package: bool = False) -> list[str]:
    return layer_violations(module, imports_of(module, source, KNOWN, is_package=is_package))


def check_light(module: str, source: str) -> list[str]:
    return light_violations(module, imports_of(module, source, KNOWN))


def test_checker_accepts_downward_and_same_layer_imports() -> None:
    src = (
        "from __future__ import annotations\n"
        "import os\n"
        "import pydantic\n"
        "from nfvha.util.clock import Clock\n"
        "from nfvha.model.events import Event\n"
        "import nfvha.wire.frames\n"
        "from nfvha.store.base import EventStore\n"
        "from nfvha.agent.spool import EventSpool\n"
        "from nfvha.controller.bus import EventBus\n"
    )
    assert check("nfvha.controller.x", src) == []


def test_checker_rejects_upward_import() -> None:
    assert check("nfvha.model.x", "import nfvha.controller.liveness\n") == [
        "nfvha.model.x:1: imports nfvha.controller.liveness (layer 4) from layer 1"
    ]


def test_checker_rejects_upward_from_import_of_a_package() -> None:
    assert check("nfvha.util.x", "x = 1\nfrom nfvha import model\n") == [
        "nfvha.util.x:2: imports nfvha.model (layer 1) from layer 0"
    ]


def test_checker_sees_imports_inside_functions_and_type_checking() -> None:
    src = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from nfvha.api.app import create_app\n"
        "def f() -> None:\n"
        "    import nfvha.testbed.deploy\n"
    )
    assert check("nfvha.store.x", src) == [
        "nfvha.store.x:3: imports nfvha.api.app (layer 5) from layer 2",
        "nfvha.store.x:5: imports nfvha.testbed.deploy (layer 6) from layer 2",
    ]


def test_checker_resolves_relative_imports() -> None:
    assert check("nfvha.store.x", "from ..controller import liveness\n") == [
        "nfvha.store.x:1: imports nfvha.controller.liveness (layer 4) from layer 2"
    ]
    assert check("nfvha.store.x", "from . import base\nfrom .base import StoreUnavailable\n") == []
    assert check("nfvha.store", "from .sqlite import SqliteEventStore\n", is_package=True) == []
    assert check("nfvha.store", "from ..agent import spool\n", is_package=True) == [
        "nfvha.store:1: imports nfvha.agent.spool (layer 3) from layer 2"
    ]


def test_checker_rejects_importing_an_entry_point() -> None:
    assert check("nfvha.api.x", "from nfvha.agent import main\n") == [
        "nfvha.api.x:1: imports nfvha.agent.main, an entry-point module"
    ]
    assert check("nfvha.testbed.x", "import nfvha.agent.hostd\n") == [
        "nfvha.testbed.x:1: imports nfvha.agent.hostd, an entry-point module"
    ]
    # Even an entry point may not import another one.
    assert check("nfvha.controller.main", "from nfvha.cli import main\n") == [
        "nfvha.controller.main:1: imports nfvha.cli, an entry-point module"
    ]


def test_checker_lets_entry_points_import_any_layer() -> None:
    src = "from nfvha.api.app import create_app\nimport nfvha.testbed.deploy\n"
    assert check("nfvha.agent.main", src) == []
    assert check("nfvha.controller.main", src) == []
    assert check("nfvha.cli.x", src + "from nfvha.cli.render import status_tables\n") == []


def test_checker_rejects_unlayered_packages() -> None:
    assert check("nfvha.util.x", "import nfvha.newthing\n") == [
        "nfvha.util.x:1: imports nfvha.newthing, which is not in any layer"
    ]
    assert check("nfvha.newthing.x", "import os\n") == [
        "nfvha.newthing.x: not in any layer (add its package to LAYERS)"
    ]


def test_light_checker() -> None:
    src = (
        "from __future__ import annotations\n"
        "import asyncio, ctypes\n"
        "from nfvha.util.files import atomic_write\n"
        "def f() -> None:\n"
        "    import yaml\n"
        "    from nfvha.model import events\n"
    )
    assert check_light("nfvha.samples.x", src) == [
        "nfvha.samples.x:5: light process imports non-stdlib yaml",
        "nfvha.samples.x:6: light process imports nfvha.model.events",
    ]
    assert check_light("nfvha.samples.x", "import os\nfrom nfvha.util import procs\n") == []


def test_layer_table() -> None:
    assert layer_of("nfvha") == 0
    assert layer_of("nfvha.util.clock") == 0
    assert layer_of("nfvha.wire") == 1
    assert layer_of("nfvha.cli.render") == 7
    assert layer_of("nfvha.utility") is None  # a prefix is not a package
    assert layer_of("json") is None
    assert is_entry_point("nfvha.cli") and is_entry_point("nfvha.agent.hostd")
    assert not is_entry_point("nfvha.agent.mainline")


def test_closure_follows_imports_and_enclosing_packages() -> None:
    deps = closure("nfvha.nfvi.guest")
    assert "nfvha" in deps and "nfvha.nfvi" in deps and "nfvha.util" in deps
    assert "nfvha.util.files" in deps
    assert "nfvha.model.events" in closure("nfvha.agent.spool")
