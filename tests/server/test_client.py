"""kandinsky_serve.client and `generate --server`, against a real server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from kandinsky_serve.client import Client, InvalidInput, NotFound
from kandinsky_serve.domain import Stage

SMALL = {"width": 96, "height": 80, "steps": 6, "prior_steps": 3}


def test_python_client(serve, photo):
    server = serve()
    with Client(server.url) as client:
        events = []
        images = client.generate(
            "a red barn", num_images=2, seed=42, output_format="png", on_progress=events.append, **SMALL
        )
        assert [image.size for image in images] == [(96, 80)] * 2
        assert images.seeds == [42, 43]
        assert [e.step for e in events if e.stage is Stage.DECODER] == sorted(
            e.step for e in events if e.stage is Stage.DECODER
        )

        edited = client.generate("a watercolor", task="img2img", image=photo, strength=0.5, **SMALL)
        assert edited[0].size == (96, 80)

        with pytest.raises(InvalidInput) as info:
            client.submit(prompt="x", width=100000)
        assert info.value.field == "width"
        with pytest.raises(NotFound):
            client.get("no-such-job")

        queued = client.submit(prompt="canceled before it ran", **{**SMALL, "steps": 400, "width": 512, "height": 512})
        assert client.cancel(queued.id).state in ("canceled", "running")
        assert client.wait(queued.id).state == "canceled"
        jobs, _ = client.list(limit=10)
        assert queued.id in [job.id for job in jobs]


def test_generate_on_a_server_from_the_command_line(serve, tmp_path):
    server = serve()
    args = ["generate", "a moss covered astronaut", "--server", server.url, "--num-images", "2", "--seed", "7"]
    args += ["--width", "96", "--height", "80", "--steps", "4", "--prior-steps", "3", "-o", str(tmp_path / "a.png")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "kandinsky_serve", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "seeds: 7, 8" in result.stdout
    assert "decoder" in result.stderr  # progress bars from the server's events
    assert [Image.open(tmp_path / f"a-{i}.png").size for i in range(2)] == [(96, 80)] * 2

    bad = subprocess.run(
        [sys.executable, "-m", "kandinsky_serve", "generate", "x", "--server", server.url, "--scheduler", "Heun"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip().splitlines()[-1]]
    assert "scheduler" in bad.stderr and "DDPM" in bad.stderr
