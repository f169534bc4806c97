"""`kandinsky-serve bench engine`: a JSON report, and the same picture as plain diffusers."""

import json

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
