"""Diagnostics of a trained Gaussian-process denoiser: word recovery at fixed noise levels.

Glossary: b batch, l length, e embedding width, t diffusion step.
"""
from __future__ import annotations

import math

import torch

from mambadiff.data.seq2seq import Seq2SeqDataset
from mambadiff.diffusion import GaussianDiffusion
from mambadiff.models.denoiser import Denoiser


@torch.no_grad()
def x0_token_accuracy(model: Denoiser, dataset: Seq2SeqDataset, diffusion: GaussianDiffusion, t_values,
                      pad_id: int, batch_size: int = 128, seed: int = 0) -> dict[int, dict[str, float]]:
    """How well the denoiser recovers target words from x_t at fixed noise levels, split by kind.

    For each t in ``t_values``: noise the targets to x_t (the source stays clean), predict x0, take
    the head's argmax, and compare with the true token at every target position that is not
    ``pad_id``. Positions whose word also occurs in the source are "copy", the others "novel".
    A backbone that is good at copying from the source scores high on "copy"; paraphrase metrics
    such as ROUGE-L and BERTScore reward exactly that. Returns
    ``{t: {"copy": acc, "novel": acc, "n_copy": count, "n_novel": count}}`` (acc NaN for no positions).
    """
    data = dataset.tensors()
    ids_all, mask_all = data["input_ids"], data["input_mask"]  # (N, l) each
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    model.eval()
    result: dict[int, dict[str, float]] = {}
    for t_val in t_values:
        hits = {"copy": 0, "novel": 0}
        counts = {"copy": 0, "novel": 0}
        for i in range(0, ids_all.shape[0], batch_size):
            ids = ids_all[i:i + batch_size].to(device)  # (b, l)
            target = mask_all[i:i + batch_size].to(device).bool()  # (b, l) True at target positions
            x0 = model.embed(ids)  # (b, l, e)
            t = torch.full((ids.shape[0],), int(t_val), device=device, dtype=torch.long)  # (b,)
            noise = torch.randn(x0.shape, generator=g).to(device=device, dtype=x0.dtype)  # (b, l, e)
            x_t = diffusion.q_sample(x0, t, noise=noise, input_mask=target.long())  # (b, l, e)
            guess = model.logits(model(x_t, diffusion.model_timesteps(t))).argmax(-1)  # (b, l)
            same_word = ids[:, :, None] == ids[:, None, :]  # (b, l, l) [i, j]: word i == word j
            in_source = (same_word & ~target[:, None, :]).any(-1)  # (b, l)
            scored = target & (ids != pad_id)  # (b, l)
            right = guess == ids  # (b, l)
            for kind, where in (("copy", scored & in_source), ("novel", scored & ~in_source)):
                hits[kind] += int((right & where).sum())
                counts[kind] += int(where.sum())
        result[int(t_val)] = {
            "copy": hits["copy"] / counts["copy"] if counts["copy"] else math.nan,
            "novel": hits["novel"] / counts["novel"] if counts["novel"] else math.nan,
            "n_copy": counts["copy"], "n_novel": counts["novel"],
        }
    return result
