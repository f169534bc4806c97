"""The model catalogue: torch-free for API processes, and in step with the engine that runs it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from kandinsky_serve.domain import ErrorCode, GenerationRequest, ServeError
from kandinsky_serve.domain.catalogue import (
    CATALOGUE,
    PRIOR_FOLDERS,
    SCHEDULER_NAMES,
    Family,
    Weights,
    resolve,
    served,
)
from kandinsky_serve.settings import Settings


def test_the_api_app_imports_no_torch_and_no_diffusers():
    # a fresh interpreter: this one has loaded torch for other tests
    probe = (
        "import sys, kandinsky_serve.api.app, kandinsky_serve.cli.server;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'transformers'}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_catalogue_name_has_its_engine_counterpart():
    from kandinsky_serve.engine.hub import REPOS, repo_folder
    from kandinsky_serve.engine.registry import resolve_model
    from kandinsky_serve.engine.schedulers import SCHEDULERS

    assert set(SCHEDULERS) == set(SCHEDULER_NAMES)
    assert PRIOR_FOLDERS == {family: repo_folder(REPOS[family].prior) for family in Family}
    for model_id, entry in CATALOGUE.items():
        assert resolve_model(model_id).entry is entry


def test_names_aliases_and_the_served_list():
    assert resolve("Kandinsky-2-1").id == "kandinsky-2.1" and resolve("tiny-2.2").id == "tiny"
    with pytest.raises(ServeError, match=re.escape("unknown model 'kandinsky-9'; choose one of kandinsky-2.2, ")):
        resolve("kandinsky-9")
    # KS_MODELS wins over KS_MODEL, in its order, one entry per model however it is named
    settings = Settings(model="kandinsky-2.2", models=" tiny-2.1, tiny ,tiny-2.2,")
    assert [entry.id for entry in served(settings.served_models)] == ["tiny-2.1", "tiny"]
    assert [entry.id for entry in served(Settings(model="2.1").served_models)] == ["kandinsky-2.1"]


def test_a_local_folder_is_read_without_torch(tmp_path):
    (tmp_path / "kandinsky-2-1-prior").mkdir()
    entry = resolve(str(tmp_path))
    assert (entry.id, entry.family, entry.weights, entry.path) == (str(tmp_path), Family.K21, Weights.FOLDER, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ServeError, match="is not a Kandinsky weights folder") as error:
        resolve(str(empty))
    assert error.value.code is ErrorCode.MODEL_UNAVAILABLE


def test_family_checks_name_the_field():
    tiny21 = CATALOGUE["tiny-2.1"]
    hint = GenerationRequest.parse({"prompt": "x", "task": "controlnet", "hint": _png()})
    with pytest.raises(ServeError, match=r"^task: controlnet is not available for tiny-2\.1"):
        tiny21.check(hint)
    with pytest.raises(ServeError, match=r"^scheduler: 'Euler' is not offered for Kandinsky 2\.1"):
        tiny21.check(GenerationRequest.parse({"prompt": "x", "scheduler": "Euler"}))
    CATALOGUE["tiny"].check(GenerationRequest.parse({"prompt": "x", "scheduler": "k_euler"}))


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    return buffer.getvalue()
