"""``bench/run --compare REV_A REV_B``: each revision checked out into a worktree that is removed afterwards, and
the side-by-side table's figures (medians over the rounds, B against A, the spread between rounds as the noise)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from bench.compare import checkouts

from bench import report


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    for text in ("old", "new"):
        (repo / "version.txt").write_text(text)
        _git(repo, "add", "version.txt")
        _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", f"the {text} one")
    return repo


def test_each_revision_is_checked_out_apart_and_removed_afterwards(repo: Path, tmp_path: Path) -> None:
    with checkouts(["HEAD~1", "HEAD"], tmp_path / "work", repo) as (a, b):
        assert (a.path / "version.txt").read_text() == "old" and (b.path / "version.txt").read_text() == "new"
        assert (a.label, a.subject, b.label, b.subject) == ("A", "the old one", "B", "the new one")
        assert a.sha == _git(repo, "rev-parse", "HEAD~1")
    assert not a.path.exists() and not b.path.exists()
    assert _git(repo, "worktree", "list").count("\n") == 0, "only the repository's own tree is left"


def test_the_worktrees_go_when_the_run_fails(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), checkouts(["HEAD", "HEAD"], tmp_path / "work", repo) as (a, b):
        assert a.path != b.path and a.sha == b.sha  # one revision twice: the noise floor
        raise RuntimeError("a server did not start")
    assert not a.path.exists() and not b.path.exists()
    assert _git(repo, "worktree", "list").count("\n") == 0


def test_an_unknown_revision_stops_the_run_before_anything_is_checked_out(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no-such-rev"), checkouts(["HEAD", "no-such-rev"], tmp_path / "w", repo):
        pass
    assert not (tmp_path / "w").exists()


def _run(rps: float, cpu: float, p99: float = 5.0, db: float | None = None, rate: float | None = None
         ) -> dict[str, Any]:
    return {"rps": rps, "cpu_ms_per_req": cpu, "db_cpu_ms_per_req": db, "p99_ms": p99, "target_rps": rate}


def _side(rps: list[float], cpu: list[float], p99: list[float], pairs: list[tuple[float, float]] | None = None,
          db: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": [_run(r, c, db=db) for r, c in zip(rps, cpu, strict=True)],
                           "half_runs": [_run(r / 2, 0.2, p, rate=r / 2) for r, p in zip(rps, p99, strict=True)]}
    if pairs:
        out["pairs"] = [{"rps": m, "bare_rps": b} for m, b in pairs]
    return out


def _rows(compare: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["backend"], r["method"], r["metric"]): r for r in report.derive_compare(compare)}


def test_medians_the_change_and_the_spread_between_rounds() -> None:
    compare = {"backends": {"sqlite": {"generateAccessToken": {
        "A": _side([10_000, 12_000, 11_000], [0.12, 0.10, 0.11], [6.0, 5.0, 5.5]),
        "B": _side([13_000, 12_500, 12_000], [0.10, 0.095, 0.105], [5.0, 5.2, 5.1]),
    }}}}
    rows = _rows(compare)
    rps = rows["sqlite", "generateAccessToken", "req/s"]
    assert (rps["a"], rps["b"]) == (11_000, 12_500)
    assert rps["change"] == pytest.approx(12_500 / 11_000 - 1)
    # A's rounds moved by 2,000 around 11,000 (18%), B's by 1,000 around 12,500 (8%): the noise is the larger.
    assert rps["spread"] == pytest.approx(2_000 / 11_000)
    assert rps["verdict"] == "within noise"  # +13.6% is not more than the 18% the rounds of A moved
    cpu = rows["sqlite", "generateAccessToken", "cpu ms/req"]
    assert (cpu["a"], cpu["b"]) == (0.11, 0.10) and cpu["spread"] == pytest.approx(0.02 / 0.11)
    p99 = rows["sqlite", "generateAccessToken", "p99@half ms"]
    assert (p99["a"], p99["b"], p99["verdict"]) == (5.5, 5.1, "within noise")
    assert p99["note"] == "at 5,500/s"


def test_a_change_beyond_the_noise_is_called_better_or_worse_by_the_figure_s_direction() -> None:
    compare = {"backends": {"sqlite": {"signBlob": {
        "A": _side([5_000, 5_100, 5_050], [0.36, 0.35, 0.355], [8.0, 8.1, 8.2], pairs=[(5_000, 5_500)] * 3),
        "B": _side([4_000, 4_100, 4_050], [0.45, 0.44, 0.445], [7.0, 7.1, 7.0], pairs=[(4_000, 5_500)] * 3),
    }}}}
    rows = _rows(compare)
    assert rows["sqlite", "signBlob", "req/s"]["verdict"] == "B worse"
    assert rows["sqlite", "signBlob", "cpu ms/req"]["verdict"] == "B worse"
    assert rows["sqlite", "signBlob", "p99@half ms"]["verdict"] == "B better"
    bare = rows["sqlite", "signBlob", "vs bare app"]
    assert (bare["a"], bare["b"]) == (5_000 / 5_500, 4_000 / 5_500)
    assert bare["spread"] == 0 and bare["verdict"] == "B worse"


def test_postgresql_rows_count_the_database_s_cpu_and_one_round_has_no_spread() -> None:
    compare = {"backends": {"postgresql": {"generateAccessToken": {
        "A": _side([5_000], [0.24], [9.0], db=0.14), "B": _side([9_000], [0.12], [6.0], db=0.05)}}}}
    cpu = _rows(compare)["postgresql", "generateAccessToken", "cpu+db ms/req"]
    assert (cpu["a"], cpu["b"]) == (pytest.approx(0.38), pytest.approx(0.17))
    assert cpu["spread"] is None and cpu["verdict"] == ""


def test_the_table_names_both_revisions_and_prints_every_figure() -> None:
    compare = {"revisions": [{"label": "A", "rev": "HEAD~1", "sha": "a" * 40, "subject": "before"},
                             {"label": "B", "rev": "HEAD", "sha": "b" * 40, "subject": "after"}],
               "backends": {"sqlite": {"signJwt": {
                   "A": _side([4_000, 4_200], [0.45, 0.44], [8.0, 7.0], pairs=[(4_000, 5_000), (4_200, 5_000)]),
                   "B": _side([4_400, 4_300], [0.41, 0.42], [7.5, 7.0], pairs=[(4_400, 5_000), (4_300, 5_000)])}}}}
    results = {"environment": {"date": "2026-11-24", "cores": 2, "cpu": "x", "python": "3.11", "loadavg_start": [0.5],
                               "loadavg_end": [0.6], "run_seconds": 60},
               "settings": {"threads": 2, "connections": 32, "duration_s": 2, "repeat": 2, "pairs": 2, "workers": 2},
               "compare": compare}
    table = report.compare_table(results)
    assert "A = HEAD~1 (aaaaaaaaaa before)" in table and "B = HEAD (bbbbbbbbbb after)" in table
    lines = table.splitlines()
    assert any("sqlite signJwt" in line and "4,100" in line and "4,350" in line and "+6.1%" in line
               for line in lines)
    assert any("vs bare app" in line and "82.0%" in line and "87.0%" in line for line in lines)


def test_grpc_generate_access_token_is_given_against_rest_in_each_revision() -> None:
    """Issue 17's ratio in a two-revision run: each revision's gRPC GenerateAccessToken over its own REST
    generateAccessToken (medians over the same rounds), printed as a factor next to the gRPC rows."""
    compare = {"revisions": [{"label": "A", "rev": "HEAD~1", "sha": "a" * 40, "subject": "before"},
                             {"label": "B", "rev": "HEAD", "sha": "b" * 40, "subject": "after"}],
               "backends": {"sqlite": {
                   "generateAccessToken": {"A": _side([10_000, 12_000], [0.1, 0.1], [5.0, 5.0]),
                                           "B": _side([10_000, 11_000], [0.1, 0.1], [5.0, 5.0])},
                   "grpc_generateAccessToken": {"A": _side([4_000, 4_400], [0.3, 0.3], [9.0, 9.0]),
                                                "B": _side([8_000, 8_400], [0.15, 0.15], [6.0, 6.0])}}}}
    row = _rows(compare)["sqlite", "grpc_generateAccessToken", "vs REST"]
    assert row["a"] == pytest.approx(4_200 / 11_000) and row["b"] == pytest.approx(8_200 / 10_500)
    assert row["verdict"] == "B better"
    results = {"environment": {"date": "2026-12-05", "cores": 2, "cpu": "x", "python": "3.11", "loadavg_start": [0.5],
                               "run_seconds": 60},
               "settings": {"threads": 2, "connections": 32, "duration_s": 2, "repeat": 2, "pairs": 0, "workers": 2},
               "compare": compare}
    assert any("vs REST" in line and "0.38x" in line and "0.78x" in line
               for line in report.compare_table(results).splitlines())
