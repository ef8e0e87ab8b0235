"""Live progress of a run as server-sent events: the run's event log, line by line.

Each line of ``events.jsonl`` becomes one event (``id`` = line number, ``event`` = its type),
so a client that reconnects with ``Last-Event-ID`` resumes where it stopped. The stream ends
after ``run.finished``, or when the record says the run is no longer running and its log
has stopped growing (a crashed run writes no ``run.finished``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

POLL_S = 0.25
KEEPALIVE_S = 10.0
SETTLE_S = 2.0


async def event_stream(
    events: Path,
    is_running: Callable[[], bool],
    after: int,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    line_no, offset, pending = 0, 0, b""
    last_sent = last_growth = time.monotonic()
    while True:
        chunk = await asyncio.to_thread(_read_from, events, offset)
        if chunk:
            offset += len(chunk)
            last_growth = time.monotonic()
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                line_no += 1
                if line_no <= after or not raw.strip():
                    continue
                kind, data = _parse(raw)
                yield f"id: {line_no}\nevent: {kind}\ndata: {data}\n\n"
                last_sent = time.monotonic()
                if kind == "run.finished":
                    return
        now = time.monotonic()
        if now - last_growth > SETTLE_S and not await asyncio.to_thread(is_running):
            yield 'event: end\ndata: {"reason": "the run is not running"}\n\n'
            return
        if now - last_sent > KEEPALIVE_S:
            yield ": keepalive\n\n"
            last_sent = now
        if await disconnected():
            return
        await asyncio.sleep(POLL_S)


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(1 << 20)
    except OSError:
        return b""


def _parse(raw: bytes) -> tuple[str, str]:
    try:
        event = json.loads(raw)
    except ValueError:
        return "unreadable", json.dumps({"line": raw.decode(errors="replace")})
    kind = str(event.get("type", "event")) if isinstance(event, dict) else "event"
    return kind, json.dumps(event, separators=(",", ":"))
