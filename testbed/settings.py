"""Controller settings, from the environment so CI, labs and shells can set them alike.

``TESTBED_RESULTS_DIR``  where run records go (default ``results``)
``TESTBED_DATABASE_URL`` run index and device leases; SQLite file by default, a
                         ``postgresql+psycopg://`` URL lets several controllers share them
``TESTBED_STATE_DIR``    per-run state files that ``testbed cleanup`` reads (``/run/testbed``)
``TESTBED_LEASE_TTL_S``  how long a device lease lives without renewal (default 30 s)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    results_dir: Path
    database_url: str
    state_dir: Path
    lease_ttl_s: float

    @classmethod
    def from_env(cls, results_dir: str | Path | None = None) -> Settings:
        results = Path(results_dir or os.environ.get("TESTBED_RESULTS_DIR", "results"))
        url = (
            os.environ.get("TESTBED_DATABASE_URL") or f"sqlite:///{results.resolve()}/index.sqlite3"
        )
        return cls(
            results_dir=results,
            database_url=url,
            state_dir=Path(os.environ.get("TESTBED_STATE_DIR", "/run/testbed")),
            lease_ttl_s=float(os.environ.get("TESTBED_LEASE_TTL_S", "30")),
        )

    def with_results(self, results_dir: Path) -> Settings:
        return replace(self, results_dir=results_dir)
