"""MCPTT KPIs in profiles and verdicts, and ``testbed analyze`` reporting floor control found
on an arbitrary UDP port."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from testbed.analysis.kpis import evaluate
from testbed.model.profile import Kpi
from testbed.plan import PlannedKpi

REPO = Path(__file__).resolve().parents[2]


def planned(mcptt: str, **limits: Any) -> PlannedKpi:
    return PlannedKpi(
        name=mcptt, stream=None, metric=None, mcptt=mcptt, max=limits.get("max"),
        min=limits.get("min"), reference=limits.get("reference", ""),
    )  # fmt: skip


def block(value: float | None, samples: int, limit_ms: float | None = 300.0) -> dict[str, Any]:
    limit = None if limit_ms is None else {"max_ms": limit_ms, "reference": "TS 22.179 R-x"}
    kpi = {
        "value": value, "samples": samples, "percentile": 95, "limit": limit,
        "enough_samples": samples >= 59, "min_samples": 59, "definition": "a -> b",
    }  # fmt: skip
    return {"kpis": {"kpi1": kpi, "preemption_grant": dict(kpi, limit=None)}}


def test_an_mcptt_kpi_without_limits_is_judged_against_ts_22_179() -> None:
    (ok,) = evaluate([planned("kpi1")], [], block(120.0, 60))
    assert ok["verdict"] == "PASS" and ok["max"] == 300.0 and ok["limit"] == "<= 300"
    assert ok["reference"] == "TS 22.179 R-x" and ok["enough_samples"] and "note" not in ok
    (bad,) = evaluate([planned("kpi1")], [], block(320.0, 60))
    assert bad["verdict"] == "FAIL"


def test_the_profile_limit_wins_and_small_samples_are_flagged() -> None:
    (k,) = evaluate([planned("kpi1", max=100.0, reference="ours")], [], block(120.0, 10))
    assert k["verdict"] == "FAIL" and k["max"] == 100.0 and k["reference"] == "ours"
    (k,) = evaluate([planned("kpi1", max=200.0)], [], block(120.0, 10))
    assert k["verdict"] == "PASS"
    assert k["note"] == "10 samples are too few to claim the percentile (need 59)"


def test_no_samples_or_no_analysis_fails_saying_why() -> None:
    (k,) = evaluate([planned("kpi1")], [], block(None, 0))
    assert k["verdict"] == "FAIL" and k["note"] == "no samples in the captures"
    (k,) = evaluate([planned("kpi1")], [], None)
    assert k["verdict"] == "FAIL" and k["samples"] == 0


def test_profile_kpis_say_what_they_judge() -> None:
    assert Kpi(name="k", mcptt="kpi4").max is None  # the TS 22.179 limit applies
    with pytest.raises(ValidationError, match=r"has no TS 22\.179 limit"):
        Kpi(name="k", mcptt="preemption_grant")
    with pytest.raises(ValidationError, match="no stream or metric"):
        Kpi(name="k", mcptt="kpi1", stream="s", metric="loss_pct")
    with pytest.raises(ValidationError, match=r"stream metric \(stream and metric\) or an mcptt"):
        Kpi(name="k", max=1)


def test_analyze_finds_floor_control_on_any_port(tmp_path: Path) -> None:
    from scapy.all import IP, UDP, Ether, wrpcap

    from drivers.mcptt.codec import encode
    from drivers.mcptt.messages import FloorMessage, FloorType

    ue, server = ("10.9.0.2", 31337), ("10.9.0.1", 47001)
    request = encode(FloorMessage(FloorType.REQUEST, 0x1111, priority=5, user_id="sip:u@x"))
    granted = encode(FloorMessage(FloorType.GRANTED, 0x2222, duration_s=30, priority=5))
    packets = [
        Ether() / IP(src=ue[0], dst=server[0]) / UDP(sport=ue[1], dport=server[1]) / request,
        Ether() / IP(src=server[0], dst=ue[0]) / UDP(sport=server[1], dport=ue[1]) / granted,
    ]
    packets[0].time, packets[1].time = 1000.0, 1000.0423
    path = tmp_path / "odd_port.pcap"
    wrpcap(str(path), packets)
    out = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "analyze", str(path), "--json"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (req,) = json.loads(out)["mcptt"]["requests"]
    assert req["outcome"] == "granted" and req["user_id"] == "sip:u@x"
    assert req["access_time_ms"] == pytest.approx(42.3, abs=1e-3)
    text = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "analyze", str(path)],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "MCPTT: 1 floor requests (1 granted), 0 pre-emptions" in text
    assert "MCPTT access time" in text
