"""Offline tokenizers for the tiny and random-weight models: no download, ids below the tiny vocab sizes.

The tiny CLIP tokenizer is the real CLIP byte-level BPE cut to its first 486 merges (1000 ids), so
any text tokenizes, at worst byte by byte. The tiny XLM-R tokenizer is a small Unigram vocabulary
whose unknown characters become <unk>. Both pad and truncate to 77 tokens like the real ones.
"""

from __future__ import annotations

import copy
import functools
import json
import string
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from kandinsky_serve.engine.sources import Family

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
TINY_CLIP_VOCAB_SIZE = 1000
TINY_XLMR_VOCAB_SIZE = 1005  # diffusers' tiny M-CLIP test encoder; the vocab below uses fewer ids
MODEL_MAX_LENGTH = 77

# Whole words give the tiny 2.1 text encoder multi-character tokens to see; everything else falls back to
# single characters, then <unk>.
_XLMR_WORDS = (
    "a an the of and in on with at by for to is red green blue black white yellow cat dog horse bird "
    "house tree city sky sea mountain portrait photo painting oil style art high quality detailed "
    "4k 8k beautiful cute small big old new night day sunset forest river flower flowers man woman"
).split()
_XLMR_CHARS = (
    string.ascii_letters
    + string.digits
    + string.punctuation
    + "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"
)


def tiny_clip_tokenizer(pad_token: str = CLIP_EOS) -> Any:
    """A CLIPTokenizer with 1000 ids: bos 998, eos 999, model_max_length 77.

    pad_token is `<|endoftext|>` for Kandinsky 2.2 and `!` for 2.1, as in the real prior repos.
    Returns a copy of a cached build, so callers may change it freely.
    """
    return copy.deepcopy(_build_clip_tokenizer(pad_token))


def tiny_prior_tokenizer(family: Family) -> Any:
    """The tiny CLIP tokenizer padded like the family's real prior tokenizer."""
    return tiny_clip_tokenizer(CLIP_EOS if family is Family.K22 else "!")


def tiny_xlmr_tokenizer() -> Any:
    """An XLMRobertaTokenizer whose ids are all < 1005: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3."""
    return copy.deepcopy(_build_xlmr_tokenizer())


def clip_tiny_merges() -> list[tuple[str, str]]:
    """The first 486 merges of OpenAI CLIP's BPE, in rank order (the file's header comment says where from)."""
    text = resources.files("kandinsky_serve.engine").joinpath("data/clip_tiny_merges.txt").read_text("utf-8")
    merges: list[tuple[str, str]] = []
    # Only the first line is a comment; no merge in this range starts with "#".
    for line in text.splitlines()[1:]:
        left, right = line.split(" ")
        merges.append((left, right))
    return merges


def _bytes_to_unicode() -> list[str]:
    """CLIP's (and GPT-2's) reversible byte -> printable character table, in vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


@functools.cache
def _build_clip_tokenizer(pad_token: str) -> Any:
    from transformers import CLIPTokenizer

    merges = clip_tiny_merges()
    chars = _bytes_to_unicode()
    # CLIP's vocabulary order: bytes, bytes with </w>, one token per merge, then the two specials.
    tokens = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), CLIP_BOS, CLIP_EOS]
    assert len(tokens) == TINY_CLIP_VOCAB_SIZE
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": CLIP_BOS,
        "eos_token": CLIP_EOS,
        "unk_token": CLIP_EOS,
        "pad_token": pad_token,
    }
    with tempfile.TemporaryDirectory(prefix="tiny-clip-tokenizer-") as tmp:
        folder = Path(tmp)
        (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), "utf-8")
        merges_text = "".join(f"{left} {right}\n" for left, right in merges)
        (folder / "merges.txt").write_text("#version: 0.2\n" + merges_text, "utf-8")
        (folder / "tokenizer_config.json").write_text(json.dumps(config), "utf-8")
        # transformers 5 ignores vocab_file=/merges_file= and silently builds a 3-token tokenizer;
        # loading the folder is the construction path that works in both 4.x and 5.x.
        return CLIPTokenizer.from_pretrained(folder)


@functools.cache
def _build_xlmr_tokenizer() -> Any:
    from transformers import XLMRobertaTokenizer

    pieces: list[tuple[str, float]] = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    # Unigram scores: whole words beat spelling them out; the bare word boundary "▁" lets any
    # word start, so unknown words still split into known characters.
    pieces += [("▁" + word, -5.0) for word in _XLMR_WORDS]
    pieces.append(("▁", -3.0))
    pieces += [(char, -8.0) for char in _XLMR_CHARS]
    pieces.append(("<mask>", 0.0))
    assert len(pieces) <= TINY_XLMR_VOCAB_SIZE
    return XLMRobertaTokenizer(vocab=pieces, model_max_length=MODEL_MAX_LENGTH)
