"""`kandinsky-serve bench engine`: a JSON report, and the same picture as plain diffusers."""

import json

import pytest
from typer.testing import CliRunner

from kandinsky_serve.cli import app


def test_bench_engine_reports_both_sides_and_matches_diffusers():
    args = ["bench", "engine", "--sizes", "64", "--batches", "1,2", "--steps", "3", "--prior-steps", "2"]
    result = CliRunner().invoke(app, [*args, "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["device"] == "cpu"
    assert report["ours_s_per_image"] > 0 and report["diffusers_s_per_image"] > 0
    single, double = report["rows"]
    # same weights, prompt, seed and steps: our engine draws the very image diffusers draws
    assert single["max_abs_diff"] <= 1e-3
    assert double["max_abs_diff"] is None and double["batch"] == 2


def test_bench_server_reports_throughput_latency_and_overhead():
    args = ["bench", "server", "--size", "64", "--steps", "2", "--clients", "1,2", "--jobs", "2", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["engine_s_per_job"] > 0
    one, two = report["rows"]
    assert (one["clients"], one["jobs"], two["clients"], two["jobs"]) == (1, 2, 2, 4)
    assert 0 < one["p50_s"] <= one["p99_s"] and two["jobs_per_s"] > 0
    overhead = one["p50_s"] - report["engine_s_per_job"]
    assert report["server_overhead_s_per_job"] == pytest.approx(overhead, abs=2e-4)
