"""Prometheus metrics from the run index, computed at each scrape (no state in the server).

``testbed_runs``                       runs per profile, lab and verdict
``testbed_last_run_timestamp_seconds`` start of the newest run per profile and lab
``testbed_kpi_value``                  latest finished run's value of each KPI
``testbed_kpi_pass``                   1 if that value met its limit, else 0
``testbed_runs_running``               runs the index holds as running
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from testbed.results.index import Index, runs


class IndexCollector(Collector):
    def __init__(self, index: Index) -> None:
        self.index = index

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = GaugeMetricFamily(
            "testbed_runs", "Runs in the index", labels=["profile", "lab", "verdict"]
        )
        query = select(runs.c.profile, runs.c.lab, runs.c.verdict, func.count()).group_by(
            runs.c.profile, runs.c.lab, runs.c.verdict
        )
        running = 0
        with self.index.engine.connect() as conn:
            for profile, lab, verdict, n in conn.execute(query):
                counts.add_metric([profile, lab, verdict], n)
                running += n if verdict == "RUNNING" else 0
        yield counts
        newest = GaugeMetricFamily(
            "testbed_last_run_timestamp_seconds",
            "Start of the newest run",
            labels=["profile", "lab"],
        )
        values = GaugeMetricFamily(
            "testbed_kpi_value",
            "Latest finished run's KPI value",
            labels=["profile", "lab", "kpi", "unit"],
        )
        passed = GaugeMetricFamily(
            "testbed_kpi_pass",
            "1 if the latest KPI value met its limit",
            labels=["profile", "lab", "kpi"],
        )
        for cell in self.index.cells():
            profile, lab = cell["profile"], cell["lab"]
            newest.add_metric([profile, lab], cell["newest"])
            latest: dict[str, dict[str, object]] = {}
            for row in self.index.kpi_trend(profile, lab, None, 1):
                latest[row["name"]] = row
            for name, row in latest.items():
                if isinstance(row["value"], float):
                    values.add_metric([profile, lab, name, str(row["unit"] or "")], row["value"])
                passed.add_metric([profile, lab, name], 1.0 if row["verdict"] == "PASS" else 0.0)
        yield newest
        yield values
        yield passed
        yield GaugeMetricFamily("testbed_runs_running", "Runs held as running", value=running)


def metrics_text(index: Index) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IndexCollector(index))
    return generate_latest(registry)
