"""The scenario runner's stage breakdown as ``scenario run --json`` prints it."""

from __future__ import annotations

from nfvha.scenarios.runner import STAGES, RunResult, ScenarioReport, _active_times


def run(outage: float, **stages: float | None) -> RunResult:
    return RunResult(detection_ms=1.0, notification_ms=None, outage_ms=outage, state_lost=0,
                     restored_ms=100.0, double_active=0, detect_ms=stages.get("detect"),
                     decide_ms=stages.get("decide"), order_ms=stages.get("order"),
                     vip_ms=stages.get("vip"), first_answer_ms=stages.get("first_answer"))


def test_the_summary_gives_p50_and_p99_of_every_stage_in_path_order() -> None:
    report = ScenarioReport("UC-1", "2N", 1, runs=[
        run(10, detect=2, decide=5, order=6, vip=7, first_answer=9),
        run(12, detect=3, decide=None, order=8, vip=9, first_answer=11),
    ])
    out = report.summary()
    assert STAGES == ("detect", "decide", "order", "vip", "first_answer")
    assert [k for k in out if k.endswith("_p50_ms") and k != "outage_p50_ms"] == [
        f"{s}_p50_ms" for s in STAGES]
    assert out["detect_p50_ms"] == 2 and out["detect_p99_ms"] == 3
    assert out["decide_p50_ms"] == 5 == out["decide_p99_ms"]  # measured once
    assert out["first_answer_p99_ms"] == 11


def test_a_run_without_stages_reports_none() -> None:
    out = ScenarioReport("UC-3", "none", 3, runs=[run(50)]).summary()
    assert all(out[f"{s}_{q}_ms"] is None for s in STAGES for q in ("p50", "p99"))


def test_times_answer_of_a_counter() -> None:
    answer = 'TIMES {"gw":{"epoch":4,"order_mono_ns":10,"vip_mono_ns":null,"serving_mono_ns":12}}'
    assert _active_times(answer, "gw") == {"epoch": 4, "order_mono_ns": 10, "vip_mono_ns": None,
                                           "serving_mono_ns": 12}
    assert _active_times(answer, "other") == {}
    for bad in (None, "ERR unknown command 'TIMES'", "TIMES [1]", "TIMES {"):
        assert _active_times(bad, "gw") == {}
