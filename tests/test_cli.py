"""`kandinsky-serve generate`, tried as a user would."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kandinsky_serve.cli import app

CLI = [sys.executable, "-m", "kandinsky_serve"]
FAST = ["--steps", "4", "--prior-steps", "3"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_two_images_and_the_second_equals_a_run_with_the_next_seed(tmp_path):
    prompt = "a moss covered astronaut"
    common = ["--model", "tiny", "--width", "96", "--height", "80", "--format", "png", *FAST]
    both = run_cli("generate", prompt, *common, "--num-images", "2", "--seed", "42", "-o", "out.png", cwd=tmp_path)
    assert both.returncode == 0, both.stderr
    assert "seeds: 42, 43" in both.stdout
    assert "decoder" in both.stderr  # the progress bars
    first, second = tmp_path / "out-0.png", tmp_path / "out-1.png"
    assert Image.open(first).size == Image.open(second).size == (96, 80)
    assert Image.open(first).format == "PNG"

    alone = run_cli("generate", prompt, *common, "--seed", "43", "-o", "single.png", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    # equal before encoding within 1e-4; after 8-bit rounding at most one level apart
    assert np.abs(pixels(second) - pixels(tmp_path / "single.png")).max() <= 1
    assert np.abs(pixels(first) - pixels(tmp_path / "single.png")).max() > 1


def test_an_impossible_width_exits_non_zero_with_one_clear_line(tmp_path):
    result = run_cli("generate", "a fox", "--model", "tiny", "--width", "100000", cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: --width")
    assert "2048" in lines[0]
    assert "Traceback" not in result.stderr


runner = CliRunner()


def generate(*args: str) -> str:
    result = runner.invoke(app, ["generate", *args, *FAST, "--width", "96", "--height", "80"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def inputs(tmp_path, photo, mask, depth):
    for name, data in {"photo.png": photo, "mask.png": mask, "depth.png": depth}.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "model"),
    [
        (["--image", "{d}/photo.png", "--strength", "0.5"], "tiny"),
        (["--image", "{d}/photo.png", "--mask", "{d}/mask.png"], "tiny"),
        (["--hint", "{d}/depth.png"], "tiny"),
        (["--fuse", "a cat=0.5", "--fuse", "{d}/photo.png=0.5"], "tiny"),
        (["--scheduler", "P-Sampler"], "tiny-2.1"),
        (["--image", "{d}/photo.png", "--mask", "{d}/mask.png"], "tiny-2.1"),
    ],
    ids=["img2img", "inpaint", "controlnet", "fuse", "2.1-p-sampler", "2.1-inpaint"],
)
def test_every_task_from_the_command_line(inputs, args, model):
    out = inputs / "result.webp"
    filled = [a.format(d=inputs) for a in args]
    output = generate("a red barn", "--model", model, *filled, "--num-images", "2", "--seed", "5", "-o", str(out))
    assert "seeds: 5, 6" in output
    for i in range(2):
        image = Image.open(inputs / f"result-{i}.webp")
        assert (image.format, image.size) == ("WEBP", (96, 80))


def test_prior_task_writes_the_embeddings(tmp_path):
    output = generate("a red barn", "--model", "tiny", "--task", "prior", "-o", str(tmp_path / "emb"))
    saved = np.load(tmp_path / "emb.npz")
    assert saved["image_embeds"].shape[0] == 1
    assert "image_embeds" in output


def test_unknown_model_is_one_clear_sentence():
    result = runner.invoke(app, ["generate", "a fox", "--model", "kandinsky-9"])
    assert result.exit_code == 2
    assert "unknown model 'kandinsky-9'" in result.output
    assert "tiny" in result.output


def test_serve_checks_every_model_and_a_worker_takes_one(monkeypatch):
    result = runner.invoke(app, ["serve", "--model", "tiny", "--model", "kandinsky-9"])
    assert result.exit_code == 2 and "unknown model 'kandinsky-9'" in result.output
    monkeypatch.setenv("KS_MODELS", "tiny,tiny-2.1")
    result = runner.invoke(app, ["worker", "--store-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 2
    assert "--model: a worker runs one model (got tiny, tiny-2.1); start one worker per model" in result.output
