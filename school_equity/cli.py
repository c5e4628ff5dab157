"""`school-equity`: the project's command line.

    school-equity broker start|stop|status     the embedded Kafka-compatible broker (Tansu)
    school-equity produce --events N            simulated survey submissions into the topic
    school-equity demo --events N               the whole pipeline, headless, with a summary
    school-equity dev                           broker + producer + `dagster dev`, stopped together
    school-equity stream reset --reason TEXT    after the topic was recreated (offsets went backwards)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from school_equity.settings import PROJECT_DIR, load_settings


def _kafka_port(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.rpartition(":")
    return host or "127.0.0.1", int(port)


# -- broker --------------------------------------------------------------------------------

def cmd_broker(args) -> int:
    from school_equity.kafka.broker import load_state, save_state, start_broker, state_file, stop_pid

    settings = load_settings()
    running = load_state(settings.home)
    if args.action == "status":
        print(f"broker running at {running.bootstrap} (pid {running.pid})" if running else "broker not running")
        return 0 if running else 1
    if args.action == "stop":
        if not running:
            print("broker not running")
            return 0
        stop_pid(running.pid)
        state_file(settings.home).unlink(missing_ok=True)
        print(f"broker (pid {running.pid}) stopped")
        return 0
    if running:
        print(f"broker already running at {running.bootstrap} (pid {running.pid})")
        return 0
    host, port = _kafka_port(settings.kafka_bootstrap)
    settings.home.mkdir(parents=True, exist_ok=True)
    broker, proc = start_broker(host, port, log_path=str(settings.home / "broker.log"))
    if args.foreground:
        print(f"broker listening on {broker.bootstrap} (Ctrl-C to stop)")
        try:
            proc.wait()
        except KeyboardInterrupt:
            stop_pid(broker.pid)
        return 0
    save_state(settings.home, broker)
    print(f"broker listening on {broker.bootstrap} (pid {broker.pid}); log: {broker.log_path}")
    return 0


# -- producer ------------------------------------------------------------------------------

def add_produce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=100_000, help="number of events to produce")
    p.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--partitions", type=int, default=3, help="topic partitions, if the topic is created")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long")


def produce_events(bootstrap: str, topic: str, args):
    from school_equity.kafka.producer import produce

    return produce(bootstrap, topic, args.events, seed=args.seed, rate_per_s=args.rate,
                   partitions=args.partitions, max_seconds=args.max_seconds)


def cmd_produce(args) -> int:
    settings = load_settings()
    from school_equity.kafka.producer import format_report

    report = produce_events(settings.kafka_bootstrap, settings.topic, args)
    print(format_report(report))
    return 0


# -- demo ----------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    import warnings

    from school_equity.demo import run_demo

    if not args.verbose:
        # the summary is the demo's output; run logs stay in the instance (and with --verbose)
        import dagster as dg

        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        os.environ.setdefault("SCHOOL_EQUITY_RUN_LOG_LEVEL", "WARNING")

    return run_demo(args)


# -- dev -----------------------------------------------------------------------------------

def _restore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setsid()


def dagster_home_for(home: Path) -> Path:
    """A DAGSTER_HOME with the project's instance settings (pools, run queue)."""
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    template = Path(__file__).parent / "dagster_home" / "dagster.yaml"
    target = dagster_home / "dagster.yaml"
    if template.exists() and not target.exists():
        shutil.copyfile(template, target)
    return dagster_home


def cmd_dev(args) -> int:
    from school_equity.kafka.broker import load_state, start_broker, stop_pid

    settings = load_settings()
    started = []
    broker = load_state(settings.home)
    if broker is None:
        host, port = _kafka_port(settings.kafka_bootstrap)
        settings.home.mkdir(parents=True, exist_ok=True)
        broker, _ = start_broker(host, port, log_path=str(settings.home / "broker.log"))
        started.append(broker.pid)
        print(f"broker listening on {broker.bootstrap} (pid {broker.pid})")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home_for(settings.home)),
           "SCHOOL_EQUITY_KAFKA": broker.bootstrap}
    procs = []
    if args.rate > 0:
        producer = subprocess.Popen(
            [sys.executable, "-m", "school_equity.cli", "produce", "--events", str(args.events),
             "--rate", str(args.rate)], env=env, preexec_fn=_restore_signals)
        procs.append(producer)
        print(f"producer running at {args.rate:.0f} events/s (pid {producer.pid})")
    webserver = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-m", "school_equity.definitions", "-h", args.host, "-p",
         str(args.port)], env=env, cwd=PROJECT_DIR, preexec_fn=_restore_signals)
    procs.append(webserver)
    print(f"dagster dev on http://{args.host}:{args.port} (pid {webserver.pid}); Ctrl-C stops everything")
    try:
        webserver.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        for pid in started:
            stop_pid(pid)
    return 0


# -- stream maintenance ----------------------------------------------------------------------

def cmd_stream(args) -> int:
    from school_equity.kafka.ledger import request_reset
    from school_equity.lake import Lake

    settings = load_settings()
    path = request_reset(Lake(settings.lake_root), settings.topic, args.reason)
    print(f"reset recorded at {path}: the sensor's next batch starts at the start of the topic's log")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="school-equity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("broker", help="start/stop the embedded Kafka-compatible broker")
    b.add_argument("action", choices=["start", "stop", "status"])
    b.add_argument("--foreground", action="store_true")
    b.set_defaults(func=cmd_broker)

    p = sub.add_parser("produce", help="produce simulated survey submissions")
    add_produce_args(p)
    p.set_defaults(func=cmd_produce)

    d = sub.add_parser("demo", help="run the whole pipeline headless on the embedded defaults")
    add_produce_args(d)
    d.add_argument("--keep", action="store_true", help="keep the previous demo's lake and warehouse")
    d.add_argument("--verbose", action="store_true", help="show Dagster's run logs and API-stability warnings")
    d.set_defaults(func=cmd_demo, events=100_000)

    v = sub.add_parser("dev", help="broker + producer + dagster dev")
    v.add_argument("--port", type=int, default=3000)
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--rate", type=float, default=200.0, help="producer events/s (0: no producer)")
    v.add_argument("--events", type=int, default=1_000_000)
    v.set_defaults(func=cmd_dev)

    s = sub.add_parser("stream", help="stream maintenance")
    s.add_argument("action", choices=["reset"])
    s.add_argument("--reason", required=True)
    s.set_defaults(func=cmd_stream)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time()
    try:
        return args.func(args)
    finally:
        if args.command == "demo":
            print(f"(wall time {time.time() - started:.1f}s)")


if __name__ == "__main__":
    sys.exit(main())
