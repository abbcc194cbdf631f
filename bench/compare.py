"""``bench/run --compare REV_A REV_B``: keyless at two git revisions, measured in one run, interleaved.

Each revision is checked out into a temporary worktree (``git worktree add --detach``) and served from there:
``keyless serve`` with ``PYTHONPATH=<worktree>/src`` and this checkout's .venv (so both run on the same
dependencies; the benchmark's own code is this checkout's). Each revision gets the servers the HTTP section
measures keyless on (SQLite, ``--workers N``, the metadata server on), and with ``--compare-postgres`` one on
PostgreSQL too (``generateAccessToken`` and ``signBlob``, one database each in one throwaway cluster). When both
revisions serve gRPC, the SQLite servers also listen on ``--grpc-port 0`` and the gRPC rows (``GenerateAccessToken``,
``SignBlob``, driven by h2load) are measured in the same rounds, with ``SignBlob`` in the triplets too; each
revision's gRPC ``GenerateAccessToken`` is also given against its own REST ``generateAccessToken`` (issue 17's
ratio, both measured in the same rounds).

The measurement is the HTTP section's, interleaved across the revisions instead of across subjects: each round
runs every method on A and on B back to back (which goes first alternates from round to round), at max rate and
then both at the same half rate (half the mean of the two max rates just measured). Then ``--pairs`` times, each
RSA-bound method on A and on B and the bare signing app run back to back (the order rotates), for the ratio to the
bare app. The table (``bench/report.py``: ``compare_table``) gives each figure's median over the rounds for A and
B, the difference, and the run's noise: the spread between rounds of the same revision.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import BENCH, Processes, log
from bench.keylessctl import (
    GRPC_RSA_BOUND,
    RSA_BOUND,
    check_load,
    grpc_loads,
    jwt_bearer_assertions,
    loads,
    prepare_target,
    start_keyless,
)
from bench.subjects import PostgresPids, Subject, bare_sign_load, start_bare_app
from bench.wrkrun import Wrk

REPO = BENCH.parent
POSTGRES_METHODS = ("generateAccessToken", "signBlob")


@dataclass
class Revision:
    """One side of the comparison: its label (A or B), the revision as given, and its checkout."""

    label: str
    rev: str
    sha: str
    subject: str
    path: Path

    def as_dict(self) -> dict[str, str]:
        return {"label": self.label, "rev": self.rev, "sha": self.sha, "subject": self.subject}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def resolve(rev: str, repo: Path = REPO) -> tuple[str, str]:
    """The commit ``rev`` names and its subject line; a name git does not know is an error, before anything
    starts."""
    try:
        sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"bench/run --compare: {rev!r} is not a revision of {repo}") from None
    return sha, _git(repo, "log", "-1", "--format=%s", sha)


@contextlib.contextmanager
def checkouts(revs: list[str], root: Path, repo: Path = REPO) -> Iterator[list[Revision]]:
    """Each revision in a detached worktree under ``root``; the worktrees are removed on the way out."""
    resolved = [resolve(rev, repo) for rev in revs]
    made: list[Path] = []
    try:
        out = []
        for label, rev, (sha, subject) in zip("AB", revs, resolved, strict=True):
            path = root / f"rev-{label}"
            log(f"compare: {label} = {rev} ({sha[:10]} {subject[:60]}) checked out in {path}")
            _git(repo, "worktree", "add", "--detach", str(path), sha)
            made.append(path)
            out.append(Revision(label, rev, sha, subject, path))
        yield out
    finally:
        for path in made:
            with contextlib.suppress(subprocess.CalledProcessError):
                _git(repo, "worktree", "remove", "--force", str(path))
        with contextlib.suppress(subprocess.CalledProcessError):
            _git(repo, "worktree", "prune")


def serves_grpc(checkout: Path) -> bool:
    """Whether the revision checked out at ``checkout`` has keyless's gRPC listener (``keyless serve --grpc-port``)."""
    return (checkout / "src" / "keyless" / "grpc" / "server.py").is_file()


def section_compare(args: argparse.Namespace, procs: Processes, wrk: Wrk, work: Path) -> dict[str, Any]:
    with checkouts(list(args.compare), work) as revisions:
        return _measure(args, procs, wrk, work, revisions)


def _measure(args: argparse.Namespace, procs: Processes, wrk: Wrk, work: Path, revisions: list[Revision]
             ) -> dict[str, Any]:
    port, bare_pids, _ = start_bare_app(procs, "sign", args.workers, work)
    bare = Subject("bare_sign", bare_sign_load(port), bare_pids)
    # subjects[backend][method][label]
    subjects: dict[str, dict[str, dict[str, Subject]]] = {"sqlite": {}}
    servers: dict[str, dict[str, Any]] = {"sqlite": {}}
    cluster = None
    grpc = all(serves_grpc(rev.path) for rev in revisions)
    if not grpc:
        log("compare: no gRPC rows (a revision without keyless's gRPC listener)")
    try:
        for rev in revisions:
            server = start_keyless(procs, work / f"keyless-{rev.label}", "--proxy-port", "-1", "--metadata-port", "0",
                                   *(("--grpc-port", "0") if grpc else ()), workers=args.workers, source=rev.path)
            log(f"  {rev.label}: keyless (SQLite) ready in {server.ready_s * 1000:.0f} ms, pids {server.pids}")
            target = prepare_target(server)
            method_loads = loads(server, target, assertions=jwt_bearer_assertions(target.key_file, 1000))
            method_loads.update(grpc_loads(server, target))  # empty without --grpc-port
            if args.methods is not None:
                method_loads = {name: load for name, load in method_loads.items() if name in args.methods}
            for method, load in method_loads.items():
                subjects["sqlite"].setdefault(method, {})[rev.label] = Subject(method, load, server.pids)
            servers["sqlite"][rev.label] = {"ready_ms": server.ready_s * 1000}
        if args.compare_postgres:
            sys.path.insert(0, str(REPO))
            from tests.pg import PostgresCluster

            log("compare: starting a throwaway PostgreSQL cluster")
            cluster = PostgresCluster().start()
            db_pids = PostgresPids(cluster.data)
            subjects["postgresql"], servers["postgresql"] = {}, {}
            for rev in revisions:
                dsn = cluster.create_database(f"bench_{rev.label.lower()}_")
                server = start_keyless(procs, work / f"keyless-pg-{rev.label}", "--proxy-port", "-1",
                                       "--metadata-port", "-1", "--database", dsn, "--audit-retention-days", "0",
                                       workers=args.workers, source=rev.path)
                log(f"  {rev.label}: keyless (PostgreSQL) ready in {server.ready_s * 1000:.0f} ms")
                target = prepare_target(server)
                methods = tuple(m for m in POSTGRES_METHODS if args.methods is None or m in args.methods)
                for method, load in loads(server, target, methods=methods).items():
                    subjects["postgresql"].setdefault(method, {})[rev.label] = Subject(method, load, server.pids,
                                                                                      db_pids=db_pids)
                servers["postgresql"][rev.label] = {"ready_ms": server.ready_s * 1000}
        everything = [s for methods in subjects.values() for by_rev in methods.values() for s in by_rev.values()]
        for subject in [bare, *everything]:
            check_load(subject.load)
            wrk.warm_up(subject.load)
        _rounds(args, wrk, revisions, subjects)
        _triplets(args, wrk, revisions, subjects["sqlite"], bare)
    finally:
        if cluster is not None:
            procs.stop_all()  # the servers on it first
            cluster.stop()
    return {
        "revisions": [rev.as_dict() for rev in revisions],
        "servers": servers,
        "bare_sign": {"runs": [run.as_dict() for run in bare.runs]},
        "backends": {backend: {method: {label: _every_run(s) for label, s in by_rev.items()}
                               for method, by_rev in methods.items()}
                     for backend, methods in subjects.items()},
    }


def _every_run(subject: Subject) -> dict[str, Any]:
    """Each run of a subject, in order (the table takes medians and spreads of them)."""
    out: dict[str, Any] = {"runs": [run.as_dict() for run in subject.runs],
                           "half_runs": [run.as_dict() for run in subject.half_runs]}
    if subject.pairs:
        out["pairs"] = subject.result()["pairs"]
    return out


def _rounds(args: argparse.Namespace, wrk: Wrk, revisions: list[Revision],
            subjects: dict[str, dict[str, dict[str, Subject]]]) -> None:
    """``--repeat`` rounds: every method on A and B back to back at max rate, then both at one half rate."""
    for round_no in range(args.repeat):
        order = [rev.label for rev in (revisions if round_no % 2 == 0 else revisions[::-1])]
        log(f"compare: round {round_no + 1}/{args.repeat} ({' then '.join(order)} for each method)")
        for backend, methods in subjects.items():
            for method, by_rev in methods.items():
                peaks = {}
                for label in order:
                    s = by_rev[label]
                    peaks[label] = wrk.run(s.load, s.pids, label=f"{label} {backend} {method}", extra_pids=s.db_pids)
                    s.runs.append(peaks[label])
                # The same offered load for both, so that their latencies answer the same question.
                rate = sum(p.rps for p in peaks.values()) / len(peaks) / 2
                for label in order:
                    s = by_rev[label]
                    s.half_runs.append(wrk.run(s.load, s.pids, rate=rate, label=f"{label} {backend} {method} @ half",
                                               extra_pids=s.db_pids))


def _triplets(args: argparse.Namespace, wrk: Wrk, revisions: list[Revision],
              methods: dict[str, dict[str, Subject]], bare: Subject) -> None:
    """``--pairs`` times, each RSA-bound method on A and on B and the bare signing app back to back; which of
    the three goes first rotates. Both revisions' pairs share the bare app's run of their triplet."""
    for pair_no in range(args.pairs):
        log(f"compare: triplet {pair_no + 1}/{args.pairs}: each RSA-bound method on A and B and the bare signing app")
        for method in (*RSA_BOUND, *GRPC_RSA_BOUND):
            if method not in methods:
                continue
            sides = [("bare", bare), *((rev.label, methods[method][rev.label]) for rev in revisions)]
            shift = pair_no % len(sides)
            runs = {}
            for label, s in sides[shift:] + sides[:shift]:
                runs[label] = wrk.run(s.load, s.pids, label=f"bare_sign (with {method})" if label == "bare"
                                      else f"{label} {method} (triplet)")
            bare.runs.append(runs["bare"])
            for rev in revisions:
                methods[method][rev.label].pairs.append((runs[rev.label], runs["bare"]))
