"""The benchmark's judged ratios (``bench/report.py``): medians of each side's runs, not each side's best run
and not a ratio within each pair; results written before pairs existed fall back to the best runs."""

from __future__ import annotations

from typing import Any

import pytest

from bench import report


def _run(rps: float, cpu: float, db: float | None = None) -> dict[str, Any]:
    return {"rps": rps, "p50_ms": 1.0, "p99_ms": 5.0, "cpu_ms_per_req": cpu, "db_cpu_ms_per_req": db}


def _results(pairs: list[tuple[float, float]] | None, scale_runs: tuple[list[float], list[float]]) -> dict[str, Any]:
    method: dict[str, Any] = {"max": _run(4000, 0.40), "half": _run(2000, 0.5)}
    if pairs is not None:
        method["pairs"] = [{"rps": m, "cpu_ms_per_req": 0.4, "bare_rps": b, "bare_cpu_ms_per_req": 0.35}
                           for m, b in pairs]
    empty, scaled = scale_runs
    return {
        "limits": {"rsa": {"all_cores_signs_per_s": 8000.0, "one_core_signs_per_s": 4000.0, "cores": 2},
                   "trivial_post": {"max": _run(25000, 0.05)},
                   "bare_sign": {"max": _run(5000, 0.35)}},
        "keyless": {"methods": {"signJwt": method}},
        "scale": {"backends": {"sqlite": {
            "empty": {"signBlob": {"max": _run(5000, min(empty)), "runs": [_run(5000, c) for c in empty]}},
            "scaled": {"signBlob": {"max": _run(5000, min(scaled)), "runs": [_run(5000, c) for c in scaled]}},
        }}},
    }


def test_the_bare_app_ratio_is_the_median_of_the_method_over_the_median_of_the_bare_app() -> None:
    # Per-pair ratios would be 1.0, 0.82, 0.81, 0.80, 1.05 (median 0.82); the medians are 4,200 and 5,000.
    pairs = [(4000, 4000), (4100, 5000), (4200, 5200), (4300, 5400), (4400, 4200)]
    derived = report.derive(_results(pairs, ([0.4], [0.4])))
    ratio = derived["ratios"]["signJwt"]
    assert ratio["vs_bare_sign_app"] == 4200 / 5000
    assert ratio["vs_bare_sign_app_best"] == 4000 / 5000
    [target] = [t for t in derived["targets"] if t["target"].startswith("RSA-bound")]
    assert target["met"] is False
    assert "signJwt 84%" in target["measured"]


def test_the_bare_app_target_is_met_at_ninety_percent_of_the_medians() -> None:
    pairs = [(4500, 5000), (3000, 5000), (4600, 4900), (4550, 5100), (4700, 5000)]
    derived = report.derive(_results(pairs, ([0.4], [0.4])))
    assert derived["ratios"]["signJwt"]["vs_bare_sign_app"] == 4550 / 5000
    [target] = [t for t in derived["targets"] if t["target"].startswith("RSA-bound")]
    assert target["met"] is True


def test_without_pairs_the_bare_app_ratio_is_best_over_best() -> None:
    derived = report.derive(_results(None, ([0.4], [0.4])))
    assert derived["ratios"]["signJwt"]["vs_bare_sign_app"] == 4000 / 5000
    [target] = [t for t in derived["targets"] if t["target"].startswith("RSA-bound")]
    assert target["met"] is False


def test_a_scale_row_is_judged_on_the_median_cpu_of_each_server() -> None:
    # One disturbed run on each side; the best runs alone would say +25%.
    empty = [0.40, 0.32, 0.40, 0.41, 0.39]
    scaled = [0.42, 0.40, 0.60, 0.41, 0.40]
    derived = report.derive(_results(None, (empty, scaled)))
    row = derived["scale"]["sqlite/signBlob"]
    assert row["cpu_ratio"] == 0.41 / 0.40
    [target] = [t for t in derived["targets"] if t["target"].startswith("scale")]
    assert target["met"] is True


def test_a_scale_row_over_ten_percent_is_not_met() -> None:
    derived = report.derive(_results(None, ([0.40, 0.40, 0.40], [0.45, 0.45, 0.44])))
    [target] = [t for t in derived["targets"] if t["target"].startswith("scale")]
    assert target["met"] is False


def test_the_table_prints_every_pair() -> None:
    results = _results([(4500, 5000), (4000, 5000)], ([0.4], [0.4]))
    results.update({"environment": {"date": "d", "cores": 2, "cpu": "c", "python": "3.11", "loadavg_start": [0.0]},
                    "settings": {"threads": 2, "connections": 32, "duration_s": 6, "repeat": 3, "pairs": 2,
                                 "scale_rounds": 1, "workers": 2}})
    results["keyless"]["server"] = {"workers": 2, "ready_ms": 700.0}
    results["scale"].update({"accounts": 1, "bindings": 1, "big_binding": 1})
    results["scale"]["backends"]["sqlite"]["populate"] = {"seconds": 1.0}
    text = report.table(results)
    assert "signJwt: 90%, 80%" in text
    assert "85% of bare signing app*" in text


def _backends(sqlite_cpu: dict[str, list[float]], pg_cpu: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    def rows(runs: dict[str, list[Any]], db: bool) -> dict[str, Any]:
        out = {}
        for method, values in runs.items():
            each = [_run(4000, v[0], v[1]) if db else _run(4000, v) for v in values]
            out[method] = {"max": each[0], "runs": each}
        return out

    return {"sqlite": {"empty": rows(sqlite_cpu, False), "scaled": rows(sqlite_cpu, False),
                       "populate": {"seconds": 1.0}},
            "postgresql": {"empty": rows(pg_cpu, True), "scaled": rows(pg_cpu, True), "populate": {"seconds": 1.0}}}


def test_postgresql_is_judged_against_sqlite_on_keyless_plus_database_cpu() -> None:
    results = _results(None, ([0.4], [0.4]))
    results["scale"]["backends"] = _backends(
        {"generateAccessToken": [0.10, 0.09, 0.11], "signBlob": [0.35, 0.36, 0.34]},
        {"generateAccessToken": [(0.12, 0.06), (0.12, 0.07), (0.13, 0.05)],
         "signBlob": [(0.40, 0.05), (0.41, 0.05), (0.39, 0.06)]})
    derived = report.derive(results)
    versus = derived["postgres_vs_sqlite"]
    assert versus["empty/generateAccessToken"] == pytest.approx(0.18 / 0.10)
    assert versus["empty/signBlob"] == pytest.approx(0.45 / 0.35)
    [target] = [t for t in derived["targets"] if t["target"].startswith("PostgreSQL vs SQLite")]
    assert target["met"] is True
    assert "empty/generateAccessToken 1.80x" in target["measured"]


def test_postgresql_over_its_limit_is_not_met_and_the_table_prints_the_ratio() -> None:
    results = _results(None, ([0.4], [0.4]))
    results["scale"]["backends"] = _backends({"generateAccessToken": [0.094]}, {"generateAccessToken": [(0.243, 0.137)]})
    results["scale"].update({"accounts": 1, "bindings": 1, "big_binding": 1})
    derived = report.derive(results)
    [target] = [t for t in derived["targets"] if t["target"].startswith("PostgreSQL vs SQLite")]
    assert target["met"] is False and "4.04x" in target["measured"]
    results.update({"environment": {"date": "d", "cores": 2, "cpu": "c", "python": "3.11", "loadavg_start": [0.0]},
                    "settings": {"threads": 2, "connections": 32, "duration_s": 6, "repeat": 3, "scale_rounds": 1,
                                 "workers": 2}, "derived": derived})
    results["keyless"]["server"] = {"workers": 2, "ready_ms": 700.0}
    [row] = [ln for ln in report.table(results).splitlines() if ln.startswith("postgresql empty generateAccessToken")]
    assert row.endswith("4.04x")
