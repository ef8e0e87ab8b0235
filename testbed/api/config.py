"""What the dashboard server serves and who may change it, from the command line or the
environment (``TESTBED_API_*``), so a lab's service unit and CI configure it alike.

``TESTBED_API_READ``    ``open`` (default) or ``token``: whether reading needs a token
``TESTBED_API_TOKENS``  the tokens file (``testbed token`` writes it); without one, the
                        server refuses every write (start, abort, delete)
``TESTBED_PROFILES_DIR`` / ``TESTBED_LABS_DIR``  the only profiles and labs it will run
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from testbed.settings import Settings

ReadAccess = Literal["open", "token"]
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class ApiConfig:
    results_dir: Path
    database_url: str
    state_dir: Path = Path("/run/testbed")
    profiles_dir: Path = Path("profiles")
    labs_dir: Path = Path("profiles/labs")
    read_access: ReadAccess = "open"
    tokens_file: Path | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    max_concurrent_runs: int = 1

    @classmethod
    def from_env(
        cls,
        results_dir: str | Path | None = None,
        *,
        read_access: str | None = None,
        tokens_file: str | Path | None = None,
        profiles_dir: str | Path | None = None,
        labs_dir: str | Path | None = None,
    ) -> ApiConfig:
        settings = Settings.from_env(results_dir)
        read = read_access or os.environ.get("TESTBED_API_READ", "open")
        if read not in ("open", "token"):
            raise ValueError(f"read access must be 'open' or 'token', not {read!r}")
        tokens = tokens_file or os.environ.get("TESTBED_API_TOKENS")
        profiles = Path(profiles_dir or os.environ.get("TESTBED_PROFILES_DIR", "profiles"))
        labs = labs_dir or os.environ.get("TESTBED_LABS_DIR") or profiles / "labs"
        return cls(
            results_dir=settings.results_dir,
            database_url=settings.database_url,
            state_dir=settings.state_dir,
            profiles_dir=profiles,
            labs_dir=Path(labs),
            read_access=read,  # type: ignore[arg-type]
            tokens_file=Path(tokens) if tokens else None,
        )
