"""The ``testbed`` command line.

Exit codes: 0 PASS (or success), 1 FAIL (a KPI limit missed), 2 ERROR or ABORTED (the
lab or the controller misbehaved, or the run was interrupted), 3 invalid input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from testbed.errors import ConfigError, TestbedError

EXIT_PASS, EXIT_FAIL, EXIT_ERROR, EXIT_INVALID = 0, 1, 2, 3
VERDICT_EXIT = {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL, "ERROR": EXIT_ERROR, "ABORTED": EXIT_ERROR}
DEFAULT_LAB = Path("profiles/labs/emulated.yaml")


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load_bound(profile_path: str, lab_path: str) -> Any:
    """Load and validate both files, then plan; problems of all three steps are reported."""
    from testbed.model.loader import load_lab, load_profile
    from testbed.plan import make_plan
    from testbed.registry import catalog

    problems: list[str] = []
    profile = lab = None
    try:
        profile, profile_src = load_profile(profile_path)
    except ConfigError as exc:
        problems += exc.problems
    try:
        lab, lab_src = load_lab(lab_path)
    except ConfigError as exc:
        problems += exc.problems
    if problems or profile is None or lab is None:
        raise ConfigError(problems)
    sources = {"profile": profile_src, "lab": lab_src}
    return make_plan(
        profile, lab, catalog, locate=lambda where, loc, msg: sources[where].problem(loc, msg)
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from testbed.model.loader import load_any

    bad = 0
    for path in args.files:
        try:
            model = load_any(path)
        except ConfigError as exc:
            bad += 1
            for line in exc.problems:
                _err(line)
        else:
            print(f"{path}: valid {type(model).__name__.lower()} {model.name!r}")
    return EXIT_INVALID if bad else EXIT_PASS


def cmd_schema(args: argparse.Namespace) -> int:
    from testbed.model.lab import Lab
    from testbed.model.profile import Profile

    model = Profile if args.which == "profile" else Lab
    print(json.dumps(model.model_json_schema(by_alias=True), indent=2))
    return EXIT_PASS


def cmd_plan(args: argparse.Namespace) -> int:
    plan = load_bound(args.profile, args.lab)
    if args.json:
        print(json.dumps(plan.model_dump(mode="json"), indent=2))
        return EXIT_PASS
    print(f"profile {plan.profile} on lab {plan.lab}: {plan.duration_s:g} s x {plan.repetitions}")
    print("devices:")
    for d in plan.devices:
        lease = f"lease {d.lease_key}" if d.lease_key else "no lease"
        print(f"  {d.name:<12} {d.kind}/{d.driver}  ({lease})")
    print("links:")
    for seg in plan.segments:
        ports = ", ".join(f"{p.node}:{p.ifname}={p.address}" for p in seg.ports)
        imp = f" impaired by {seg.impaired_by}" if seg.impaired_by else ""
        print(f"  {seg.link:<12} {seg.subnet:<16} {ports}{imp}")
    print(f"routes: {len(plan.routes)}")
    print("streams:")
    for s in plan.streams:
        print(
            f"  {s.id:<16} {s.kind} {s.from_node} -> {s.to_node} ({s.dst_address}:{s.port}) "
            f"{s.rate_pps:g} pps x {s.payload_bytes} B, DSCP {s.dscp}, {s.start_s:g}-{s.stop_s:g} s"
        )
    print("timeline:")
    for e in plan.timeline:
        fault = "  (fault)" if e.fault else ""
        print(f"  {e.at_s:>8.3f} s  {e.device}.{e.action} {json.dumps(e.args)}{fault}")
    print(
        "captures: "
        + (", ".join(f"{c.name} ({c.node}:{c.ifname})" for c in plan.captures) or "none")
    )
    print("kpis:")
    for k in plan.kpis:
        from testbed.analysis.kpis import limit_text, unit_of

        if k.mcptt is not None:
            limit = limit_text(k) if k.max is not None or k.min is not None else "TS 22.179"
            print(f"  {k.name}: mcptt {k.mcptt} p95 {limit} ms")
        elif k.failover is not None:
            unit = "packets" if k.failover == "lost_packets" else "ms"
            subject = k.stream or k.device
            print(
                f"  {k.name}: {subject} failover {k.statistic} {k.failover} {limit_text(k)} {unit}"
            )
        elif k.counter is not None:
            print(f"  {k.name}: {k.device} counter {k.counter} {limit_text(k)} {k.unit}")
        else:
            assert k.metric is not None
            print(f"  {k.name}: {k.stream} {k.metric} {limit_text(k)} {unit_of(k.metric)}")
    return EXIT_PASS


def cmd_run(args: argparse.Namespace) -> int:
    from testbed.cli_progress import Progress, print_verdict_table
    from testbed.runner.run import Runner
    from testbed.settings import Settings

    plan = load_bound(args.profile, args.lab)
    from testbed.results.record import RUN_ID

    if args.run_id is not None and not RUN_ID.match(args.run_id):
        _err(f"testbed run: --run-id {args.run_id!r}: letters, digits, '_', '-', '.' only")
        return EXIT_INVALID
    if os.geteuid() != 0 and any(
        d.kind == "network" and d.driver == "emulated" for d in plan.devices
    ):
        _err(
            "testbed run: the emulated lab builds network namespaces and needs root "
            "(CAP_NET_ADMIN, CAP_SYS_ADMIN); run as root or with sudo"
        )
        return EXIT_ERROR
    settings = Settings.from_env(args.results)
    progress = Progress(sys.stderr, plan.duration_s * plan.repetitions, plan.repetitions)
    runner = Runner(
        plan,
        settings,
        profile_path=Path(args.profile),
        lab_path=Path(args.lab),
        wait_s=args.wait if args.wait is not None else 0.0,
        timeout_s=args.timeout,
        listeners=[progress],
        run_id=args.run_id,
    )
    try:
        outcome = runner.run()
    finally:
        progress.close()
    if args.json:
        print(json.dumps(outcome.summary, indent=2))
    else:
        print_verdict_table(sys.stdout, outcome.summary)
        _print_failover(outcome.summary)
        print(f"run record: {outcome.run_dir}")
    return VERDICT_EXIT[outcome.verdict]


def _print_failover(summary: dict[str, Any]) -> None:
    """After the verdict table (``testbed.cli_progress``), the failover spread, if any."""
    from testbed.results.summary import failover_table

    for line in failover_table(summary):
        print(line)


def cmd_list(args: argparse.Namespace) -> int:
    from testbed.results.index import Index
    from testbed.settings import Settings

    settings = Settings.from_env(args.results)
    index = Index(settings.database_url)
    rows = index.list_runs(profile=args.profile, lab=args.lab, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return EXIT_PASS
    import time

    print(f"{'RUN ID':<44} {'PROFILE':<20} {'LAB':<24} {'VERDICT':<8} STARTED")
    for r in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started_at"]))
        print(f"{r['run_id']:<44} {r['profile']:<20} {r['lab']:<24} {r['verdict']:<8} {started}")
    return EXIT_PASS


def cmd_show(args: argparse.Namespace) -> int:
    from testbed.cli_progress import print_verdict_table
    from testbed.results.record import RunRecord, read_json
    from testbed.settings import Settings

    settings = Settings.from_env(args.results)
    path = settings.results_dir / args.run_id
    if not path.is_dir() or "/" in args.run_id or args.run_id.startswith("."):
        _err(f"testbed show: no run {args.run_id!r} in {settings.results_dir}")
        return EXIT_INVALID
    record = RunRecord(path)
    manifest = record.manifest()
    summary_path = path / "summary.json"
    if not summary_path.exists():
        print(
            json.dumps(manifest, indent=2)
            if args.json
            else f"run {args.run_id}: status {manifest.get('status')}, no summary (the run did "
            "not finish; `testbed cleanup` marks dead runs as crashed)"
        )
        return EXIT_PASS
    summary = read_json(summary_path)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_verdict_table(sys.stdout, summary)
        _print_failover(summary)
        print(f"run record: {path}  (status {manifest.get('status')})")
    return EXIT_PASS


def cmd_analyze(args: argparse.Namespace) -> int:
    from testbed.analysis.mcptt import analyze_mcptt
    from testbed.analysis.passive import analyze_captures
    from testbed.errors import AnalysisError

    try:
        rates = _clock_rates(args.clock_rate or ())
        report = analyze_captures(args.captures, decode_as=args.decode_as or (), clock_rates=rates)
        report["mcptt"] = analyze_mcptt(args.captures)
    except AnalysisError as exc:
        _err(f"testbed analyze: {exc}")
        return EXIT_INVALID
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_PASS
    for cap in report["captures"]:
        trunc = "  (TRUNCATED: read up to the last whole packet)" if cap.get("truncated") else ""
        print(f"{cap['file']}: {cap['format']}, {cap['packets']} packets{trunc}")
    rtp = report["rtp_streams"]
    print(f"\nRTP streams: {len(rtp)}")
    if rtp:
        print(
            f"  {'SSRC':<11} {'SRC':<22} {'DST':<22} {'PT':>3} {'PKTS':>7} {'LOST':>6} "
            f"{'LOSS%':>6} {'JITTER ms':>9} {'MAX GAP ms':>10} {'REORD':>5} {'DUPS':>4}"
        )
        for r in rtp:
            jitter = "-" if r["jitter_ms"] is None else f"{r['jitter_ms']:.3f}"
            gap = "-" if r["max_gap_ms"] is None else f"{r['max_gap_ms']:.1f}"
            print(
                f"  {r['ssrc']:<11} {r['src']:<22} {r['dst']:<22} {r['payload_type']:>3} "
                f"{r['packets']:>7} {r['lost']:>6} {r['loss_pct']:>6.2f} {jitter:>9} "
                f"{gap:>10} {r['reordered']:>5} {r['duplicates']:>4}"
            )
    probes = report["probe_streams"]
    if probes:
        print(f"\nProbe streams: {len(probes)}")
        for p in probes:
            owd = p.get("owd_ms") or {}
            p50 = "-" if owd.get("p50") is None else f"{owd['p50']:.3f}"
            print(
                f"  {p['src']} -> {p['dst']} stream {p['stream']}: {p['received']} packets, "
                f"loss {p['loss_pct']:.2f} %, OWD p50 {p50} ms"
            )
    _print_mcptt(report["mcptt"])
    return EXIT_PASS


def _clock_rates(values: Sequence[str]) -> dict[int, int]:
    from testbed.errors import AnalysisError

    rates = {}
    for value in values:
        pt, sep, hz = value.partition("=")
        if not (sep and pt.isdigit() and hz.isdigit() and 0 <= int(pt) <= 127 and int(hz) > 0):
            raise AnalysisError(f"--clock-rate {value!r}: give PT=HZ, e.g. 96=16000")
        rates[int(pt)] = int(hz)
    return rates


def _print_mcptt(block: dict[str, Any]) -> None:
    requests = block["requests"]
    if not requests and not block["bursts"] and not block["late_entries"]:
        return
    outcomes: dict[str, int] = {}
    for r in requests:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    summary = ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) or "none"
    print(f"\nMCPTT: {len(requests)} floor requests ({summary}), "
          f"{len(block['preemptions'])} pre-emptions")  # fmt: skip
    print(f"  {'KPI':<38} {'P95 ms':>8} {'SAMPLES':>7} {'LIMIT':>9}  ENOUGH FOR P95")
    for kpi in block["kpis"].values():
        value = "-" if kpi["value"] is None else f"{kpi['value']:.1f}"
        limit = kpi["limit"]
        limit_text = "-" if not limit else f"{limit['max_ms']:g}"
        enough = "yes" if kpi["enough_samples"] else f"no (need {kpi['min_samples']})"
        print(f"  {kpi['name']:<38} {value:>8} {kpi['samples']:>7} {limit_text:>9}  {enough}")


def cmd_cleanup(args: argparse.Namespace) -> int:
    from testbed.cleanup import cleanup
    from testbed.settings import Settings

    settings = Settings.from_env(args.results)
    report = cleanup(settings, include_live=args.force, orphans=args.orphans)
    for line in report:
        print(line)
    if not report:
        print("nothing to clean up")
    return EXIT_PASS


class _Parser(argparse.ArgumentParser):
    """Usage errors are invalid input: exit 3, not argparse's 2 (which means ERROR here)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="testbed",
        description="Hardware-in-the-loop testbed controller for mission-critical "
        "communications labs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check profiles and labs")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="print the JSON Schema of profiles or labs")
    p.add_argument("which", choices=["profile", "lab"])
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser(
        "plan", help="print the resolved plan of a profile on a lab, touching nothing"
    )
    p.add_argument("profile", metavar="PROFILE")
    p.add_argument("--lab", default=str(DEFAULT_LAB))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run a profile on a lab")
    p.add_argument("profile", metavar="PROFILE")
    p.add_argument("--lab", default=str(DEFAULT_LAB))
    p.add_argument("--results", metavar="DIR", help="results folder (default: results)")
    p.add_argument("--json", action="store_true", help="print summary.json on stdout")
    p.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=3600.0,
        metavar="SECONDS",
        help="wait for leased devices (default: up to an hour) instead of failing",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="abort with ERROR after this long (default: duration x repetitions + 2 min)",
    )
    p.add_argument("--run-id", help="the run's id (default: time, profile and a random part)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="list runs")
    p.add_argument("--results", metavar="DIR")
    p.add_argument("--profile")
    p.add_argument("--lab")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="show one run")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--results", metavar="DIR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("analyze", help="analyse captures: RTP and probe streams, any pcap/pcapng")
    p.add_argument("captures", nargs="+", metavar="CAPTURE")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--decode-as",
        action="append",
        metavar="udp.port==N,rtp",
        help="treat a UDP port as RTP even when the heuristic would not (tshark syntax)",
    )
    p.add_argument(
        "--clock-rate",
        action="append",
        metavar="PT=HZ",
        help="RTP clock rate of a dynamic payload type (what SDP would say), e.g. 96=16000 "
        "for AMR-WB; without it such streams get no jitter",
    )
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("cleanup", help="remove what killed runs left behind")
    p.add_argument("--results", metavar="DIR")
    p.add_argument(
        "--force", action="store_true", help="also clean up runs whose controller is still alive"
    )
    p.add_argument(
        "--orphans",
        action="store_true",
        help="also remove tb<hex>- namespaces that no state file claims",
    )
    p.set_defaults(func=cmd_cleanup)

    from testbed.cli_dashboard import register

    register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        for line in exc.problems:
            _err(line)
        return EXIT_INVALID
    except TestbedError as exc:
        _err(f"testbed {args.command}: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _err(f"testbed {args.command}: interrupted")
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_PASS
    return code


if __name__ == "__main__":
    sys.exit(main())
