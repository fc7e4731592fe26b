"""``nfvha fault controller-crash``: which controller a target names, single or cluster
(ADR 0013), from the pid records and the fronts' ``/v1/cluster/self`` (mocked here: no
process is started or signalled)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nfvha.cli import main as cli
from nfvha.model.topology import default_topology_path, load_topology
from nfvha.testbed.faults import FaultError, FaultInjector, controller_pid_file, deciding_member
from nfvha.util.runpaths import RunPaths

MEMBERS = [{"name": f"c{i}", "front_url": f"http://127.0.0.1:{9000 + i}"} for i in (1, 2, 3)]
# Above the kernel's highest pid_max (2**22): no process can have it, nothing is sent.
NO_PID = 4_194_305
DEAD = {"pid": NO_PID, "start_ticks": 0}


def make_run(root: Path, monkeypatch: pytest.MonkeyPatch, *, cluster: bool) -> RunPaths:
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(root))
    run = RunPaths("abcde")
    run.controller_dir.mkdir(parents=True)
    info: dict[str, Any] = {"run_id": run.run_id, "api_url": "http://127.0.0.1:1",
                            "mode": "process", "topology_file": str(default_topology_path()),
                            "owner_pid": 1}
    if cluster:
        info["cluster"] = {"controllers": MEMBERS}
        for i, m in enumerate(MEMBERS):
            rec = {"pid": NO_PID + i, "start_ticks": 100 + i}
            (run.controller_dir / f"controller-{m['name']}.pid").write_text(json.dumps(rec))
    else:
        (run.controller_dir / "controller.pid").write_text(json.dumps(DEAD))
    run.run_file.write_text(json.dumps(info))
    return run


def fronts(answers: dict[str, dict[str, Any] | None]) -> Any:
    asked: list[str] = []

    def ask(url: str) -> dict[str, Any] | None:
        asked.append(url)
        return answers.get(url)

    ask.asked = asked  # type: ignore[attr-defined]
    return ask


def test_single_controller_keeps_its_one_target(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path, monkeypatch, cluster=False)
    inj = FaultInjector(run, load_topology(default_topology_path()), ask=fronts({}))
    assert inj.valid_targets("controller-crash") == ["controller"]
    assert controller_pid_file(run, "controller") == (run.controller_dir / "controller.pid",
                                                      "the controller")
    with pytest.raises(FaultError, match="no CONTROLLER named 'leader'"):
        inj.inject("controller-crash", "leader")
    with pytest.raises(FaultError, match=rf"the controller \(pid {NO_PID}\) is not running"):
        inj.inject("controller-crash", "controller")


def test_cluster_targets_are_the_members_and_the_leader(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path, monkeypatch, cluster=True)
    ask = fronts({})
    inj = FaultInjector(run, load_topology(default_topology_path()), ask=ask)
    assert inj.valid_targets("controller-crash") == ["c1", "c2", "c3", "leader"]
    assert controller_pid_file(run, "c2", ask) == (
        run.controller_dir / "controller-c2.pid", "controller c2")
    assert ask.asked == []  # a named member needs no front
    with pytest.raises(FaultError, match="no CONTROLLER named 'controller'"):
        inj.inject("controller-crash", "controller")
    # The member's own pid record is the one used.
    with pytest.raises(FaultError, match=rf"controller c3 \(pid {NO_PID + 2}\) is not running"):
        inj.inject("controller-crash", "c3")


def test_leader_is_the_member_whose_front_says_deciding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path, monkeypatch, cluster=True)
    c1, c2, c3 = (m["front_url"] for m in MEMBERS)
    ask = fronts({c1: {"name": "c1", "deciding": False, "epoch": 0},
                  c2: None,  # down
                  c3: {"name": "c3", "deciding": True, "epoch": 41}})
    assert controller_pid_file(run, "leader", ask) == (
        run.controller_dir / "controller-c3.pid", "controller c3 (the leader)")
    inj = FaultInjector(run, load_topology(default_topology_path()), ask=ask)
    with pytest.raises(FaultError, match=rf"c3 \(the leader\) \(pid {NO_PID + 2}\) is not"):
        inj.inject("controller-crash", "leader")


def test_leader_across_a_handover_is_the_newer_term() -> None:
    c1, c2, _ = (m["front_url"] for m in MEMBERS)
    ask = fronts({c1: {"deciding": True, "epoch": 57}, c2: {"deciding": True, "epoch": 90}})
    assert deciding_member(MEMBERS, ask) == "c2"


def test_no_leader_is_an_error_that_names_the_members() -> None:
    ask = fronts({m["front_url"]: {"deciding": False, "epoch": 0} for m in MEMBERS})
    with pytest.raises(FaultError, match=r"no controller is deciding.*c1, c2, c3"):
        deciding_member(MEMBERS, ask)
    assert sorted(ask.asked) == sorted(m["front_url"] for m in MEMBERS)


def test_fault_help_names_the_controller_targets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli(["fault", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "controller-crash" in text
    assert "a member (c1, c2, ...) or 'leader'" in text
