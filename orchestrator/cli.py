"""The `smets1` command line.

    smets1 run CONFIG [--out DIR] [--state-dir DIR] [--quiet] [--metrics-port N]
               [--max-failed N|P%] [--max-trt-missed N|P%]    a whole campaign in one process
    smets1 report DIR                           rebuild a run's report.html from its folder
    smets1 compare CONFIG [--policy KIND[:KEY=VALUE,...]]... [--out DIR]
                                                one config under several release policies
    smets1 capacity CONFIG [--max-miss-rate P%] [--low N] [--high N] [--resolution N]
                    [--out DIR] [--json]        the most large images a day sustained
    smets1 image build|inspect|verify|keygen|validate|plan|trial
                                                firmware images (orchestrator.image_cli)
    smets1 dco|fleet|scheduler|distributed      roles as processes of their own (roles_cli)

Every expected failure prints one line `smets1: error: ...` and exits 2; never a traceback.
A run that passes a threshold (orchestrator.gate) ends with one line `smets1: threshold
passed: ...` and exits 5.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.gate import EXIT_THRESHOLD, add_threshold_flags, gate_line, thresholds_of
from orchestrator.image_cli import _bounded, add_image_commands
from orchestrator.preflight import preflight
from orchestrator.roles_cli import add_role_commands
from smets1.config import load_config
from smets1.errors import Smets1Error
from smets1.limits import MAX_FLEET_DEVICES

EXIT_USAGE = 2


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 65_535:
        raise argparse.ArgumentTypeError(f"expected 1-65535, got {value}")
    return value


def _fail(message: str) -> int:
    """One line a problem on stderr (a config may have several), exit status 2."""
    for line in message.splitlines():
        print(f"smets1: error: {line}", file=sys.stderr)
    return EXIT_USAGE


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator.runner import run_config  # the heavy imports only when running

    try:
        config = load_config(args.config)
        preflight(config, args.config)
        out = Path(args.out) if args.out else Path("runs") / config.name
        flash_dir = Path(args.state_dir) if args.state_dir else None
        thresholds = thresholds_of(config, args.max_failed, args.max_trt_missed)
        summary = run_config(
            config,
            out,
            progress=None if args.quiet else sys.stderr,
            flash_dir=flash_dir,
            thresholds=thresholds,
            config_file=Path(args.config),
            metrics_port=args.metrics_port,
        )
    except Smets1Error as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename or args.config}: {exc.strerror}")
    failed = ", ".join(f"{k} {v}" for k, v in summary["failed"].items()) or "none"
    print(
        f"{summary['config']}: {summary['images_activated']}/{summary['requests']} activated "
        f"on {summary['devices']} devices; failed: {failed}\n"
        f"  {summary['blocks_delivered']:,} blocks ({summary['bytes_delivered']:,} bytes) "
        f"delivered; most large images released in a day: "
        f"{summary['max_large_images_released_in_a_day']:,}; TRT met {summary['trt_met']:,}, "
        f"missed {summary['trt_missed']:,}\n"
        f"  held for a schedule {summary['held_for_schedule']:,}, refused "
        f"{summary['refused']:,}, overdue {summary['overdue']:,}, 11.1 past seven days "
        f"{summary['overdue_11_1']:,}\n"
        f"  {summary['simulated_days']} simulated days in {summary['wall_seconds']} s wall, "
        f"peak RSS {summary['peak_rss_bytes'] / 2**20:.0f} MiB\n"
        f"{background_line(summary)}"
        f"  summary: {out / 'summary.json'}, report: {out / 'report.html'}"
    )
    line = gate_line(summary)
    if line is not None:
        # Last, on one line: the threshold the run passed, for a CI log.
        print(line, file=sys.stderr)
        return EXIT_THRESHOLD
    return 0


def background_line(summary: dict[str, Any]) -> str:
    """The background traffic's outcome, one line (with its newline), or "" when off."""
    bg = summary.get("background")
    if bg is None:
        return ""

    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:,.1f} s"

    share = bg.get("sample_share", 1.0)
    sampled = f" (a {share:.2%} sample)" if share < 1 else ""
    return (
        f"  background: {bg['requests']:,} requests{sampled}, met {bg['met']:,}, missed"
        f" {bg['missed']:,} (unanswered {bg['unanswered']:,}); latency p50"
        f" {secs(bg['p50_seconds'])}, p95 {secs(bg['p95_seconds'])}\n"
    )


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.report import write_report

    try:
        path = write_report(Path(args.dir))
    except Smets1Error as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename or args.dir}: {exc.strerror}")
    print(f"report: {path}")
    return 0


def cmd_compare_runs(args: argparse.Namespace) -> int:
    from orchestrator.compare import as_json, compare_summaries, load_summary, render

    try:
        checks = compare_summaries(
            load_summary(Path(args.reference)), load_summary(Path(args.candidate))
        )
    except Smets1Error as exc:
        return _fail(str(exc))
    print(json.dumps(as_json(checks), indent=2) if args.json else render(checks))
    return 0 if all(c.ok for c in checks) else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from orchestrator.policy_compare import compare, parse_specs, render_table
    from orchestrator.policy_compare_report import write_comparison

    try:
        specs = parse_specs(args.policy or ())
        config = load_config(args.config)
        preflight(config, args.config)
        out = Path(args.out) if args.out else Path("runs") / f"{config.name}-compare"
        result = compare(Path(args.config), specs, out)
        js, html = write_comparison(out, result)
    except Smets1Error as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename or args.config}: {exc.strerror}")
    print(f"{result['config']}: {len(specs)} release policies, seed {result['seed']}")
    print(render_table(result))
    print(f"  comparison: {js}, {html}")
    return 0


def _share(text: str) -> float:
    """A share: `1%` or `0.01`, from 0 to 1."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a share such as 1% or 0.01, got {text!r}"
        ) from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected 0% to 100%, got {text!r}")
    return value


#: --low, --high, --resolution: a whole number of large images a day.
_PER_DAY = _bounded(1, MAX_FLEET_DEVICES)


def cmd_capacity(args: argparse.Namespace) -> int:
    from orchestrator.capacity import find_capacity, render

    try:
        config = load_config(args.config)
        preflight(config, args.config)
        out = Path(args.out) if args.out else Path("runs") / f"{config.name}-capacity"
        result = find_capacity(
            Path(args.config),
            out,
            low=args.low,
            high=args.high,
            max_miss_rate=args.max_miss_rate,
            resolution=args.resolution,
        )
    except Smets1Error as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename or args.config}: {exc.strerror}")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['config']}: capacity search, seed {result['seed']}")
        print(render(result))
        print(f"  trials: {out / 'capacity.json'}")
    return 0 if result["capacity"] is not None else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smets1",
        description="A test double of the GB SMETS1 firmware path: fleet, DCO and MP230 scheduler.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run a fleet config end to end in one process")
    run.add_argument("config", help="YAML fleet config, e.g. fleet_configs/demo.yaml")
    run.add_argument("--out", help="folder for summary.json (default runs/<config name>/)")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument(
        "--state-dir",
        help="keep the fleet's flash in this folder, as `smets1 fleet` does (default: in RAM)",
    )
    run.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus /metrics on this port while the run goes on",
    )
    add_threshold_flags(run)
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser(
        "report",
        help="rebuild report.html (and failed_devices.csv) from a run's folder",
    )
    rep.add_argument("dir", help="the folder of a run: summary.json, run.json, the store")
    rep.set_defaults(func=cmd_report)
    cmp = sub.add_parser(
        "compare-runs",
        help="check that two runs of one config came out the same (a distributed run "
        "against the same config in process)",
    )
    cmp.add_argument("reference", help="summary.json of the reference run (smets1 run)")
    cmp.add_argument("candidate", help="summary.json of the run to check (smets1 distributed)")
    cmp.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    cmp.set_defaults(func=cmd_compare_runs)
    pol = sub.add_parser(
        "compare",
        help="run one config under several release policies and compare them side by side",
    )
    pol.add_argument("config", help="YAML fleet config, e.g. fleet_configs/mp230.yaml")
    pol.add_argument(
        "--policy",
        action="append",
        metavar="KIND[:KEY=VALUE,...]",
        help="a release policy (scheduler.policy): mp230, no_limit, equal_share,"
        " spare_capacity (with background traffic) or e.g. equal_share:users=5 or"
        " spare_capacity:headroom=0.1; repeat for each (default: mp230, no_limit,"
        " equal_share)",
    )
    pol.add_argument(
        "--out",
        help="folder for compare.json, compare.html and each policy's run"
        " (default runs/<config name>-compare/)",
    )
    pol.set_defaults(func=cmd_compare)
    cap = sub.add_parser(
        "capacity",
        help="find the most large images a day the system sustains with its background traffic",
        description="Run the config at several daily capacities of large images (one OS"
        " process each) and find the highest at which the releases are reached, no TRT is"
        " missed and background requests miss their targets no more than --max-miss-rate."
        " Exit 0 with an answer, 1 when not even --low is sustained, 2 for bad input.",
    )
    cap.add_argument("config", help="YAML fleet config with a `background` section")
    cap.add_argument(
        "--max-miss-rate",
        type=_share,
        default=0.01,
        metavar="P%",
        help="background requests that may miss their targets (default 1%%)",
    )
    cap.add_argument("--low", type=_PER_DAY, default=500, metavar="N", help="default 500")
    cap.add_argument(
        "--high", type=_PER_DAY, metavar="N", help="default: the config's number of devices"
    )
    cap.add_argument(
        "--resolution",
        type=_PER_DAY,
        metavar="N",
        help="stop when the answer is known to within N a day (default: a fiftieth of --high)",
    )
    cap.add_argument(
        "--out",
        help="folder for capacity.json and each trial's run (default runs/<name>-capacity/)",
    )
    cap.add_argument("--json", action="store_true", help="one JSON object")
    cap.set_defaults(func=cmd_capacity)
    add_image_commands(sub)
    add_role_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # A file name that is not UTF-8 arrives with surrogate escapes; echoed back in a
    # message it would stop the print with UnicodeEncodeError. Escape it instead.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
