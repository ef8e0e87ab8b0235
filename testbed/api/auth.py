"""Bearer tokens with rights: ``read``, ``run`` (start and abort runs), ``delete``.

The tokens file keeps SHA-256 digests only, so a leaked file gives no token away; tokens are
made by ``testbed token``, which prints the token once. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from fastapi import HTTPException, Request

from testbed.errors import ConfigError

Right = Literal["read", "run", "delete"]
RIGHTS: tuple[Right, ...] = ("read", "run", "delete")


@dataclass(frozen=True)
class Token:
    name: str
    sha256: str
    rights: frozenset[str]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_tokens(path: Path | None) -> list[Token]:
    if path is None:
        return []
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: tokens file unreadable: {exc}"]) from exc
    entries = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError([f"{path}: expected a mapping with a 'tokens' list"])
    tokens, problems = [], []
    for i, entry in enumerate(entries):
        rights = set(entry.get("rights", [])) if isinstance(entry, dict) else set()
        sha = str(entry.get("sha256", "")) if isinstance(entry, dict) else ""
        if len(sha) != 64 or not rights or not rights <= set(RIGHTS):
            problems.append(f"{path}: tokens[{i}]: needs sha256 (64 hex) and rights from {RIGHTS}")
            continue
        tokens.append(Token(str(entry.get("name", f"token{i}")), sha.lower(), frozenset(rights)))
    if problems:
        raise ConfigError(problems)
    return tokens


def new_token(path: Path, name: str, rights: list[str]) -> str:
    """Append a fresh token's digest to the file (created if missing); return the token."""
    bad = sorted(set(rights) - set(RIGHTS))
    if bad or not rights:
        raise ConfigError([f"rights must be some of {', '.join(RIGHTS)}, not {bad or rights}"])
    existing = load_tokens(path) if path.exists() else []
    token = secrets.token_urlsafe(32)
    entries = [{"name": t.name, "sha256": t.sha256, "rights": sorted(t.rights)} for t in existing]
    entries.append({"name": name, "sha256": digest(token), "rights": sorted(rights)})
    path.write_text(yaml.safe_dump({"tokens": entries}, sort_keys=False))
    path.chmod(0o600)
    return token


class Authorizer:
    def __init__(self, tokens: list[Token], read_open: bool) -> None:
        self.tokens = tokens
        self.read_open = read_open

    def rights_of(self, request: Request) -> frozenset[str] | None:
        """The rights of the request's token; ``None`` without a token, empty if unknown."""
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        wanted = digest(presented.strip())
        for token in self.tokens:
            if hmac.compare_digest(token.sha256, wanted):
                return token.rights
        return frozenset()

    def require(self, right: Right) -> Callable[[Request], Awaitable[None]]:
        """A dependency; a coroutine, as it does no I/O (FastAPI would run a plain function
        in its thread pool, a hop per request)."""

        async def check(request: Request) -> None:
            if right == "read" and self.read_open:
                return
            if right != "read" and not self.tokens:
                raise HTTPException(403, "writes are disabled: the server has no tokens file")
            rights = self.rights_of(request)
            if not rights:
                raise HTTPException(
                    401,
                    "a valid bearer token is needed",
                    headers={"WWW-Authenticate": 'Bearer realm="testbed"'},
                )
            if right not in rights:
                raise HTTPException(403, f"this token lacks the right {right!r}")

        return check
