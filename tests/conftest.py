"""Shared test fixtures: isolated results/state/database per test, and root checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "profiles" / "labs" / "emulated.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``netns`` need root and iproute2; say so clearly instead of failing."""
    reason = None
    if os.geteuid() != 0:
        reason = "needs root: builds network namespaces (CAP_NET_ADMIN, CAP_SYS_ADMIN)"
    elif shutil.which("ip") is None:
        reason = "needs iproute2 (`ip`)"
    if reason:
        for item in items:
            if "netns" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def testbed_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Results, state files and the index database of this test only."""
    env = {
        "TESTBED_RESULTS_DIR": str(tmp_path / "results"),
        "TESTBED_STATE_DIR": str(tmp_path / "state"),
        "TESTBED_DATABASE_URL": f"sqlite:///{tmp_path / 'index.sqlite3'}",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **env}
