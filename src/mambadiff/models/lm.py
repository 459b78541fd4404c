"""Causal language model: token embedding -> causal backbone (with its own final norm) -> tied head.

Glossary: b batch, l length, d model width, v vocab.

    logits = head(backbone(embedding(input_ids)))          (b, l, v)   head.weight is embedding.weight

Any causal backbone of the registry works (``bidirectional=False``): mamba, mamba2, s4d, s4, h3, their
hybrids with attention layers, transformer, lstm. ``forward`` is the parallel path (training, scoring);
``prefill`` + ``step`` are the recurrent one that ``generate`` (``mambadiff.models.generation``) and
``beam_search`` (``mambadiff.models.beam_search``) drive: the prompt once through the parallel path,
then one token at a time from each layer's state (``mambadiff.models.decoding``). ``save_pretrained``
writes ``config.json`` + ``model.safetensors``; ``CausalLM.from_pretrained`` reads them back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from mambadiff.config import from_dict, to_dict
from mambadiff.fileio import atomic_write_bytes, atomic_write_json
from mambadiff.options import Options, option
from mambadiff.train.checkpoint import CheckpointError, check_weights

from .backbones import BackboneConfig, build_backbone, count_parameters
from .beam_search import beam_search
from .decoding import DecodeCache, prefill_backbone, step_backbone
from .generation import generate

__all__ = ["CausalLMConfig", "CausalLM", "CONFIG_FILE", "WEIGHTS_FILE"]

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass
class CausalLMConfig(Options):
    """A causal language model: the vocabulary, the (causal) backbone and the head."""

    prefix = "model."

    vocab_size: int = option(256, "tokens in the vocabulary (rows of the embedding and the head)", minimum=1)
    tie_embeddings: bool = option(True, "the output head reuses the token embedding's weights")
    init_std: float = option(0.02, "standard deviation of the embedding's (and an untied head's) init",
                             minimum=0.0)
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(n_layers=2))

    def validate(self) -> None:
        if self.backbone.bidirectional:
            raise ValueError("model.backbone.bidirectional must be false: a language model is causal")
        self.backbone.validate()


class CausalLM(nn.Module):
    """Token embedding, causal backbone, tied head. See the module docstring."""

    def __init__(self, cfg: CausalLMConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.backbone.d_model
        self.embedding = nn.Embedding(cfg.vocab_size, d)
        nn.init.normal_(self.embedding.weight, std=cfg.init_std)
        self.backbone = build_backbone(cfg.backbone)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)  # d -> v
        if cfg.tie_embeddings:
            self.head.weight = self.embedding.weight
        else:
            nn.init.normal_(self.head.weight, std=cfg.init_std)

    def _ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.is_floating_point():
            raise ValueError(f"input_ids must be an integer tensor of shape (b, l), got "
                             f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} "
                             f"{tuple(getattr(input_ids, 'shape', ()))}")
        if input_ids.numel() and not 0 <= int(input_ids.min()) <= int(input_ids.max()) < self.cfg.vocab_size:
            raise ValueError(f"input_ids must lie in [0, vocab_size={self.cfg.vocab_size})")
        return input_ids

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None,
                predict: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (b, l, v) at every position of ``input_ids (b, l)``; ``mask (b, l)`` True at
        real tokens (right padding). ``predict (b, l)`` bool: only the logits at those positions,
        (n, v) in row-major order (the head is most of a small model's cost on a CPU)."""
        h = self.backbone(self.embedding(self._ids(input_ids)), mask)  # (b, l, d)
        return self.head(h if predict is None else h[predict])  # (b, l, v) or (n, v)

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None, *,
                capacity: int | None = None, all_logits: bool = False) -> tuple[torch.Tensor, DecodeCache]:
        """Run right-padded prompts ``input_ids (b, l)`` with ``lengths (b,)`` (default l) through the
        parallel path. Returns the logits at each row's last token (b, v) (``all_logits``: at every
        position, (b, l, v)) and the generation cache; ``capacity`` (default l) is the number of
        positions attention layers keep, the prompt plus the tokens to come."""
        h, cache = prefill_backbone(self.backbone, self.embedding(self._ids(input_ids)), lengths, capacity)  # (b, l, d)
        if all_logits:
            return self.head(h), cache  # (b, l, v)
        rows = torch.arange(h.shape[0], device=h.device)  # (b,)
        return self.head(h[rows, cache.positions - 1]), cache  # (b, v)

    @torch.no_grad()
    def step(self, token_ids: torch.Tensor, cache: DecodeCache) -> torch.Tensor:
        """Feed one token per row, ``token_ids (b,)``; returns the next-token logits (b, v). The cache
        moves on by one token (constant time and memory in every state-space layer)."""
        if token_ids.ndim != 1 or token_ids.shape[0] != cache.positions.shape[0]:
            raise ValueError(f"token_ids must have shape (b,) = ({cache.positions.shape[0]},), "
                             f"got {tuple(token_ids.shape)}")
        h = step_backbone(self.backbone, self.embedding(self._ids(token_ids[:, None])[:, 0]), cache)  # (b, d)
        return self.head(h)  # (b, v)

    def generate(self, prompt_ids, max_new_tokens: int, **kwargs) -> list[list[int]]:
        """``mambadiff.models.generation.generate`` on this model."""
        return generate(self, prompt_ids, max_new_tokens, **kwargs)

    def beam_search(self, prompt_ids, beam_size: int, max_new_tokens: int, eos_id: int,
                    **kwargs) -> list[list[int]]:
        """``mambadiff.models.beam_search.beam_search`` on this model."""
        return beam_search(self, prompt_ids, beam_size, max_new_tokens, eos_id, **kwargs)

    def parameter_report(self) -> dict[str, int]:
        return {"embedding": count_parameters(self.embedding), "backbone": count_parameters(self.backbone),
                "total": count_parameters(self)}

    # ------------------------------------------------------------------ files

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (a tied head is stored once) into ``folder``,
        each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                 if not (self.cfg.tie_embeddings and k == "head.weight")}
        atomic_write_bytes(folder / WEIGHTS_FILE, save(state))
        atomic_write_json(folder / CONFIG_FILE, to_dict(self.cfg))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device | None = None) -> "CausalLM":
        """A model saved by ``save_pretrained``, in the dtype it was saved in. ``CheckpointError`` (a
        ValueError) names a missing, damaged or mismatched file."""
        folder = Path(folder)
        cfg_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        for path in (cfg_path, weights_path):
            if not path.is_file():
                raise CheckpointError(path, "missing (not a folder written by CausalLM.save_pretrained)")
        try:
            cfg = from_dict(CausalLMConfig, json.loads(cfg_path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValueError) as e:
            raise CheckpointError(cfg_path, f"not a CausalLM config: {e}") from None
        try:
            tensors = load_file(str(weights_path))
        except Exception as e:  # noqa: BLE001  safetensors raises its own errors for damaged files
            raise CheckpointError(weights_path, f"not a readable safetensors file: {e}") from None
        model = cls(cfg)
        expected = {k: v for k, v in model.state_dict().items()
                    if not (cfg.tie_embeddings and k == "head.weight")}
        check_weights(weights_path, tensors, expected, target="the folder's config.json")
        model.to(tensors["embedding.weight"].dtype)
        model.load_state_dict(tensors, strict=not cfg.tie_embeddings)
        return model.to(device) if device is not None else model
