"""The run index and the device leases, in one database reached through SQLAlchemy.

An SQLite file is the default; a PostgreSQL URL in ``TESTBED_DATABASE_URL`` lets several
controllers of one testbed share the index and, above all, the leases. A lease is a row
with an expiry: a run renews its leases while it lives, so a killed run's leases free
themselves once they expire, and ``testbed cleanup`` frees them at once.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.schema import Index as SqlIndex
from sqlalchemy.sql.elements import ColumnElement

from testbed.errors import LeaseError, StoreError

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("profile", String(128), nullable=False),
    Column("lab", String(128), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("path", Text, nullable=False),
)
# Each filter of the run list followed by its whole order (newest first, then run id), so any
# page, the last of 10 000 too, is a walk along one index without sorting.
for _name, *_filters in (
    ("runs_newest",),
    ("runs_newest_by_profile", runs.c.profile),
    ("runs_newest_by_lab", runs.c.lab),
    ("runs_newest_by_verdict", runs.c.verdict),
    ("runs_newest_by_profile_lab", runs.c.profile, runs.c.lab),
):
    SqlIndex(_name, *_filters, runs.c.started_at, runs.c.run_id)

# The KPI values of finished runs, beside their run's profile, lab and start, so trends and
# the latest values per profile and lab come from one indexed table, not from summary files.
kpi_values = Table(
    "kpi_values",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("profile", String(128), nullable=False),
    Column("lab", String(128), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("name", String(256), nullable=False),
    Column("unit", String(32)),
    Column("value", Float),
    Column("verdict", String(16)),
    Column("limit_text", String(64)),
)
SqlIndex(
    "kpi_cell_name_started",
    kpi_values.c.profile,
    kpi_values.c.lab,
    kpi_values.c.name,
    kpi_values.c.started_at,
)

leases = Table(
    "device_leases",
    metadata,
    Column("device", String(256), primary_key=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("holder", String(256), nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)


# A counter that every write of runs or KPI values increments in its own transaction, so a
# reader (the dashboard's caches) learns with one tiny query whether anything changed, whichever
# controller or server wrote it.
index_meta = Table(
    "index_meta",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("value", Integer, nullable=False),
)
VERSION_KEY = "runs_version"


@dataclass(frozen=True)
class Lease:
    device: str
    run_id: str
    holder: str
    acquired_at: float
    expires_at: float


def this_host() -> str:
    """The host name that lease holders, manifests and cleanup all use."""
    return socket.gethostname()


def holder_name(pid: int) -> str:
    return f"{this_host()}:{pid}"


class Index:
    """Runs and leases. Thread-safe: every call opens its own short transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine: Engine = create_engine(url, future=True, **_engine_args(url))
            if url.startswith("sqlite"):
                event.listen(self.engine, "connect", _sqlite_pragmas)
            for attempt in range(50):
                try:
                    metadata.create_all(self.engine)
                    for table in metadata.sorted_tables:  # indexes added since the table was
                        for table_index in table.indexes:
                            table_index.create(self.engine, checkfirst=True)
                    self._start_version()
                    break
                except OperationalError as exc:
                    # Another controller created a table between our check and our CREATE,
                    # or holds the lock SQLite will not wait for (a read lock upgrading).
                    racing = "already exists" in str(exc) or "locked" in str(exc)
                    if not racing or attempt == 49:
                        raise
                    time.sleep(0.02)
        except SQLAlchemyError as exc:
            raise StoreError(f"run index {url}: {exc}") from exc

    def _start_version(self) -> None:
        with self.engine.connect() as conn:
            found = conn.execute(select(index_meta.c.value).where(index_meta.c.key == VERSION_KEY))
            if found.first() is not None:
                return
        # another controller may insert it first: then ours fails, in its own transaction
        with contextlib.suppress(IntegrityError), self.engine.begin() as conn:
            conn.execute(insert(index_meta).values(key=VERSION_KEY, value=0))

    def version(self) -> int:
        """Changes whenever a run or its KPI values are written or deleted, by anyone."""
        query = select(index_meta.c.value).where(index_meta.c.key == VERSION_KEY)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    @property
    def local(self) -> bool:
        """An SQLite file on this host: queries are quick and need no network round trip."""
        return self.url.startswith("sqlite")

    def close(self) -> None:
        self.engine.dispose()

    # runs ------------------------------------------------------------------------------

    def put_run(self, **row: Any) -> None:
        try:
            with self.engine.begin() as conn:
                found = conn.execute(select(runs.c.run_id).where(runs.c.run_id == row["run_id"]))
                if found.first() is None:
                    conn.execute(insert(runs).values(**row))
                else:
                    conn.execute(update(runs).where(runs.c.run_id == row["run_id"]).values(**row))
                _changed(conn)
        except SQLAlchemyError as exc:
            raise StoreError(f"run index: cannot record run {row.get('run_id')}: {exc}") from exc

    def list_runs(
        self,
        profile: str | None = None,
        lab: str | None = None,
        limit: int = 50,
        *,
        verdict: str | None = None,
        since: float | None = None,
        until: float | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Newest first; ``since``/``until`` bound the start time (epoch seconds)."""
        where = _run_filter(profile, lab, verdict, since, until)
        query = (
            select(runs)
            .where(where)
            .order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def count_runs(
        self,
        profile: str | None = None,
        lab: str | None = None,
        verdict: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        query = (
            select(func.count())
            .select_from(runs)
            .where(_run_filter(profile, lab, verdict, since, until))
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def delete_run(self, run_id: str) -> bool:
        with self.engine.begin() as conn:
            conn.execute(delete(kpi_values).where(kpi_values.c.run_id == run_id))
            deleted = bool(conn.execute(delete(runs).where(runs.c.run_id == run_id)).rowcount)
            _changed(conn)
            return deleted

    def run_statuses(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(select(runs.c.run_id, runs.c.status))}

    # KPI values ------------------------------------------------------------------------

    def put_kpis(self, run: dict[str, Any], kpis: Sequence[dict[str, Any]]) -> None:
        """Replace a run's KPI values; ``run`` gives its run_id, profile, lab, started_at."""
        rows = [
            {
                "run_id": run["run_id"],
                "position": i,
                "profile": run["profile"],
                "lab": run["lab"],
                "started_at": run["started_at"],
                "name": str(k.get("name")),
                "unit": k.get("unit"),
                "value": _number(k.get("value")),
                "verdict": k.get("verdict"),
                "limit_text": k.get("limit"),
            }
            for i, k in enumerate(kpis)
        ]
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(kpi_values).where(kpi_values.c.run_id == run["run_id"]))
                if rows:
                    conn.execute(insert(kpi_values), rows)
                _changed(conn)
        except SQLAlchemyError as exc:
            raise StoreError(f"run index: cannot record KPIs of {run['run_id']}: {exc}") from exc

    def kpis_of(self, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        query = (
            select(kpi_values)
            .where(kpi_values.c.run_id.in_(list(run_ids)))
            .order_by(kpi_values.c.started_at, kpi_values.c.position)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def cells(self) -> list[dict[str, Any]]:
        """Each profile and lab with its number of runs and its newest start."""
        query = (
            select(
                runs.c.profile,
                runs.c.lab,
                func.count().label("runs"),
                func.max(runs.c.started_at).label("newest"),
            )
            .group_by(runs.c.profile, runs.c.lab)
            .order_by(runs.c.profile, runs.c.lab)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def kpi_trend(
        self, profile: str, lab: str, name: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """KPI values of the ``limit`` newest finished runs of a profile on a lab, oldest first."""
        newest = (
            select(runs.c.run_id)
            .where(and_(runs.c.profile == profile, runs.c.lab == lab, runs.c.status != "running"))
            .order_by(runs.c.started_at.desc())
            .limit(limit)
        )
        query = select(kpi_values).where(kpi_values.c.run_id.in_(newest))
        if name is not None:
            query = query.where(kpi_values.c.name == name)
        query = query.order_by(kpi_values.c.started_at, kpi_values.c.position)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.run_id == run_id)).first()
        return dict(row._mapping) if row is not None else None

    # leases ----------------------------------------------------------------------------

    def acquire(
        self,
        devices: Sequence[str],
        run_id: str,
        holder: str,
        ttl_s: float,
        wait_s: float = 0.0,
        poll_s: float = 0.5,
        on_wait: Any = None,
    ) -> None:
        """Lease every device or none. Waits up to ``wait_s`` for held devices.

        Raises :class:`LeaseError` naming the holder of the first busy device.
        """
        deadline = time.monotonic() + wait_s
        while True:
            busy = self._try_acquire(devices, run_id, holder, ttl_s)
            if busy is None:
                return
            if time.monotonic() >= deadline:
                raise LeaseError(
                    f"device {busy.device} is leased by run {busy.run_id} ({busy.holder}) until "
                    f"{time.strftime('%H:%M:%S', time.localtime(busy.expires_at))}; "
                    "use --wait to queue for it, or `testbed cleanup` if that run is dead"
                )
            if on_wait is not None:
                on_wait(busy)
            time.sleep(poll_s)

    def _try_acquire(
        self, devices: Sequence[str], run_id: str, holder: str, ttl_s: float
    ) -> Lease | None:
        now = time.time()
        taken: list[str] = []
        try:
            for device in devices:
                with self.engine.begin() as conn:
                    conn.execute(
                        delete(leases).where(
                            (leases.c.device == device) & (leases.c.expires_at < now)
                        )
                    )
                try:
                    with self.engine.begin() as conn:
                        conn.execute(
                            insert(leases).values(
                                device=device,
                                run_id=run_id,
                                holder=holder,
                                acquired_at=now,
                                expires_at=now + ttl_s,
                            )
                        )
                    taken.append(device)
                except IntegrityError:
                    current = self.lease(device)
                    if current is not None and current.run_id == run_id:
                        continue
                    self.release(run_id, taken)
                    if current is None:  # freed between our insert and our look: retry later
                        return Lease(device, "?", "?", now, now)
                    return current
        except SQLAlchemyError as exc:
            self.release(run_id, taken)
            raise StoreError(f"device leases: {exc}") from exc
        return None

    def renew(self, run_id: str, ttl_s: float) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(leases)
                .where(leases.c.run_id == run_id)
                .values(expires_at=time.time() + ttl_s)
            )
            return int(result.rowcount or 0)

    def release(self, run_id: str, devices: Iterable[str] | None = None) -> None:
        query = delete(leases).where(leases.c.run_id == run_id)
        if devices is not None:
            names = list(devices)
            if not names:
                return
            query = query.where(leases.c.device.in_(names))
        with self.engine.begin() as conn:
            conn.execute(query)

    def lease(self, device: str) -> Lease | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(leases).where(leases.c.device == device)).first()
        return Lease(**row._mapping) if row is not None else None

    def all_leases(self) -> list[Lease]:
        with self.engine.connect() as conn:
            return [Lease(**r._mapping) for r in conn.execute(select(leases))]


def _changed(conn: Connection) -> None:
    conn.execute(
        update(index_meta)
        .where(index_meta.c.key == VERSION_KEY)
        .values(value=index_meta.c.value + 1)
    )


def _run_filter(
    profile: str | None,
    lab: str | None,
    verdict: str | None,
    since: float | None,
    until: float | None,
) -> ColumnElement[bool]:
    clauses: list[ColumnElement[bool]] = [runs.c.run_id.is_not(None)]
    if profile:
        clauses.append(runs.c.profile == profile)
    if lab:
        clauses.append(runs.c.lab == lab)
    if verdict:
        clauses.append(runs.c.verdict == verdict)
    if since is not None:
        clauses.append(runs.c.started_at >= since)
    if until is not None:
        clauses.append(runs.c.started_at < until)
    return and_(*clauses)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value else None  # NaN is no value


def _engine_args(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}
    return {"pool_pre_ping": True}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers and a writer work at once; the busy timeout makes writers queue.

    Switching to WAL needs a moment of exclusive access and does not wait for it, so
    controllers opening a fresh database together retry it.
    """
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    for attempt in range(100):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError:
            if attempt == 99:
                raise
            time.sleep(0.01)
    cursor.close()
