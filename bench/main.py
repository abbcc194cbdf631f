"""``bench/run``: one run measures the limits, keyless per method, a peer, the CLI and scale; prints a table.
``bench/run --compare REV_A REV_B`` measures keyless at two git revisions instead (``bench/compare.py``).

Everything is on loopback, every wrk run is bounded, and every process started here is stopped at the end.
Results: ``bench/results/latest.json`` (and the table on stdout). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.common import BENCH, PEER_VENV, Processes, log, processes
from bench.keylessctl import (
    GRPC_RSA_BOUND,
    OWNER_MEMBER,
    RSA_BOUND,
    RUN_METHODS,
    TOKEN_CREATOR,
    KeylessServer,
    check_load,
    grpc_loads,
    jwt_bearer_assertions,
    loads,
    prepare_target,
    start_keyless,
)
from bench.subjects import PostgresPids, Subject, bare_sign_load, start_bare_app
from bench.wrkrun import Load, Wrk, WrkResult, pick

RESULTS = BENCH / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=6.0, help="seconds per wrk run (default 6)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections at max rate (default 32)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--workers", type=int, default=2, help="keyless serve --workers and bare-app processes")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs per figure; the best is reported (the machine is shared: default 3)")
    p.add_argument("--pairs", type=int, default=5,
                   help="back-to-back runs of each RSA-bound method and the bare signing app, after the rounds: "
                        "their ratio is judged on these pairs (default 5)")
    p.add_argument("--scale-rounds", type=int, default=5,
                   help="rounds of the empty and the populated server, back to back (default 5)")
    p.add_argument("--no-scale", action="store_true", help="skip the 100,000-account SQLite/PostgreSQL rows")
    p.add_argument("--no-postgres", action="store_true", help="scale rows on SQLite only")
    p.add_argument("--scale-accounts", type=int, default=100_000)
    p.add_argument("--bindings-per-account", type=int, default=10)
    p.add_argument("--no-analyzer", action="store_true",
                   help="skip the graph and analyzer row (10,000 accounts, 100,000 bindings)")
    p.add_argument("--analyzer-runs", type=int, default=5,
                   help="analyzer row: timed runs of each query on unchanged state, per round (default 5)")
    p.add_argument("--analyzer-rounds", type=int, default=3,
                   help="analyzer row: rounds, each a write then the query cold and --analyzer-runs times (default 3)")
    p.add_argument("--cli-runs", type=int, default=10, help="runs per CLI command (default 10)")
    p.add_argument("--ready-runs", type=int, default=5, help="keyless serve starts to time (default 5)")
    p.add_argument("--profile", action="store_true",
                   help="also record py-spy profiles of keyless per method (bench/results/profile/)")
    p.add_argument("--no-http", action="store_true", help="skip the limits, keyless per method and the peer")
    p.add_argument("--no-peer", action="store_true", help="skip moto (its load and the aws CLI)")
    p.add_argument("--no-cli", action="store_true", help="skip the CLI timings and keyless serve readiness")
    p.add_argument("--compare", nargs=2, metavar=("REV_A", "REV_B"),
                   help="instead of the sections: keyless at two git revisions, each checked out into a temporary "
                        "worktree, its methods measured interleaved (--repeat rounds, --pairs triplets with the bare "
                        "signing app); a side-by-side table with the difference and the noise "
                        "(bench/results/compare.json and .txt unless --out)")
    p.add_argument("--compare-postgres", action="store_true",
                   help="with --compare: generateAccessToken and signBlob on PostgreSQL too")
    p.add_argument("--methods", type=lambda text: tuple(m for m in text.split(",") if m), default=None,
                   metavar="M1,M2", help="only these keyless methods (e.g. generateAccessToken,"
                                         "grpc_generateAccessToken: a short targeted run); the bare apps and the "
                                         "peer still run")
    p.add_argument("--out", type=Path, default=None,
                   help="the results document (default bench/results/latest.json; compare.json with --compare)")
    args = p.parse_args(argv)
    if args.compare_postgres and not args.compare:
        p.error("--compare-postgres goes with --compare REV_A REV_B")
    if args.out is None:
        args.out = RESULTS / ("compare.json" if args.compare else "latest.json")
    return args


def only(args: argparse.Namespace, method_loads: dict[str, Load]) -> dict[str, Load]:
    """The loads of the methods ``--methods`` names (all without it); a name that is no method is an error."""
    if args.methods is None:
        return method_loads
    unknown = [m for m in args.methods if m not in method_loads]
    if unknown:
        raise SystemExit(f"bench/run --methods: no such method: {', '.join(unknown)} "
                         f"(known: {', '.join(method_loads)})")
    return {name: load for name, load in method_loads.items() if name in args.methods}


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def environment() -> dict[str, Any]:
    from importlib.metadata import version

    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name")), platform.processor()),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("keyless", "starlette", "uvicorn", "uvloop", "httptools",
                                                      "cryptography", "orjson")},
        "wrk": wrk[0] if wrk else "",
        "loadavg_start": loadavg(),
    }


# ---------------------------------------------------------------- sections


def profile_methods(server: KeylessServer, wrk: Wrk, method_loads: dict[str, Load]) -> dict[str, Any]:
    import threading

    from bench import profile

    folder = RESULTS / "profile"
    folder.mkdir(parents=True, exist_ok=True)
    shares: dict[str, Any] = {}
    for name, load in method_loads.items():
        log(f"profile: py-spy on pid {server.pids[0]} during a {name} load")
        raw = folder / f"{name}.raw"
        recorder = threading.Thread(target=profile.record, args=(server.pids[0], 5, raw))
        recorder.start()
        wrk.run(load, server.pids, duration=7, label=f"{name} (profiled, not reported)")
        recorder.join()
        (folder / f"{name}.txt").write_text(profile.summarise(raw))
        shares[name] = profile.category_shares(raw)
    return shares


def section_http(args: argparse.Namespace, procs: Processes, wrk: Wrk, work: Path) -> dict[str, Any]:
    """The limits, keyless per method and the peer, all started at once and measured round-robin.

    Each round runs the in-process RSA measurement, then for each subject one wrk run at max rate and one
    at half the rate it just reached; the best of ``--repeat`` rounds is reported (highest req/s, lowest p99
    at half). Interleaving spreads the machine's other load over every subject alike, which keeps the ratios
    (keyless / limit, keyless / peer) meaningful on a shared machine. Then ``--pairs`` times, each RSA-bound
    method and the bare signing app run back to back (which goes first alternates): their ratio is judged on
    those pairs, as the machine's speed swings from one run to the next.
    """
    from bench.limits import rsa_sign_rates
    from bench.peer import assume_role_load, start_moto

    subjects: list[Subject] = []
    log(f"http: bare apps ({args.workers} processes each, SO_REUSEPORT), keyless serve --workers {args.workers} "
        "(SQLite, metadata server on, proxy off)" + ("" if args.no_peer else ", moto_server"))
    apps = {}
    for app in ("trivial", "sign"):
        port, pids, _ = start_bare_app(procs, app, args.workers, work)
        if app == "trivial":
            bodies = [json.dumps({"name": f"item-{i}", "value": i, "tags": ["a", "b"]}) for i in range(64)]
            apps[app] = Subject("trivial_post", Load(f"http://127.0.0.1:{port}/", "POST",
                                                     ["Content-Type: application/json"], bodies), pids)
        else:
            apps[app] = Subject("bare_sign", bare_sign_load(port), pids)
    subjects += apps.values()
    server = start_keyless(procs, work / "keyless-main", "--proxy-port", "-1", "--metadata-port", "0",
                           "--grpc-port", "0", workers=args.workers)
    log(f"  keyless ready in {server.ready_s * 1000:.0f} ms, pids {server.pids}")
    target = prepare_target(server)
    method_loads = loads(server, target, assertions=jwt_bearer_assertions(target.key_file, 1000),
                         methods=RUN_METHODS)
    method_loads.update(grpc_loads(server, target))  # the same server's gRPC listener (in every process)
    method_loads = only(args, method_loads)
    subjects += [Subject(name, load, server.pids) for name, load in method_loads.items()]
    moto = None
    if not args.no_peer:
        moto = start_moto(procs, work)
        subjects.append(Subject("moto_assume_role", assume_role_load(moto), moto.pids))
    for subject in subjects:
        check_load(subject.load)
        wrk.warm_up(subject.load)

    rsa_runs: list[dict[str, float]] = []
    for round_no in range(1, args.repeat + 1):
        log(f"http: round {round_no}/{args.repeat}: each subject at max rate, then at half of that rate")
        rsa = rsa_sign_rates(3.0)
        log(f"  RSA-2048 signs/s in process: one core {rsa['one_core_signs_per_s']:,.0f}, all {rsa['cores']} cores "
            f"{rsa['all_cores_signs_per_s']:,.0f}")
        rsa_runs.append(rsa)
        for subject in subjects:
            peak = wrk.run(subject.load, subject.pids, label=subject.name)
            subject.runs.append(peak)
            # Half of the rate just measured, under the same background load as that measurement.
            subject.half_runs.append(wrk.run(subject.load, subject.pids, rate=peak.rps / 2,
                                             label=f"{subject.name} @ half"))

    bare_sign = apps["sign"]
    for pair_no in range(args.pairs):
        log(f"http: pair {pair_no + 1}/{args.pairs}: each RSA-bound method and the bare signing app back to back")
        for subject in subjects:
            if subject.name in RSA_BOUND or subject.name in GRPC_RSA_BOUND:
                if pair_no % 2 == 0:
                    bare_run = wrk.run(bare_sign.load, bare_sign.pids, label=f"bare_sign (pair of {subject.name})")
                    run = wrk.run(subject.load, subject.pids, label=f"{subject.name} (pair)")
                else:
                    run = wrk.run(subject.load, subject.pids, label=f"{subject.name} (pair)")
                    bare_run = wrk.run(bare_sign.load, bare_sign.pids, label=f"bare_sign (pair of {subject.name})")
                subject.pairs.append((run, bare_run))

    rsa_best = {"cores": rsa_runs[0]["cores"],
                "one_core_signs_per_s": max(r["one_core_signs_per_s"] for r in rsa_runs),
                "all_cores_signs_per_s": max(r["all_cores_signs_per_s"] for r in rsa_runs),
                "runs": rsa_runs}
    by_name = {s.name: s for s in subjects}
    out: dict[str, Any] = {
        "limits": {"rsa": rsa_best, "trivial_post": by_name["trivial_post"].result(),
                   "bare_sign": by_name["bare_sign"].result()},
        "keyless": {"server": {"ready_ms": server.ready_s * 1000, "workers": args.workers, "database": "sqlite",
                               "target": target.email},
                    "methods": {name: by_name[name].result() for name in method_loads}},
    }
    if moto is not None:
        out["peer"] = {"moto_assume_role": by_name["moto_assume_role"].result()}
    if args.profile:
        out["keyless"]["profile"] = profile_methods(server, wrk, method_loads)
    # How much the server's SQLite files grew while serving this section (audit log and WAL).
    out["keyless"]["server"]["requests_served"] = sum(r.requests for s in subjects if s.pids == server.pids
                                                      for r in (*s.runs, *s.half_runs))
    for name in ("keyless.db", "keyless.db-wal"):
        path = server.data_dir / name
        out["keyless"]["server"][f"{name}_mb"] = round(path.stat().st_size / 2**20, 1) if path.exists() else 0.0
    out["_handles"] = (server, target, moto)
    return out


def section_cli(args: argparse.Namespace, procs: Processes, work: Path, server: KeylessServer | None,
                target_email: str | None, moto: Any) -> dict[str, Any]:
    from bench.clitime import time_command
    from bench.peer import ROLE_ARN, aws_env

    out: dict[str, Any] = {}
    if server is not None and target_email is not None:
        log("cli: keyless auth print-access-token --impersonate-service-account")
        env = dict(os.environ, KEYLESS_DATA_DIR=str(server.data_dir))
        keyless_bin = str(BENCH.parent / ".venv" / "bin" / "keyless")
        probe = subprocess.run([keyless_bin, "auth", "print-access-token", "--help"], capture_output=True, env=env)
        if probe.returncode == 0:
            out["keyless_print_access_token"] = time_command(
                [keyless_bin, "auth", "print-access-token", "--impersonate-service-account", target_email],
                env, runs=args.cli_runs)
        else:
            out["keyless_users_list"] = time_command([keyless_bin, "users", "list"], env, runs=args.cli_runs)
            out["note"] = "keyless auth print-access-token does not exist yet: measured keyless users list"
    log("cli: the interpreter alone (python -c pass), the floor under any Python CLI")
    out["python_startup"] = time_command([sys.executable, "-c", "pass"], dict(os.environ), runs=args.cli_runs)
    if moto is not None:
        log("cli: aws sts assume-role against moto")
        out["aws_sts_assume_role"] = time_command(
            [str(PEER_VENV / "bin" / "aws"), "sts", "assume-role", "--role-arn", ROLE_ARN, "--role-session-name",
             "bench", "--endpoint-url", moto.url], aws_env(), runs=args.cli_runs)
    return out


def section_serve_ready(args: argparse.Namespace, procs: Processes, work: Path) -> dict[str, Any]:
    from bench.clitime import serve_ready_times

    log("cli: keyless serve time to ready (default options, --workers 1)")
    return serve_ready_times(procs, work, runs=args.ready_runs)


def section_scale(args: argparse.Namespace, procs: Processes, wrk: Wrk, work: Path) -> dict[str, Any]:
    """Per backend, two servers: one on an empty database, one on a populated one; all of them (SQLite's and
    PostgreSQL's) measured in turn, round after round, the order reversed every other round, so that the
    machine's other load and the position in the sequence fall on every server alike: on the two of a backend
    (the scale rows) and on the two backends (PostgreSQL's ratio to SQLite)."""
    out: dict[str, Any] = {"accounts": args.scale_accounts,
                           "bindings": args.scale_accounts * args.bindings_per_account, "big_binding": 1000,
                           "backends": {}}
    backends = ["sqlite"] if args.no_postgres else ["sqlite", "postgresql"]
    cluster = None
    try:
        servers: dict[tuple[str, str], tuple[KeylessServer, Any, Any]] = {}  # (server, target, database pids)
        for backend in backends:
            if backend == "postgresql":
                sys.path.insert(0, str(BENCH.parent))
                from tests.pg import PostgresCluster

                log("scale: starting a throwaway PostgreSQL cluster")
                cluster = PostgresCluster().start()
            row, started = _scale_servers(args, procs, work, backend, cluster)
            out["backends"][backend] = row
            servers.update(started)
        for method in ("generateAccessToken", "signBlob"):
            method_loads = {key: loads(server, target, methods=(method,))[method]
                            for key, (server, target, _) in servers.items()}
            runs: dict[tuple[str, str], list[WrkResult]] = {key: [] for key in servers}
            for load in method_loads.values():
                check_load(load)
                wrk.warm_up(load)
            for round_no in range(args.scale_rounds):
                # Which server goes first alternates: a run measured just after another server's run is not in
                # the same position as one measured after a pause (on PostgreSQL the first of the pair cost up to
                # 13% more CPU, whichever server it was).
                order = list(method_loads.items())
                for (backend, kind), load in order if round_no % 2 == 0 else order[::-1]:
                    server, _, db_pids = servers[backend, kind]
                    label = f"{backend} {'empty' if kind == 'empty' else 'populated'} {method}"
                    runs[backend, kind].append(wrk.run(load, server.pids, label=label, extra_pids=db_pids))
            for (backend, kind), kind_runs in runs.items():
                out["backends"][backend][kind][method] = {"max": pick(kind_runs, by="rps").as_dict(),
                                                          "runs": [run.as_dict() for run in kind_runs]}
        for server, _, _ in servers.values():
            procs.stop(server.proc)
    finally:
        if cluster is not None:
            procs.stop_all()  # the servers on it first
            cluster.stop()
    return out


def _scale_servers(args: argparse.Namespace, procs: Processes, work: Path, backend: str, cluster: Any
                   ) -> tuple[dict[str, Any], dict[tuple[str, str], tuple[KeylessServer, Any, Any]]]:
    """A backend's empty and populated servers, each with its target (a 1,000-member binding on the populated
    one's); the populated database filled and both settled alike."""
    from bench import populate

    extra: dict[str, list[str]] = {k: ["--proxy-port", "-1", "--metadata-port", "-1"] for k in ("empty", "scaled")}
    dsn: dict[str, str] = {}
    db_pids = None
    if cluster is not None:
        for kind in extra:
            dsn[kind] = cluster.create_database(f"bench_{kind}_")
            extra[kind] += ["--database", dsn[kind], "--audit-retention-days", "0"]
        db_pids = PostgresPids(cluster.data)
    servers = {kind: start_keyless(procs, work / f"scale-{backend}-{kind}", *extra[kind], workers=args.workers)
               for kind in extra}
    targets = {kind: prepare_target(servers[kind]) for kind in servers}
    log(f"scale: {backend}: adding {args.scale_accounts:,} accounts and "
        f"{args.scale_accounts * args.bindings_per_account:,} bindings to the second server's database")
    scaled = servers["scaled"]
    if backend == "sqlite":
        filled = populate.populate_sqlite(scaled.data_dir / "keyless.db", args.scale_accounts,
                                          args.bindings_per_account)
        populate.settle_sqlite(servers["empty"].data_dir / "keyless.db")
    else:
        filled = populate.populate_postgres(dsn["scaled"], args.scale_accounts, args.bindings_per_account)
        populate.settle_postgres(dsn["empty"])
    log(f"  populated in {filled['seconds']:.1f} s; a 1,000-member binding on its target")
    path = f"/v1/projects/-/serviceAccounts/{targets['scaled'].email}"
    policy = scaled.call("POST", f"{path}:getIamPolicy")
    policy["bindings"] = [{"role": TOKEN_CREATOR, "members": populate.big_binding_members(OWNER_MEMBER)}]
    scaled.call("POST", f"{path}:setIamPolicy", {"policy": policy})
    row: dict[str, Any] = {"empty": {}, "scaled": {}, "populate": filled}
    return row, {(backend, kind): (servers[kind], targets[kind], db_pids) for kind in servers}


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every server and the PostgreSQL cluster are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    results: dict[str, Any] = {"environment": environment(),
                               "settings": {"duration_s": args.duration, "connections": args.connections,
                                            "threads": args.threads, "workers": args.workers,
                                            "repeat": args.repeat, "pairs": args.pairs,
                                            "scale_rounds": args.scale_rounds}}
    work = Path(tempfile.mkdtemp(prefix="keyless-bench-"))
    wrk = Wrk(duration=args.duration, threads=args.threads, connections=args.connections, work_dir=work,
              repeat=args.repeat)
    if args.compare:
        return compare(args, results, wrk, work, started)
    try:
        with processes() as procs:
            server = moto = None
            target_email = None
            if not args.no_http:
                http_results = section_http(args, procs, wrk, work)
                server, target, moto = http_results.pop("_handles")
                target_email = target.email
                results.update(http_results)
            if not args.no_cli:
                if server is None:
                    server = start_keyless(procs, work / "keyless-main", "--proxy-port", "-1", workers=args.workers)
                    target_email = prepare_target(server).email
                if moto is None and not args.no_peer:
                    from bench.peer import start_moto

                    moto = start_moto(procs, work)
                results["cli"] = section_cli(args, procs, work, server, target_email, moto)
            procs.stop_all()  # the HTTP section's servers: nothing else runs while the next sections measure
            if not args.no_cli:
                results["cli"]["serve_ready"] = section_serve_ready(args, procs, work)
            if not args.no_scale:
                results["scale"] = section_scale(args, procs, wrk, work)
            if not args.no_analyzer:
                from bench.analyzer import section_analyzer

                results["analyzer"] = section_analyzer(procs, work, args.analyzer_runs, args.analyzer_rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["environment"]["loadavg_end"] = loadavg()
    results["environment"]["run_seconds"] = round(time.monotonic() - started, 1)
    results["derived"] = report.derive(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = report.table(results)
    (args.out.with_suffix(".txt")).write_text(table)
    print(table)
    log(f"done in {results['environment']['run_seconds']:.0f} s: {args.out}")
    return 0


def compare(args: argparse.Namespace, results: dict[str, Any], wrk: Wrk, work: Path, started: float) -> int:
    """``--compare REV_A REV_B``: the comparison alone (``bench/compare.py``), its table and its document."""
    from bench.compare import section_compare

    try:
        with processes() as procs:
            results["compare"] = section_compare(args, procs, wrk, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["environment"]["loadavg_end"] = loadavg()
    results["environment"]["run_seconds"] = round(time.monotonic() - started, 1)
    results["derived_compare"] = report.derive_compare(results["compare"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = report.compare_table(results)
    args.out.with_suffix(".txt").write_text(table)
    print(table)
    log(f"done in {results['environment']['run_seconds']:.0f} s: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
