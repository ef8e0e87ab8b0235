"""Fixtures of the dashboard tests: a results folder of real runs (``tests/real_runs.py``)."""

from __future__ import annotations

import pytest

from tests.real_runs import RealRuns, shared_real_runs


@pytest.fixture(scope="session")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> RealRuns:
    """Three real runs of the controller on the emulated lab, made once per session."""
    return shared_real_runs(tmp_path_factory)
