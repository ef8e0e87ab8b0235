"""Measured numbers against what the impairment engine was told (ground truth).

Each test runs ``testbed run`` on the emulated lab with an impairment on UE A1's radio
link and compares the measured one-way delay, loss and interruption with the configured
values: the bounds are the ones the measurement chain promises (median delay within
0.5 ms, loss within binomial bounds, an outage within 20 ms).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import assert_clean, run_dirs, start_run

pytestmark = pytest.mark.netns


def _run(tmp_path: Path, env: dict[str, str], profile: dict[str, Any]) -> dict[str, Any]:
    path = tmp_path / "profile.yaml"
    path.write_text(json.dumps({"schema_version": 1, "name": "ground_truth", **profile}))
    proc = start_run(path, env, "--json")
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    summary: dict[str, Any] = json.loads(out)
    assert summary["errors"] == [], err
    for run_dir in run_dirs(env):
        assert_clean(run_dir)
    return summary


def _uplink(rate_pps: float) -> list[dict[str, Any]]:
    return [{"id": "up", "from": "ue_a1", "to": "mcptt_as", "rate_pps": rate_pps}]


def test_median_delay_matches_the_configured_delay(
    tmp_path: Path, testbed_env: dict[str, str]
) -> None:
    summary = _run(
        tmp_path,
        testbed_env,
        {
            "duration_s": 3,
            "impairments": [{"link": "radio_a1", "direction": "forward", "delay_ms": 0}],
            "sweep": [{"impairment": 0, "parameter": "delay_ms", "values": [5, 50]}],
            "streams": _uplink(200),
        },
    )
    rows = {row["impairments[0].delay_ms"]: row for row in summary["sweep"]}
    assert set(rows) == {5, 50}
    for delay_ms, row in rows.items():
        assert row["loss_pct"] == 0
        assert abs(row["owd_p50_ms"] - delay_ms) < 0.5, row


def test_loss_within_binomial_bounds(tmp_path: Path, testbed_env: dict[str, str]) -> None:
    loss = 0.05
    summary = _run(
        tmp_path,
        testbed_env,
        {
            "duration_s": 4,
            "impairments": [{"link": "radio_a1", "direction": "forward", "loss_pct": 100 * loss}],
            "streams": _uplink(300),
        },
    )
    (stream,) = summary["streams"]
    n = stream["sent"]
    sigma_pct = 100 * math.sqrt(loss * (1 - loss) / n)
    assert abs(stream["loss_pct"] - 100 * loss) < 4 * sigma_pct, stream
    # the engine's own count of what it dropped agrees with what the receiver missed
    counters = summary["devices"]["radio_channel"]["radio_a1"]["counters"]["a_to_b"]
    assert counters["dropped_loss"] == stream["sent"] - stream["received"]


def test_outage_shows_as_a_gap_of_its_length(tmp_path: Path, testbed_env: dict[str, str]) -> None:
    summary = _run(
        tmp_path,
        testbed_env,
        {
            "duration_s": 4,
            "streams": _uplink(200),
            "timeline": [
                {"at_s": 1.0, "device": "radio_channel", "action": "outage_start",
                 "args": {"link": "radio_a1"}},
                {"at_s": 3.0, "device": "radio_channel", "action": "outage_end",
                 "args": {"link": "radio_a1"}},
            ],
        },
    )  # fmt: skip
    (stream,) = summary["streams"]
    executed = [e["t_s"] for e in summary["events"]]
    outage_ms = (executed[1] - executed[0]) * 1000  # as executed, not as planned
    assert abs(stream["max_gap_ms"] - outage_ms) <= 20, (stream, executed)
    assert abs(outage_ms - 2000) <= 50
