"""`kandinsky-serve bench`: JSON reports, the same picture as plain diffusers, and the FLOPs behind MFU."""

import json

import pytest
from typer.testing import CliRunner

from kandinsky_serve.bench.flops import FlopCounter, peak_flops, utilisation
from kandinsky_serve.cli import app
from kandinsky_serve.engine.engine import Engine
from tests.compiler import needs_compiler


def test_bench_engine_reports_both_sides_and_matches_diffusers():
    args = ["bench", "engine", "--sizes", "64", "--batches", "1,2", "--steps", "3", "--prior-steps", "2"]
    result = CliRunner().invoke(app, [*args, "--repeats", "1", "--profile", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["device"] == "cpu"
    assert report["ours_s_per_image"] > 0 and report["diffusers_s_per_image"] > 0
    single, double = report["rows"]
    # same weights, prompt, seed and steps: our engine draws the very image diffusers draws
    assert single["max_abs_diff"] <= 1e-3
    assert double["max_abs_diff"] is None and double["batch"] == 2
    assert set(single["ours_stages_s"]) == {"prior_s", "decoder_s", "decode_s", "total_s"}
    check_profile(double, result.output)


def check_profile(row: dict, text: str) -> None:
    """--profile: operators dispatched per image and per decoder step, ours (new and old loop) and diffusers."""
    assert f"profile 64 batch {row['batch']}: ops/step ours" in text  # the text table has them too
    profile, steps, images = row["profile"], row["steps"], row["batch"]
    # a step is at least a UNet forward (the tiny UNet alone dispatches a few hundred operators), and
    # no more than an even share of the whole run
    assert 200 < profile["ops_per_step"] <= profile["ops_per_image"] * images / steps
    assert 200 < profile["diffusers_ops_per_step"] <= profile["diffusers_ops_per_image"] * images / steps
    # the capture-safe step dispatches less than the diffusers-scheduler loop it replaced
    assert profile["ops_per_step"] < profile["legacy_ops_per_step"]
    assert profile["cuda"] is None  # kernel launches and GPU busy are CUDA figures


def test_bench_server_reports_throughput_latency_and_overhead():
    args = ["bench", "server", "--size", "64", "--steps", "2", "--clients", "1,2", "--jobs", "2", "--restart", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["engine_s_per_job"] > 0
    one, two = report["rows"]
    assert (one["clients"], one["jobs"], two["clients"], two["jobs"]) == (1, 2, 2, 4)
    assert 0 < one["p50_s"] <= one["p99_s"] and two["jobs_per_s"] > 0
    # a median of paired differences: below the server's own latency, whatever the engine's drift
    assert report["server_overhead_s_per_job"] < one["p99_s"]
    phases = report["one_client_phases_p50"]
    assert list(phases) == ["submit_s", "queued_s", "run_s", "respond_s"]
    assert phases["run_s"] == max(phases.values()) and min(phases.values()) >= 0
    for start in (report["start"], report["restart"]):  # a first start and a restart on the same data dir
        assert 0 < start["ready_s"] < start["first_image_s"]


def bench_engine(*flags: str) -> dict:
    args = ["bench", "engine", "--sizes", "64", "--batches", "1", "--steps", "1", "--prior-steps", "2"]
    result = CliRunner().invoke(app, [*args, "--repeats", "1", *flags, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_bench_engine_takes_the_dtype_and_speed_flags_and_reports_them():
    report = bench_engine("--dtype", "bf16", "--channels-last")
    assert (report["dtype"], report["compile"], report["channels_last"]) == ("bfloat16", "off", True)
    (row,) = report["rows"]
    assert row["flops_per_image"] > 0 and row["ours_first_run_s"] > 0
    assert row["mfu"] is None and row["diffusers_mfu"] is None and report["peak_tflops"] is None  # a CPU has no MFU


@pytest.mark.slow
@pytest.mark.timeout(900)
@needs_compiler
def test_bench_engine_compiled_ours_still_draws_the_plain_diffusers_picture():
    report = bench_engine("--compile", "unet", "--channels-last")
    assert (report["compile"], report["channels_last"]) == ("unet", True)
    assert report["rows"][0]["max_abs_diff"] <= 1e-3


@pytest.fixture(scope="module")
def full_size_flops():
    # the full-size architecture on the meta device: configs only, no weights, no arithmetic
    return FlopCounter(Engine.create("random-2.2", "meta"))


@pytest.mark.slow
def test_flop_count_of_the_full_size_model_is_the_reference_figure(full_size_flops):
    one = full_size_flops.forwards(768)  # kandinsky-models.md §6 counted these with the same counter
    assert one.unet == pytest.approx(1.993e12, rel=1e-3)
    assert one.movq_decode == pytest.approx(4.885e12, rel=1e-3)
    assert one.prior == pytest.approx(164.6e9, rel=1e-3)
    assert one.text_encoder == pytest.approx(97.9e9, rel=1e-3)
    # 25 + 25 steps with CFG at 768²: UNet 99.6, prior 8.2, text 0.2, decode 4.9 TFLOP
    assert full_size_flops.per_image(768, 25, 25) == pytest.approx(112.9e12, rel=2e-3)


@pytest.mark.slow
def test_flops_per_image_grow_with_pixels_and_steps(full_size_flops):
    small, large = full_size_flops.per_image(512, 25, 25), full_size_flops.per_image(1024, 25, 25)
    assert 3.5 < large / small < 4.0  # 4x the pixels; the prior's share does not grow
    one_step, two_steps = full_size_flops.per_image(512, 1, 25), full_size_flops.per_image(512, 2, 25)
    assert two_steps - one_step == 2 * full_size_flops.forwards(512).unet  # a CFG pair of UNet forwards
    assert full_size_flops.per_image(512, 2, 25, cfg=False) == one_step  # without CFG, half the UNet work


def test_mfu_uses_the_half_precision_peak_of_the_gpu_it_names():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA GeForce RTX 4090") is None
    assert utilisation(113 * 10**12, 0.5, peak_flops("NVIDIA H200")) == pytest.approx(0.2285, abs=1e-4)
    assert utilisation(113 * 10**12, 0.5, None) is None


def test_bench_decode_compares_whole_and_tiled_decodes():
    args = ["bench", "decode", "--sizes", "128", "--tile", "8", "--overlap", "2", "--threads", "1", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    whole, tiled = json.loads(result.output.strip().splitlines()[-1])["rows"]
    assert (whole["mode"], whole["tiles"], tiled["mode"]) == ("whole", 1, "tiled")
    assert tiled["tiles"] == 9  # 16 latent pixels a side in tiles of 8 overlapping by 2: 3 x 3
    assert tiled["peak_rss_mb"] > 0 and 0 < tiled["mean_abs_diff"] < 0.05
