import pytest

from kandinsky_serve.engine.sources import Family
from kandinsky_serve.engine.tokenizers import (
    TINY_CLIP_VOCAB_SIZE,
    TINY_XLMR_VOCAB_SIZE,
    clip_tiny_merges,
    tiny_clip_tokenizer,
    tiny_prior_tokenizer,
    tiny_xlmr_tokenizer,
)

PROMPTS = [
    "horse",
    "red cat, 4k photo",
    "Кот в сапогах, масло",
    "富士山と桜 🌸🐎",
    "",
    "a very long prompt " * 40,
]


def test_clip_merges_are_the_first_486_of_clip():
    merges = clip_tiny_merges()
    assert len(merges) == 486
    assert merges[0] == ("i", "n")
    assert merges[-1] == ("th", "ere</w>")


def test_tiny_clip_tokenizes_like_clip_cut_to_1000_ids():
    tokenizer = tiny_clip_tokenizer()
    assert len(tokenizer) == TINY_CLIP_VOCAB_SIZE
    # The real CLIP BPE with its first 486 merges: bos, "h", "or", "se</w>", eos.
    assert tokenizer("horse").input_ids == [998, 71, 523, 611, 999]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_tiny_clip_ids_fit_the_tiny_vocab_and_are_framed_by_bos_eos(prompt):
    tokenizer = tiny_clip_tokenizer()
    ids = tokenizer(prompt, truncation=True, max_length=77).input_ids
    assert ids[0] == tokenizer.bos_token_id == 998
    assert ids[-1] == tokenizer.eos_token_id == 999
    assert len(ids) <= 77
    assert all(0 <= i < TINY_CLIP_VOCAB_SIZE for i in ids)


@pytest.mark.parametrize(("family", "pad_id"), [(Family.K22, 999), (Family.K21, 0)])
def test_prior_tokenizer_pads_to_77_like_the_real_prior_repo(family, pad_id):
    tokenizer = tiny_prior_tokenizer(family)
    assert tokenizer.model_max_length == 77
    batch = tokenizer(["horse", "a very long prompt " * 40], padding="max_length", truncation=True, return_tensors="pt")
    assert batch.input_ids.shape == (2, 77)
    assert batch.input_ids[0, 5:].eq(pad_id).all()
    assert batch.attention_mask[0].sum() == 5
    assert batch.input_ids[1, -1] == 999  # truncation keeps the eos


def test_tiny_clip_returns_independent_copies():
    first = tiny_clip_tokenizer()
    first.padding_side = "left"
    assert tiny_clip_tokenizer().padding_side == "right"


@pytest.mark.parametrize("prompt", PROMPTS)
def test_tiny_xlmr_ids_fit_the_tiny_mclip_vocab(prompt):
    tokenizer = tiny_xlmr_tokenizer()
    ids = tokenizer(prompt, truncation=True, max_length=77).input_ids
    assert ids[0] == 0 and ids[-1] == 2  # <s> ... </s>
    assert len(ids) <= 77
    assert all(0 <= i < TINY_XLMR_VOCAB_SIZE for i in ids)


def test_tiny_xlmr_knows_words_spells_the_rest_and_maps_unknown_chars_to_unk():
    tokenizer = tiny_xlmr_tokenizer()
    assert len(tokenizer("horse").input_ids) == 3
    assert len(tokenizer("zebra").input_ids) > 3
    assert tokenizer.unk_token_id in tokenizer("富士山").input_ids


def test_tiny_xlmr_pads_and_truncates_to_77():
    tokenizer = tiny_xlmr_tokenizer()
    assert tokenizer.model_max_length == 77
    batch = tokenizer(["horse", "word " * 200], padding="max_length", truncation=True, return_tensors="pt")
    assert batch.input_ids.shape == (2, 77)
    assert batch.input_ids[0, 3:].eq(tokenizer.pad_token_id).all()
    assert batch.attention_mask[1].all()
