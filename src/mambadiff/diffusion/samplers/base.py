"""The interface every sampler implements, in the manner of diffusers' schedulers: a sampler holds its
config and the diffusion process, never the network; the network is an argument of each call.

    sampler = MaskedSampler(diffusion, MaskedSamplerConfig(steps=20), tokens)
    out = sampler.sample(model, input_ids, input_mask, generator)       # (b, l) token ids in out.token_ids

``sample`` is ``prepare`` (the start: noise or [MASK] on the target, the clean source beside it), then
``step`` until ``done``, then ``finish`` (the result). A new sampler is one subclass.

Glossary: b batch, l length.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from ...progress import progress_bar


class Sampler(ABC):
    """One generation algorithm over the target positions (``input_mask`` 1) of a laid-out batch."""

    name: ClassVar[str]

    @property
    @abstractmethod
    def num_steps(self) -> int:
        """The reverse steps one `sample` takes (at most this many network calls)."""

    @abstractmethod
    def prepare(self, model, input_ids: torch.Tensor, input_mask: torch.Tensor,
                generator: torch.Generator | None = None, attention_mask: torch.Tensor | None = None) -> Any:
        """The state before the first step: ``input_ids (b, l)`` hold the source (target ids are ignored),
        ``input_mask (b, l)`` is 1 where to generate; ``generator`` makes every draw."""

    @abstractmethod
    def step(self, model, state: Any) -> None:
        """One reverse step, in place on ``state``."""

    @abstractmethod
    def done(self, state: Any) -> bool:
        """Whether every step has run."""

    @abstractmethod
    def finish(self, model, state: Any) -> Any:
        """The result (a NamedTuple with ``token_ids (b, l)``)."""

    @torch.no_grad()
    def sample(self, model, input_ids: torch.Tensor, input_mask: torch.Tensor,
               generator: torch.Generator | None = None, attention_mask: torch.Tensor | None = None,
               progress: bool = False) -> Any:
        """``prepare``, ``step`` until ``done``, ``finish``; runs under ``torch.no_grad``."""
        state = self.prepare(model, input_ids, input_mask, generator, attention_mask)
        self.run(model, state, progress)
        return self.finish(model, state)

    def run(self, model, state: Any, progress: bool = False) -> None:
        """``step`` until ``done`` (a progress bar over ``num_steps`` when ``progress``)."""
        bar = progress_bar(self.num_steps, f"{self.name} sampling", enabled=progress)
        while not self.done(state):
            self.step(model, state)
            bar.update(1)
        bar.close()
