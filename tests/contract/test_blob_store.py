"""The BlobStore contract, then what the local-file backend adds: atomic files, no litter."""

from __future__ import annotations

import os

import pytest

from kandinsky_serve.blobs import Blob, LocalBlobStore


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("outputs/01abc/0.webp", "image/webp"),
        ("outputs/01abc/1.PNG", "image/png"),
        ("outputs/01abc/2.jpg", "image/jpeg"),
        ("inputs/01abc/image", "image/png"),  # no extension to imply the type
        ("latents/01abc.npz", "application/octet-stream"),  # a type the extension does not imply
        ("raw.bin", "application/octet-stream"),
    ],
)
def test_put_then_get_returns_the_bytes_and_type(blobs, key, content_type):
    blobs.put(key, b"\x00payload\xff", content_type)
    assert blobs.get(key) == Blob(data=b"\x00payload\xff", content_type=content_type)


def test_a_missing_key_is_none(blobs):
    assert blobs.get("outputs/none/0.webp") is None
    blobs.put("outputs/j/0.webp", b"x", "image/webp")
    assert blobs.get("outputs/j") is None  # a folder of blobs is no blob


def test_put_replaces_the_bytes_and_the_type(blobs):
    blobs.put("outputs/j/0.png", b"old and longer", "image/x-custom")
    blobs.put("outputs/j/0.png", b"new", "image/png")
    assert blobs.get("outputs/j/0.png") == Blob(data=b"new", content_type="image/png")
    blobs.put("outputs/j/0.png", b"newer", "image/x-custom")
    assert blobs.get("outputs/j/0.png") == Blob(data=b"newer", content_type="image/x-custom")


def test_delete_removes_the_keys_given_and_ignores_missing_ones(blobs):
    for i in range(3):
        blobs.put(f"outputs/j/{i}.webp", b"img", "application/x-other")
    blobs.delete(["outputs/j/0.webp", "outputs/j/2.webp", "outputs/gone/0.webp", "outputs/j/2.webp"])
    assert blobs.get("outputs/j/0.webp") is None and blobs.get("outputs/j/2.webp") is None
    assert blobs.get("outputs/j/1.webp") == Blob(data=b"img", content_type="application/x-other")
    blobs.delete([])


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../outside",
        "outputs/../../outside",
        "outputs/./0.webp",
        "outputs//0.webp",
        "a\\..\\b",
        "a\0b",
    ],
)
def test_keys_that_could_leave_the_store_are_refused(blobs, key):
    with pytest.raises(ValueError, match="blob key"):
        blobs.put(key, b"x", "image/png")
    with pytest.raises(ValueError, match="blob key"):
        blobs.get(key)
    with pytest.raises(ValueError, match="blob key"):
        blobs.delete([key])


# -- the local-file backend -------------------------------------------------------------------


def files_under(root) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_a_large_write_leaves_one_file_and_no_temporary(tmp_path):
    blobs = LocalBlobStore(tmp_path)
    data = os.urandom(8 * 1024 * 1024)
    blobs.put("outputs/j/0.png", data, "image/png")
    assert files_under(tmp_path) == ["outputs/j/0.png"]
    assert blobs.get("outputs/j/0.png").data == data


def test_a_failed_write_keeps_the_old_blob_whole(tmp_path, monkeypatch):
    blobs = LocalBlobStore(tmp_path)
    blobs.put("outputs/j/0.png", b"the old image", "image/png")

    def crash(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        blobs.put("outputs/j/0.png", b"the new image, half written", "image/png")
    monkeypatch.undo()
    assert blobs.get("outputs/j/0.png") == Blob(data=b"the old image", content_type="image/png")
    assert files_under(tmp_path) == ["outputs/j/0.png"]


def test_deleting_the_last_blobs_of_a_folder_removes_the_folder(tmp_path):
    blobs = LocalBlobStore(tmp_path)
    blobs.put("outputs/j1/0.webp", b"a", "image/webp")
    blobs.put("outputs/j1/1.bin", b"b", "application/x-thing")
    blobs.put("outputs/j2/0.webp", b"c", "image/webp")
    blobs.delete(["outputs/j1/0.webp", "outputs/j1/1.bin"])
    assert not (tmp_path / "outputs" / "j1").exists()
    assert files_under(tmp_path) == ["outputs/j2/0.webp"]
    blobs.delete(["outputs/j2/0.webp"])
    assert list(tmp_path.iterdir()) == []  # the root itself stays
    blobs.put("outputs/j2/0.webp", b"again", "image/webp")  # and a pruned folder comes back on demand
    assert blobs.get("outputs/j2/0.webp").data == b"again"


def test_a_symlink_cannot_lead_a_key_out_of_the_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    blobs = LocalBlobStore(tmp_path / "root")
    (tmp_path / "root" / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        blobs.put("link/0.png", b"x", "image/png")
    assert list(outside.iterdir()) == []


def test_the_type_sidecar_name_is_reserved(tmp_path):
    with pytest.raises(ValueError, match="reserves"):
        LocalBlobStore(tmp_path).put("outputs/j/0.webp.content-type", b"x", "text/plain")
