"""What every route needs, made once per app: configuration, index, records, runs, access."""

from __future__ import annotations

from dataclasses import dataclass

from testbed.api.auth import Authorizer
from testbed.api.config import ApiConfig
from testbed.api.service import RunService
from testbed.api.store import RunStore
from testbed.results.index import Index


@dataclass(frozen=True)
class ApiContext:
    config: ApiConfig
    index: Index
    store: RunStore
    service: RunService
    auth: Authorizer
