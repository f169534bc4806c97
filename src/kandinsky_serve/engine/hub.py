"""Real Kandinsky weights: the kandinsky-community hub repos, or a local folder holding copies of them.

A local folder holds one diffusers-layout folder per repo, named like the repo:
`<dir>/kandinsky-2-2-prior`, `<dir>/kandinsky-2-2-decoder`, ... (what `hf download <repo> --local-dir
<dir>/<name>` or a pipeline's `save_pretrained` writes). Each component is loaded on its own, so the
inpaint and ControlNet UNets are only read when first asked for.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kandinsky_serve.domain.catalogue import folder_family
from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.engine.handover import hand_over, no_decoder_text, no_unet
from kandinsky_serve.engine.sources import DecoderTextParts, Family, PriorParts, UNetKind


@dataclass(frozen=True)
class Repos:
    prior: str
    decoder: str
    inpaint: str
    controlnet: str | None

    def unet(self, kind: UNetKind) -> str | None:
        return {UNetKind.TEXT2IMG: self.decoder, UNetKind.INPAINT: self.inpaint, UNetKind.CONTROLNET: self.controlnet}[
            kind
        ]


REPOS: dict[Family, Repos] = {
    Family.K22: Repos(
        prior="kandinsky-community/kandinsky-2-2-prior",
        decoder="kandinsky-community/kandinsky-2-2-decoder",
        inpaint="kandinsky-community/kandinsky-2-2-decoder-inpaint",
        controlnet="kandinsky-community/kandinsky-2-2-controlnet-depth",
    ),
    Family.K21: Repos(
        prior="kandinsky-community/kandinsky-2-1-prior",
        decoder="kandinsky-community/kandinsky-2-1",
        inpaint="kandinsky-community/kandinsky-2-1-inpaint",
        controlnet=None,
    ),
}


def repo_folder(repo: str) -> str:
    """The folder that holds a repo in the local layout: the repo's name without its owner."""
    return repo.rsplit("/", 1)[-1]


# Subfolders the local layout must have; the optional UNet repos are checked when loaded.
_PRIOR_PARTS = ("prior", "text_encoder", "tokenizer", "image_encoder", "image_processor", "scheduler")
_DECODER_PARTS = {
    Family.K22: ("unet", "movq", "scheduler"),
    Family.K21: ("unet", "movq", "scheduler", "text_encoder", "tokenizer"),
}


class HubSource:
    """Loads each component with `from_pretrained(repo or folder, subfolder=..., dtype)`, then moves it."""

    def __init__(
        self,
        family: Family = Family.K22,
        *,
        root: Path | None = None,
        cache_dir: Path | None = None,
        local_files_only: bool = False,
    ) -> None:
        """root: a local folder in the layout above (prefer `from_folder`, which checks it); None reads the
        hub through the Hugging Face cache (`cache_dir`, default HF_HOME). local_files_only never touches
        the network, like HF_HUB_OFFLINE=1."""
        self.family = family
        self.root = root
        self.cache_dir = cache_dir
        self.local_files_only = local_files_only
        self.repos = REPOS[family]

    @classmethod
    def from_folder(cls, path: Path | str, family: Family | None = None) -> HubSource:
        """A source reading `path`. The family is the one whose prior folder is there (2.2 if both are)."""
        root = Path(path).expanduser()
        if not root.is_dir():
            raise ServeError(ErrorCode.MODEL_UNAVAILABLE, f"Model folder {root} does not exist.")
        if family is None:
            family = folder_family(root)
        repos = REPOS[family]
        missing = [
            f"{repo_folder(repo)}/{part}/"
            for repo, parts in ((repos.prior, _PRIOR_PARTS), (repos.decoder, _DECODER_PARTS[family]))
            for part in parts
            if not (root / repo_folder(repo) / part).is_dir()
        ]
        if missing:
            raise ServeError(
                ErrorCode.MODEL_UNAVAILABLE,
                f"{root} is not a complete Kandinsky {family.value} weights folder: {', '.join(missing)} "
                f"missing (download {repos.prior} and {repos.decoder} into folders of the same names).",
            )
        return cls(family, root=root)

    # -- WeightsSource ---------------------------------------------------------------------------

    def load_prior(self, device: torch.device, dtype: torch.dtype) -> PriorParts:
        from diffusers import PriorTransformer, UnCLIPScheduler
        from transformers import (
            CLIPImageProcessorPil,
            CLIPTextModelWithProjection,
            CLIPTokenizer,
            CLIPVisionModelWithProjection,
        )

        repo = self.repos.prior
        with self._loading(repo) as where:
            scheduler_config = dict(UnCLIPScheduler.load_config(where, subfolder="scheduler", **self._hub_kwargs()))
            tokenizer = CLIPTokenizer.from_pretrained(where, subfolder="tokenizer", **self._hub_kwargs())
            # The PIL backend: the default one needs torchvision in transformers 5 (see random_weights).
            processor = CLIPImageProcessorPil.from_pretrained(where, subfolder="image_processor", **self._hub_kwargs())
            prior = PriorTransformer.from_pretrained(where, subfolder="prior", torch_dtype=dtype, **self._hub_kwargs())
            text_encoder = CLIPTextModelWithProjection.from_pretrained(
                where, subfolder="text_encoder", dtype=dtype, **self._hub_kwargs()
            )
            image_encoder = CLIPVisionModelWithProjection.from_pretrained(
                where, subfolder="image_encoder", dtype=dtype, **self._hub_kwargs()
            )
        return PriorParts(
            prior=hand_over(prior, device, dtype),
            text_encoder=hand_over(text_encoder, device, dtype),
            tokenizer=tokenizer,
            image_encoder=hand_over(image_encoder, device, dtype),
            image_processor=processor,
            scheduler_config=scheduler_config,
        )

    def load_movq(self, device: torch.device, dtype: torch.dtype) -> Any:
        from diffusers import VQModel

        repo = self.repos.decoder
        with self._loading(repo) as where:
            movq = VQModel.from_pretrained(where, subfolder="movq", torch_dtype=dtype, **self._hub_kwargs())
        return hand_over(movq, device, dtype)

    def load_unet(self, kind: UNetKind, device: torch.device, dtype: torch.dtype) -> Any:
        from diffusers import UNet2DConditionModel

        repo = self.repos.unet(kind)
        if repo is None:
            raise no_unet(self.family, kind)
        with self._loading(repo) as where:
            unet = UNet2DConditionModel.from_pretrained(
                where, subfolder="unet", torch_dtype=dtype, **self._hub_kwargs()
            )
        return hand_over(unet, device, dtype)

    def load_decoder_text(self, device: torch.device, dtype: torch.dtype) -> DecoderTextParts:
        from diffusers.pipelines.kandinsky.text_encoder import MultilingualCLIP
        from transformers import XLMRobertaTokenizer

        if self.family is not Family.K21:
            raise no_decoder_text(self.family)
        repo = self.repos.decoder
        with self._loading(repo) as where:
            tokenizer = XLMRobertaTokenizer.from_pretrained(where, subfolder="tokenizer", **self._hub_kwargs())
            text_encoder = MultilingualCLIP.from_pretrained(
                where, subfolder="text_encoder", dtype=dtype, **self._hub_kwargs()
            )
        return DecoderTextParts(text_encoder=hand_over(text_encoder, device, dtype), tokenizer=tokenizer)

    def decoder_scheduler_config(self) -> dict[str, Any]:
        from diffusers import DDIMScheduler, DDPMScheduler

        # The decoder repo's own scheduler: DDPM for 2.2, DDIM for 2.1.
        scheduler_class = DDPMScheduler if self.family is Family.K22 else DDIMScheduler
        repo = self.repos.decoder
        with self._loading(repo) as where:
            config = scheduler_class.load_config(where, subfolder="scheduler", **self._hub_kwargs())
        return dict(config)

    # -- helpers ---------------------------------------------------------------------------------

    def _hub_kwargs(self) -> dict[str, Any]:
        if self.root is not None:
            # A missing file in a local folder must never turn into a hub lookup.
            return {"local_files_only": True}
        return {"cache_dir": self.cache_dir, "local_files_only": self.local_files_only}

    @contextlib.contextmanager
    def _loading(self, repo: str) -> Iterator[str]:
        """Yields where to load `repo` from (its id, or its local folder), and turns "the files are not
        there" into one actionable sentence; any other error is a bug and passes through."""
        from huggingface_hub.errors import EntryNotFoundError

        # diffusers still passes huggingface_hub's deprecated `local_dir_use_symlinks`; the warning is
        # noise in front of the one line a user should see
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            try:
                if self.root is None:
                    yield repo
                else:
                    folder = self.root / repo_folder(repo)
                    if not folder.is_dir():
                        raise FileNotFoundError(f"no folder {folder.name}/")
                    yield str(folder)
            except (OSError, EntryNotFoundError) as exc:
                raise ServeError(ErrorCode.MODEL_UNAVAILABLE, self._unavailable_message(repo, exc)) from exc

    def _unavailable_message(self, repo: str, exc: BaseException) -> str:
        from huggingface_hub import is_offline_mode

        if self.root is not None:
            folder = self.root / repo_folder(repo)
            return (
                f"Weights in {folder} are missing or incomplete ({_first_line(exc)}): download them with "
                f"`hf download {repo} --local-dir {folder}`, or use --model tiny."
            )
        if self.local_files_only or is_offline_mode():
            return (
                f"Weights for {repo} are not available offline: download them with `hf download {repo}` on a "
                "machine with network (or point --model at a local folder), or use --model tiny."
            )
        return (
            f"Weights for {repo} could not be fetched ({_first_line(exc)}): check the network, or download them "
            f"with `hf download {repo}` and point --model at a local folder, or use --model tiny."
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."
