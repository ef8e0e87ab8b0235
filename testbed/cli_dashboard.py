"""The dashboard's commands: ``serve`` (API and web pages), ``report`` (a run's report.html,
again) and ``token`` (a token for the API's writes)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from testbed.errors import ConfigError


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from testbed.api import ApiConfig, create_app

    try:
        config = ApiConfig.from_env(
            args.results,
            read_access=args.read,
            tokens_file=args.tokens,
            profiles_dir=args.profiles,
            labs_dir=args.labs,
        )
    except ValueError as exc:
        raise ConfigError([f"testbed serve: {exc}"]) from None
    app = create_app(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    writes = "enabled" if config.tokens_file else "disabled (no --tokens file)"
    print(
        f"serving {config.results_dir} on http://{args.host}:{args.port}/ "
        f"(reading {config.read_access}, writes {writes})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from testbed.results.report import write_report
    from testbed.settings import Settings

    path = Path(args.run)
    if not path.is_dir():
        path = Settings.from_env(args.results).results_dir / args.run
    if not (path / "manifest.json").is_file():
        raise ConfigError([f"testbed report: no run record {args.run!r}"])
    print(write_report(path))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from testbed.api.auth import new_token

    rights = [r.strip() for r in args.rights.split(",") if r.strip()]
    token = new_token(Path(args.file), args.name, rights)
    print(token)
    print(f"(saved as a digest in {args.file}; this is the only time it is shown)", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("serve", help="serve the dashboard API and web pages")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--results", metavar="DIR", help="results folder (default: results)")
    p.add_argument("--read", choices=["open", "token"], help="reading open (default) or token")
    p.add_argument("--tokens", metavar="FILE", help="tokens file; without one, no writes")
    p.add_argument("--profiles", metavar="DIR", help="profiles it may run (default: profiles)")
    p.add_argument("--labs", metavar="DIR", help="labs it may run on (default: PROFILES/labs)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("report", help="write a run's self-contained report.html again")
    p.add_argument("run", metavar="RUN", help="run id or run record folder")
    p.add_argument("--results", metavar="DIR")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("token", help="make an API token and add its digest to a tokens file")
    p.add_argument("name", help="who holds it, e.g. lab-ci")
    p.add_argument("--rights", default="read", help="comma-separated: read, run, delete")
    p.add_argument("--file", required=True, metavar="FILE", help="the tokens file")
    p.set_defaults(func=cmd_token)
