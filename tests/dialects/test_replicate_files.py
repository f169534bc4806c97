"""Replicate's files API driven by replicate-python 1.0.7: uploads, their use as image inputs (the SDK's
default for open files), one key's files hidden from another, the upload limit, and expiry after the
retention period on both store backends."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis as redis_lib
import replicate
from PIL import Image
from replicate.exceptions import ReplicateError

from tests.dialects.conftest import create_key
from tests.redis_server import RedisServer
from tests.server.conftest import Server, start_server

V21 = "a768f3c2e174c54b576cc4f222e789e161160403d0cd0ace41eeb9a0f8c8d5f8"
MAX_INPUT = 100_000
FILE_KEYS = {"id", "name", "content_type", "size", "etag", "checksums", "metadata", "created_at", "expires_at", "urls"}


@dataclass
class FilesServer:
    server: Server
    alice: str
    bob: str

    def client(self, key: str) -> replicate.Client:
        return replicate.Client(api_token=key, base_url=self.server.url)


@pytest.fixture(scope="module")
def files_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilesServer]:
    """A Kandinsky 2.1 server (its Replicate model takes an image) with two keys and a small upload limit."""
    data_dir = tmp_path_factory.mktemp("files") / "data"
    alice, bob = create_key(data_dir, "alice"), create_key(data_dir, "bob")
    server = start_server(
        data_dir, alice, KS_MODEL="tiny-2.1", KS_ALLOW_PRIVATE_URLS="false", KS_MAX_INPUT_BYTES=str(MAX_INPUT)
    )
    yield FilesServer(server, alice, bob)
    server.stop()


def photo(path: Path, color: str = "orange") -> Path:
    Image.new("RGB", (64, 64), color).save(path, format="PNG")
    return path


def test_an_open_file_as_the_image_of_an_img2img_run(files_server: FilesServer, tmp_path: Path) -> None:
    alice = files_server.client(files_server.alice)
    with open(photo(tmp_path / "photo.png"), "rb") as image:
        output = alice.run(
            "ai-forever/kandinsky-2-1",
            input={
                "task": "text_guided_img2img",
                "image": image,
                "prompt": "an orange square, oil painting",
                "width": 64,
                "height": 64,
                "num_inference_steps": 4,
                "num_steps_prior": 2,
            },
        )
    picture = Image.open(io.BytesIO(output[0].read()))
    assert (picture.format, picture.size) == ("PNG", (64, 64))
    uploaded = next(f for f in alice.files.list() if f.name == "photo.png")
    prediction = next(p for p in alice.predictions.list() if p.input.get("image") == uploaded.urls["get"])
    assert prediction.status == "succeeded"


def test_another_keys_file_url_is_refused_as_an_input(files_server: FilesServer, tmp_path: Path) -> None:
    alices = files_server.client(files_server.alice).files.create(photo(tmp_path / "mine.png"))
    bob = files_server.client(files_server.bob)
    with pytest.raises(ReplicateError) as refused:
        bob.predictions.create(
            version=V21,
            input={"task": "text_guided_img2img", "image": alices.urls["get"], "prompt": "a copy", "width": 64},
        )
    assert refused.value.status == 422 and "input.image" in refused.value.detail
    assert "not found" in refused.value.detail


def test_create_get_list_download_delete(files_server: FilesServer, tmp_path: Path) -> None:
    alice, bob = files_server.client(files_server.alice), files_server.client(files_server.bob)
    path = photo(tmp_path / "cat.png", "gray")
    data = path.read_bytes()
    created = alice.files.create(path, metadata={"customer_reference_id": 123})
    assert (created.name, created.content_type, created.size) == ("cat.png", "image/png", len(data))
    assert created.checksums == {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}
    assert created.etag == created.checksums["md5"]
    assert created.metadata == {"customer_reference_id": 123}
    assert created.urls["get"] == f"{files_server.server.url}/v1/files/{created.id}"
    assert created.created_at.endswith("Z") and created.expires_at > created.created_at

    http = httpx.Client(headers={"Authorization": f"Bearer {files_server.alice}"}, timeout=30)
    raw = http.get(created.urls["get"])
    assert raw.status_code == 200 and set(raw.json()) == FILE_KEYS
    assert http.get(f"{created.urls['get']}/download").content == data
    assert alice.files.get(created.id).id == created.id
    assert created.id in [f.id for f in alice.files.list()]
    page = http.get(f"{files_server.server.url}/v1/files").json()
    assert set(page) == {"next", "previous", "results"} and page["results"][0]["id"] == created.id

    assert created.id not in [f.id for f in bob.files.list()]
    for attempt in (lambda: bob.files.get(created.id), lambda: bob.files.delete(created.id)):
        with pytest.raises(ReplicateError) as missing:
            attempt()
        assert missing.value.status == 404
    assert alice.files.delete(created.id) is True
    with pytest.raises(ReplicateError) as gone:
        alice.files.get(created.id)
    assert gone.value.status == 404


def test_an_upload_over_the_limit_is_a_413_problem(files_server: FilesServer) -> None:
    alice = files_server.client(files_server.alice)
    with pytest.raises(ReplicateError) as refused:
        alice.files.create(io.BytesIO(b"\0" * (MAX_INPUT + 1)), filename="big.bin")
    assert refused.value.status == 413
    assert refused.value.title == "Payload too large" and "Files must be less than" in refused.value.detail
    bad = httpx.post(
        f"{files_server.server.url}/v1/files",
        headers={"Authorization": f"Bearer {files_server.alice}"},
        files={"content": ("a.txt", b"x", "text/plain")},
        data={"metadata": "[1, 2]"},
    )
    assert bad.status_code == 422 and bad.json()["invalid_fields"][0]["field"] == "metadata"


@dataclass
class Backend:
    server: Server
    redis: RedisServer | None

    def uploads_left(self) -> list[str]:
        """What is left of uploads in the stores: blob files, or Redis keys."""
        if self.redis is None:
            folder = self.server.data_dir / "blobs" / "uploads"
            return [p.name for p in folder.iterdir()] if folder.exists() else []
        client = redis_lib.Redis(port=self.redis.port)
        return [k.decode() for k in client.keys("ks:blob:uploads/*") + client.keys("ks:file:*")]


@pytest.fixture(params=["sqlite", "redis"])
def short_retention(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    env = {"KS_RETENTION_SECONDS": "2", "KS_LEASE_SECONDS": "1.5"}
    redis = None
    if request.param == "redis":
        redis = RedisServer(tmp_path / "redis").start()
        env["KS_STORE_URL"] = redis.url
    server = start_server(tmp_path / "data", **env)
    yield Backend(server, redis)
    server.stop()
    if redis is not None:
        redis.stop()


def test_uploads_are_gone_after_the_retention_period(short_retention: Backend, tmp_path: Path) -> None:
    local = replicate.Client(base_url=short_retention.server.url)
    created = local.files.create(photo(tmp_path / "soon-gone.png"))
    other = local.files.create(photo(tmp_path / "deleted.png"))
    assert local.files.delete(other.id) is True
    assert local.files.get(created.id).size == created.size
    assert [f.id for f in local.files.list()] == [created.id]
    assert short_retention.uploads_left()
    time.sleep(2.2)
    with pytest.raises(ReplicateError) as gone:
        local.files.get(created.id)
    assert gone.value.status == 404
    assert local.files.list() == []
    deadline = time.monotonic() + 10
    while short_retention.uploads_left() and time.monotonic() < deadline:
        time.sleep(0.2)  # the janitor's next pass (or Redis's expiry) removes the bytes too
    assert short_retention.uploads_left() == []
