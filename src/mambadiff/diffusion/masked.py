"""Discrete masked (absorbing-state) diffusion for seq2seq: MDLM (Sahoo et al. 2024) / RDM (Zheng et al. 2023).

Glossary: b batch, l length, e embedding width, v vocab, t diffusion step in [0, T), N selected positions,
K sampling steps.

Batch convention as the Gaussian process (``process.py``): ``input_ids (b, l)`` hold source and target,
``input_mask (b, l)`` is 1 on TARGET positions. Only target positions are ever masked; the source is
the clean condition. Target-side [PAD]s are target tokens, so the model decides the output length.

Forward process: at step t every target token is replaced by [MASK] independently with probability
``rate(t) = (t + 1) / T`` (linear in t; t = T - 1 masks every target token).

Network: the denoiser of ``models.denoiser`` run on token ids: ``h = model(model.embed(x_t), t)``,
logits ``model.logits(h)`` through the tied head. Self-conditioning feeds the previous ``h`` back as
``self_cond`` (the estimate of x0 in embedding space, whose tied logits are the prediction).

Loss, per example, with ``CE_i = -log p(ids_i | x_t)`` over the masked target positions ``M``,
``n_target`` target positions and ``|M|`` masked ones:

* ``elbo`` (MDLM's continuous-time bound for the linear schedule): ``T / (t + 1) * sum_M CE / n_target``,
  an unbiased estimate of the mean target CE;
* ``rdm`` (RDM's linear reweighting, which emphasises the low-noise steps):
  ``(1 - t / T) * sum_M CE / max(|M|, 1)``;
* ``uniform``: ``sum_M CE / max(|M|, 1)``.

Classifier-free guidance on the source (Ho & Salimans 2022; LD4LG uses it for text): with
``diffusion.source_dropout`` p, each training example's source words are all [MASK] with probability p
(`without_source`: the specials stay, so the unconditional model still sees where the target is), and
the sampler's ``guidance`` w mixes ``(1 + w) log p(. | source) - w log p(. | no source)``.

Sampling: ``samplers/masked.py`` (`MaskedSampler`).
"""
from __future__ import annotations

import torch

from .process import check_ids_and_mask

WEIGHTINGS = ("rdm", "elbo", "uniform")


class MaskedDiffusion:
    """Absorbing-state diffusion over target tokens; holds only T, the [MASK] id and the weighting."""

    def __init__(self, num_timesteps: int, mask_id: int, weighting: str = "rdm"):
        if int(num_timesteps) < 1:
            raise ValueError(f"MaskedDiffusion: num_timesteps must be >= 1, got {num_timesteps}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"MaskedDiffusion: weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.num_timesteps = int(num_timesteps)
        self.mask_id = int(mask_id)
        self.weighting = weighting

    # ------------------------------------------------------------------ forward process
    def mask_rate(self, t: torch.Tensor) -> torch.Tensor:
        """Probability that a target token is masked at step ``t (b,)``: ``(t + 1) / T``."""
        return (t.double() + 1.0) / self.num_timesteps  # (b,)

    def timestep_for_rate(self, rate: float) -> int:
        """The step whose masking rate is ``rate`` in (0, 1] (rounded up to the grid)."""
        return min(self.num_timesteps - 1, max(0, int(-(-rate * self.num_timesteps // 1)) - 1))

    def q_sample(self, input_ids: torch.Tensor, input_mask: torch.Tensor, t: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t (b, l), masked (b, l) bool)``: target tokens replaced by [MASK] with prob ``rate(t)``."""
        check_ids_and_mask(input_ids, input_mask, None, "MaskedDiffusion.q_sample")
        self._check_t(t, input_ids.shape[0], "q_sample")
        u = torch.rand(input_ids.shape, generator=generator, dtype=torch.float64,
                       device=generator.device if generator is not None else "cpu").to(input_ids.device)  # (b, l)
        rate = self.mask_rate(t).to(input_ids.device)[:, None]  # (b, 1)
        masked = input_mask.bool() & (u < rate)  # (b, l)
        return torch.where(masked, torch.full_like(input_ids, self.mask_id), input_ids), masked

    def _check_t(self, t, batch: int, who: str) -> None:
        if not torch.is_tensor(t) or t.shape != (batch,) or t.dtype not in (torch.long, torch.int32):
            raise ValueError(f"{who}: t must be an integer tensor of shape ({batch},), got "
                             f"{getattr(t, 'dtype', type(t))} {tuple(getattr(t, 'shape', ()))}")
        if batch and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ValueError(f"{who}: t must lie in [0, {self.num_timesteps}), got {t.tolist()}")

    # ------------------------------------------------------------------ loss
    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """The per-example factor of the weighting (see the module docstring): ``(b,)``."""
        if self.weighting == "elbo":
            return 1.0 / self.mask_rate(t)
        if self.weighting == "rdm":
            return 1.0 - t.double() / self.num_timesteps
        return torch.ones_like(t, dtype=torch.float64)

    def training_losses(self, model, input_ids: torch.Tensor, input_mask: torch.Tensor, t: torch.Tensor,
                        generator: torch.Generator | None = None, self_condition: bool = False,
                        attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{"loss", "ce", "mask_frac"}``, each ``(b,)``: the weighted loss that is optimised, the mean CE
        over masked target positions (logged) and the fraction of target positions masked.

        ``self_condition``: first run the network without gradient, then again with its output as
        ``self_cond`` (the caller decides on which steps; zeros, i.e. None, on the others).
        """
        x_t, masked = self.q_sample(input_ids, input_mask, t, generator)  # (b, l), (b, l)
        x_emb = model.embed(x_t)  # (b, l, e)
        self_cond = None
        if self_condition:
            with torch.no_grad():
                self_cond = model(x_emb.detach(), t, mask=attention_mask).detach()  # (b, l, e)
        h = model(x_emb, t, mask=attention_mask, self_cond=self_cond)  # (b, l, e)
        ce_sum, n_masked = masked_cross_entropy_sum(model, h, input_ids, masked)  # (b,), (b,)
        n_target = input_mask.bool().sum(-1).to(ce_sum.dtype).clamp_min(1.0)  # (b,)
        w = self.loss_weight(t).to(ce_sum.dtype)  # (b,)
        per_masked = ce_sum / n_masked.clamp_min(1.0)  # (b,)
        loss = w * ce_sum / n_target if self.weighting == "elbo" else w * per_masked
        return {"loss": loss, "ce": per_masked, "mask_frac": n_masked / n_target}


def without_source(input_ids: torch.Tensor, input_mask: torch.Tensor, mask_id: int, keep: torch.Tensor,
                   rows: torch.Tensor | None = None) -> torch.Tensor:
    """``input_ids (b, l)`` with every source position (``input_mask`` 0) whose token is not in ``keep``
    (the special tokens, ``(s,)``) set to [MASK]: the null condition of classifier-free guidance. ``rows
    (b,)`` bool limits it to those rows (None: all)."""
    drop = ~input_mask.bool() & ~torch.isin(input_ids, keep.to(input_ids.device))  # (b, l)
    if rows is not None:
        drop &= rows.to(input_ids.device)[:, None]
    return torch.where(drop, torch.full_like(input_ids, mask_id), input_ids)


def masked_cross_entropy_sum(model, h: torch.Tensor, ids: torch.Tensor, where: torch.Tensor):
    """Sum per example of the tied-head CE at positions ``where`` (only those go through the head),
    and their count: ``(b,)``, ``(b,)``."""
    keep = where.bool()  # (b, l)
    ce = model.token_cross_entropy(h[keep], ids[keep])  # (N,)
    rows = torch.arange(h.shape[0], device=h.device).unsqueeze(1).expand_as(keep)[keep]  # (N,)
    total = ce.new_zeros(h.shape[0]).index_add(0, rows, ce)  # (b,)
    return total, keep.sum(-1).to(ce.dtype)
