import shutil
import time

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    KandinskyPipeline,
    KandinskyV22ControlnetPipeline,
    KandinskyV22Pipeline,
    UnCLIPScheduler,
)

from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.engine.builtin import RandomSource, TinySource, save_tiny_folder
from kandinsky_serve.engine.hub import REPOS, HubSource
from kandinsky_serve.engine.sources import Family, UNetKind

CPU = torch.device("cpu")
UNET_KINDS = {
    Family.K22: [UNetKind.TEXT2IMG, UNetKind.INPAINT, UNetKind.CONTROLNET],
    Family.K21: [UNetKind.TEXT2IMG, UNetKind.INPAINT],
}


def modules_of(source, device, dtype):
    """Every module a source hands out, by name."""
    prior = source.load_prior(device, dtype)
    modules = {
        "prior": prior.prior,
        "text_encoder": prior.text_encoder,
        "image_encoder": prior.image_encoder,
        "movq": source.load_movq(device, dtype),
    }
    for kind in UNET_KINDS[source.family]:
        modules[f"unet[{kind.value}]"] = source.load_unet(kind, device, dtype)
    if source.family is Family.K21:
        modules["decoder_text_encoder"] = source.load_decoder_text(device, dtype).text_encoder
    return modules


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# -- tiny ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(Family))
def test_tiny_builds_are_identical(family):
    first = modules_of(TinySource(family), CPU, torch.float32)
    second = modules_of(TinySource(family), CPU, torch.float32)
    for name in first:
        assert first[name] is not second[name], f"{name} is shared, not fresh"
        assert_same_weights(first[name], second[name])


def test_tiny_build_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    TinySource().load_movq(CPU, torch.float32)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("family", list(Family))
def test_tiny_modules_come_on_the_requested_dtype_frozen_and_in_eval_mode(family):
    for name, module in modules_of(TinySource(family), CPU, torch.bfloat16).items():
        params = list(module.parameters())
        assert {p.dtype for p in params} == {torch.bfloat16}, name
        assert {p.device for p in params} == {CPU}, name
        assert not any(p.requires_grad for p in params), name
        assert not any(m.training for m in module.modules()), name


def test_tiny_prior_produces_nonzero_embeddings():
    # A fresh PriorTransformer has clip_std = 0 and would map every prompt to the zero embedding.
    pipe = TinySource(Family.K22).load_prior(CPU, torch.float32).diffusers_pipeline(Family.K22)
    out = pipe("horse", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.image_embeds.shape == (1, 32)
    assert out.image_embeds.abs().sum() > 0


def test_tiny_22_decoder_keeps_the_real_size_rounding():
    # MoVQ x8 and a 4-level UNet: like the real model, 100 px rounds up to 128, 192 stays 192.
    source = TinySource(Family.K22)
    pipe = KandinskyV22Pipeline(
        unet=source.load_unet(UNetKind.TEXT2IMG, CPU, torch.float32),
        scheduler=DDPMScheduler.from_config(source.decoder_scheduler_config()),
        movq=source.load_movq(CPU, torch.float32),
    )
    embeds = torch.randn(1, 32, generator=torch.Generator().manual_seed(0))
    out = pipe(embeds, torch.zeros(1, 32), height=100, width=192, num_inference_steps=2, output_type="np")
    assert out.images.shape == (1, 128, 192, 3)
    assert np.isfinite(out.images).all()


def test_tiny_controlnet_takes_a_pixel_space_hint():
    source = TinySource(Family.K22)
    pipe = KandinskyV22ControlnetPipeline(
        unet=source.load_unet(UNetKind.CONTROLNET, CPU, torch.float32),
        scheduler=DDPMScheduler.from_config(source.decoder_scheduler_config()),
        movq=source.load_movq(CPU, torch.float32),
    )
    out = pipe(
        torch.randn(1, 32),
        torch.zeros(1, 32),
        hint=torch.rand(1, 3, 64, 64),
        height=64,
        width=64,
        num_inference_steps=2,
        output_type="np",
    )
    assert out.images.shape == (1, 64, 64, 3)


def test_tiny_21_decoder_is_conditioned_on_the_prompt():
    source = TinySource(Family.K21)
    text = source.load_decoder_text(CPU, torch.float32)
    pipe = KandinskyPipeline(
        text_encoder=text.text_encoder,
        tokenizer=text.tokenizer,
        unet=source.load_unet(UNetKind.TEXT2IMG, CPU, torch.float32),
        scheduler=DDIMScheduler.from_config(source.decoder_scheduler_config()),
        movq=source.load_movq(CPU, torch.float32),
    )
    embeds = torch.randn(1, 32, generator=torch.Generator().manual_seed(0))

    def run(prompt):
        return pipe(
            prompt,
            embeds,
            torch.zeros(1, 32),
            height=64,
            width=64,
            num_inference_steps=2,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
        ).images

    assert run("a red horse").shape == (1, 64, 64, 3)
    assert not np.array_equal(run("a red horse"), run("a blue cat"))


@pytest.mark.parametrize("source_class", [TinySource, RandomSource])
def test_22_has_no_decoder_text_encoder(source_class):
    with pytest.raises(ServeError) as err:
        source_class(Family.K22).load_decoder_text(CPU, torch.float32)
    assert err.value.code is ErrorCode.MODEL_UNAVAILABLE


@pytest.mark.parametrize("source_class", [TinySource, RandomSource])
def test_21_has_no_controlnet(source_class):
    with pytest.raises(ServeError) as err:
        source_class(Family.K21).load_unet(UNetKind.CONTROLNET, CPU, torch.float32)
    assert err.value.code is ErrorCode.MODEL_UNAVAILABLE


@pytest.mark.parametrize(("family", "scheduler"), [(Family.K22, "DDPMScheduler"), (Family.K21, "DDIMScheduler")])
def test_builtin_decoder_scheduler_is_the_checkpoints(family, scheduler):
    for source in (TinySource(family), RandomSource(family)):
        config = source.decoder_scheduler_config()
        assert config["_class_name"] == scheduler
        assert (config["beta_schedule"], config["beta_start"], config["beta_end"]) == ("linear", 0.00085, 0.012)


# -- full-size random ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(Family))
def test_random_source_builds_full_size_modules_on_the_requested_device(family):
    modules = modules_of(RandomSource(family), torch.device("meta"), torch.float16)
    for name, module in modules.items():
        params = list(module.parameters())
        assert {p.device.type for p in params} == {"meta"}, name
        assert {p.dtype for p in params} == {torch.float16}, name
        assert not any(p.requires_grad for p in params), name
    assert modules["text_encoder"].config.vocab_size == 49408


@pytest.mark.parametrize("family", list(Family))
def test_random_source_tokenizers_fit_the_real_vocabularies(family):
    source = RandomSource(family)
    parts = source.load_prior(torch.device("meta"), torch.float16)
    ids = parts.tokenizer("a red horse, Привет 🐎", padding="max_length", return_tensors="pt").input_ids
    assert ids.shape == (1, 77)
    assert ids.max() < parts.text_encoder.config.vocab_size
    if family is Family.K21:
        text = source.load_decoder_text(torch.device("meta"), torch.float16)
        assert text.tokenizer("a red horse").input_ids[-1] < text.text_encoder.config.vocab_size


# -- hub and local folders -------------------------------------------------------------------------

# diffusers 0.42 still passes a deprecated argument to huggingface_hub on every hub lookup.
hub_lookup = pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")


@pytest.mark.parametrize(
    ("load", "repo"),
    [
        (lambda s: s.load_prior(CPU, torch.float16), "kandinsky-community/kandinsky-2-2-prior"),
        (lambda s: s.load_movq(CPU, torch.float16), "kandinsky-community/kandinsky-2-2-decoder"),
        (
            lambda s: s.load_unet(UNetKind.CONTROLNET, CPU, torch.float16),
            "kandinsky-community/kandinsky-2-2-controlnet-depth",
        ),
        (lambda s: s.decoder_scheduler_config(), "kandinsky-community/kandinsky-2-2-decoder"),
    ],
)
@hub_lookup
def test_hub_weights_missing_offline_fail_fast_with_the_way_out(monkeypatch, tmp_path, load, repo):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    source = HubSource(Family.K22, cache_dir=tmp_path, local_files_only=True)
    started = time.monotonic()
    with pytest.raises(ServeError) as err:
        load(source)
    assert time.monotonic() - started < 10
    assert err.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert f"Weights for {repo} are not available offline" in err.value.message
    assert f"`hf download {repo}`" in err.value.message
    assert "--model tiny" in err.value.message


@hub_lookup
def test_hub_source_honours_hf_hub_offline_from_the_environment(tmp_path):
    from huggingface_hub import is_offline_mode

    # tests/conftest.py sets HF_HUB_OFFLINE=1 before anything imports huggingface_hub
    assert is_offline_mode(), "run the tests with HF_HUB_OFFLINE=1 (make test does)"
    with pytest.raises(ServeError, match="not available offline"):
        HubSource(Family.K22, cache_dir=tmp_path).load_movq(CPU, torch.float32)


@pytest.fixture(scope="module", params=list(Family))
def tiny_folder(request, tmp_path_factory):
    family = request.param
    return family, save_tiny_folder(family, tmp_path_factory.mktemp(f"tiny-{family.value}"))


def same_scheduler(scheduler_class, a, b):
    def public(config):
        return {k: v for k, v in scheduler_class.from_config(config).config.items() if not k.startswith("_")}

    return public(a) == public(b)


def test_local_folder_round_trips_the_tiny_model(tiny_folder):
    family, root = tiny_folder
    loaded = HubSource.from_folder(root)
    assert loaded.family is family
    original = TinySource(family)
    for name, module in modules_of(loaded, CPU, torch.float32).items():
        assert_same_weights(module, modules_of(original, CPU, torch.float32)[name])

    loaded_prior, original_prior = loaded.load_prior(CPU, torch.float32), original.load_prior(CPU, torch.float32)
    prompt = "a red horse, Привет"
    assert loaded_prior.tokenizer(prompt).input_ids == original_prior.tokenizer(prompt).input_ids
    assert loaded_prior.tokenizer.pad_token == original_prior.tokenizer.pad_token
    assert loaded_prior.image_processor.to_dict() == original_prior.image_processor.to_dict()
    assert same_scheduler(UnCLIPScheduler, loaded_prior.scheduler_config, original_prior.scheduler_config)
    scheduler_class = DDPMScheduler if family is Family.K22 else DDIMScheduler
    assert same_scheduler(scheduler_class, loaded.decoder_scheduler_config(), original.decoder_scheduler_config())
    if family is Family.K21:
        text = loaded.load_decoder_text(CPU, torch.float32)
        batch = text.tokenizer([prompt], padding="max_length", max_length=77, return_tensors="pt")
        expected = original.load_decoder_text(CPU, torch.float32).text_encoder(batch.input_ids, batch.attention_mask)
        actual = text.text_encoder(batch.input_ids, batch.attention_mask)
        assert all(torch.equal(a, e) for a, e in zip(actual, expected, strict=True))


def test_local_folder_loads_on_the_requested_dtype(tiny_folder):
    _, root = tiny_folder
    for name, module in modules_of(HubSource.from_folder(root), CPU, torch.bfloat16).items():
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}, name
        assert not any(p.requires_grad for p in module.parameters()), name


def test_local_folder_without_an_optional_unet_fails_only_when_it_is_asked_for(tiny_folder, tmp_path):
    family, root = tiny_folder
    copy = shutil.copytree(root, tmp_path / "copy")
    inpaint = copy / REPOS[family].inpaint.split("/")[1]
    shutil.rmtree(inpaint)
    source = HubSource.from_folder(copy)
    source.load_unet(UNetKind.TEXT2IMG, CPU, torch.float32)
    with pytest.raises(ServeError) as err:
        source.load_unet(UNetKind.INPAINT, CPU, torch.float32)
    assert err.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert str(inpaint) in err.value.message
    assert f"hf download {REPOS[family].inpaint} --local-dir {inpaint}" in err.value.message


def test_from_folder_rejects_a_folder_not_in_the_layout(tmp_path):
    with pytest.raises(ServeError, match="does not exist"):
        HubSource.from_folder(tmp_path / "nowhere")
    (tmp_path / "unet").mkdir()
    with pytest.raises(ServeError, match="not a Kandinsky weights folder") as err:
        HubSource.from_folder(tmp_path)
    assert err.value.code is ErrorCode.MODEL_UNAVAILABLE


def make_layout(root, family):
    repos = REPOS[family]
    parts = {repos.prior: ["prior", "text_encoder", "tokenizer", "image_encoder", "image_processor", "scheduler"]}
    parts[repos.decoder] = ["unet", "movq", "scheduler"] + (
        ["text_encoder", "tokenizer"] if family is Family.K21 else []
    )
    for repo, subfolders in parts.items():
        for sub in subfolders:
            (root / repo.split("/")[1] / sub).mkdir(parents=True)


def test_from_folder_names_the_missing_subfolders(tmp_path):
    make_layout(tmp_path, Family.K22)
    shutil.rmtree(tmp_path / "kandinsky-2-2-decoder" / "movq")
    with pytest.raises(ServeError, match="kandinsky-2-2-decoder/movq/ missing"):
        HubSource.from_folder(tmp_path)


def test_from_folder_detects_the_family_and_prefers_22_when_both_are_there(tmp_path):
    make_layout(tmp_path, Family.K21)
    assert HubSource.from_folder(tmp_path).family is Family.K21
    make_layout(tmp_path, Family.K22)
    assert HubSource.from_folder(tmp_path).family is Family.K22
    assert HubSource.from_folder(tmp_path, Family.K21).family is Family.K21
