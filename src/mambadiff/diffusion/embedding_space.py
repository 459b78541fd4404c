"""The embedding space the Gaussian process diffuses in, in the manner of Difformer (Gao et al. 2022).

Glossary: b batch, l length, e embedding width, v vocab, n rows.

``EmbeddingSpace(model, normalize, noise_factor)`` wraps a denoiser and is used in its place by the
Gaussian process and its samplers:

* ``normalize``: every embedding row is layer-normalised (zero mean, unit variance over e, no affine),
  so the noise level means the same for every word and embeddings cannot grow away from the noise
  (the collapse / norm-growth problems Difformer describes);
* ``noise_factor`` F: the forward process becomes ``x_t = sqrt(ab) x0 + F sqrt(1 - ab) eps``. This is
  run as the unchanged process on embeddings scaled by 1 / F (the two are the same up to that scale),
  so schedules and samplers need no change: ``embed`` returns ``row / F``, and the head reads the
  network's ``h`` back at the embedding's scale (``logits(h) = model.logits(F h)``).

With ``normalize=False, noise_factor=1`` it is the model itself, value for value.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class EmbeddingSpace:
    def __init__(self, model, normalize: bool = False, noise_factor: float = 1.0):
        if not noise_factor > 0:
            raise ValueError(f"diffusion.noise_factor must be > 0, got {noise_factor}")
        self.model, self.normalize, self.noise_factor = model, bool(normalize), float(noise_factor)
        self.emb_dim = model.emb_dim

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def parameters(self):
        return self.model.parameters()

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding rows ``(..., e)`` as the process sees them."""
        if self.normalize:
            x = F.layer_norm(x, x.shape[-1:])
        return x / self.noise_factor

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows(self.model.embed(ids))  # (b, l, e)

    def head_input(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.noise_factor

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.logits(self.head_input(h))  # (b, l, v)

    def token_cross_entropy(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.model.token_cross_entropy(self.head_input(h), ids)  # (n,)

    @property
    def word_embedding(self):
        return self.model.word_embedding


def embedding_space(model, normalize: bool, noise_factor: float):
    """``model`` itself when nothing changes (so the default path is untouched), else the wrapper."""
    if not normalize and noise_factor == 1.0:
        return model
    return EmbeddingSpace(model, normalize, noise_factor)
