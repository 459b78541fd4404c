"""Reverse (generation) samplers for DiffuSeq-style seq2seq diffusion.

Glossary: b batch, l length, e embedding width, v vocab, t diffusion step (original index),
T number of steps, K kept steps, j index into the kept steps.

Both samplers share one loop (``_reverse_loop``) over the kept steps ``tau_{K-1} > ... > tau_0``
of a :class:`NoiseSchedule` (the full schedule for :func:`sample_ancestral`, a respaced one for
:func:`sample_respaced`):

1. start: target positions ~ N(0, I), source positions = their clean embeddings ``embed(ids)``;
2. per step: ``x0_hat = model(x, tau_j, mask=attention_mask)`` (ORIGINAL timestep ``tau_j``);
   with ``clamp="round"`` replace every vector of ``x0_hat`` by its nearest (L2) row of the word
   embedding matrix (DiffuSeq's ``denoised_fn_round``, applied at every step: DiffuSeq decodes
   with ``clamp_step=0, clamp_first=True``); no [-1, 1] clipping (DiffuSeq: ``clip_denoised=False``);
3. move to the previous kept step (below), add noise unless ``j == 0``;
4. re-anchor: source positions are reset to their clean embeddings after every step.
With ``self_condition`` the model also gets the previous step's (unclamped) ``x0_hat`` as
``self_cond`` (none on the first step).

At the end, ``token_ids = argmax(model.logits(x))`` (DiffuSeq decodes with the lm head, not by
nearest neighbour) over all positions; callers cut the target span with ``input_mask``.

The step from ``t = tau_j`` to ``s = tau_{j-1}`` (``alpha_bar[s] = 1`` for ``j == 0``), with
``beta' = 1 - alpha_bar[t] / alpha_bar[s]`` and posterior variance
``sigma_post^2 = beta' (1 - alpha_bar[s]) / (1 - alpha_bar[t])``:

* ``eta == 1``: the posterior mean ``mean = c1 * x0_hat + c2 * x_t`` of ``q(x_s | x_t, x0_hat)``
  (improved-diffusion respacing: coefficients of the respaced schedule), noise std
  ``sqrt(beta')`` for ``variance="fixed_large"`` (DiffuSeq's fixed-large variance) or
  ``sigma_post`` for ``variance="fixed_small"``. With every step kept this IS DiffuSeq's
  ``p_sample`` loop.
* ``eta < 1``: DDIM (Song et al. 2021) with x0 prediction: ``eps_hat = (x_t - sqrt(ab_t) x0_hat) /
  sqrt(1 - ab_t)``, ``mean = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - (eta sigma_post)^2) eps_hat``, noise
  std ``eta * sigma_post`` (``fixed_small``) or ``eta * sqrt(beta')`` (``fixed_large``, DDIM's
  "sigma-hat" variant). ``eta = 0`` is deterministic given the initial noise; the mean is continuous
  in eta and equals the posterior mean at eta = 1.

:func:`sample_dpm_solver` is DPM-Solver++ (Lu et al. 2022; the sampler of DiffuSeq-v2) in its
multistep form for x0-predicting models, deterministic after the initial noise, on the same kept
steps. With ``alpha = sqrt(ab)``, ``sigma = sqrt(1 - ab)``, ``lambda = log(alpha / sigma)`` and
``h = lambda_s - lambda_t`` the step from ``t = tau_j`` to ``s = tau_{j-1}`` is
``x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - exp(-h)) D`` with ``D = x0_hat`` (order 1: DDIM) or,
order 2 after the first step, ``D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_hat_prev``, ``r = h_prev / h``
(the previous step's estimate extrapolated to the midpoint in lambda). The last kept step (0) returns
its x0 estimate. Clamping, self-conditioning and re-anchoring are as above.

DiffuSeq bug fixed: for fewer steps (``step_gap``) DiffuSeq runs DDIM over ``T-1, T-1-gap, ...`` but
takes ``alpha_bar_prev`` of ``t - 1``, not of the next visited step, so every strided step lands on the
wrong noise level; its visited steps also stop at ``(T-1) mod gap`` instead of 0, so the output keeps
residual noise. Here every step moves between the real noise levels of consecutive kept steps and the
kept steps always include ``T - 1`` and 0 (:func:`space_timesteps`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..progress import progress_bar
from .process import GaussianDiffusion, check_ids_and_mask, randn_like_generator
from .schedule import NoiseSchedule, space_timesteps

CLAMP_CHOICES = ("round", "logits", None)
SOLVERS = ("respaced", "dpm-solver++")  # sample.solver: the K-step Gaussian samplers
VARIANCE_CHOICES = ("fixed_large", "fixed_small")
_ROUND_CHUNK = 4096  # rows of x0_hat per distance matmul: bounds memory at chunk * v floats


class SampleOutput(NamedTuple):
    embeddings: torch.Tensor  # (b, l, e) final x0 (source positions = clean source embeddings)
    token_ids: torch.Tensor  # (b, l) argmax of model.logits(embeddings)


def embedding_matrix(model) -> torch.Tensor:
    """The word embedding matrix ``(v, e)`` seen through the Denoiser contract."""
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    probe = torch.zeros(1, 1, int(model.emb_dim), device=device, dtype=dtype)  # (1, 1, e)
    vocab = model.logits(probe).shape[-1]
    ids = torch.arange(vocab, device=device).view(1, vocab)  # (1, v)
    return model.embed(ids)[0]  # (v, e)


def round_to_vocab(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Replace each vector of ``x (..., e)`` by its nearest row of ``weight (v, e)`` (L2)."""
    flat = x.reshape(-1, x.shape[-1])  # (n, e)
    w = weight.to(flat.dtype)
    w_sq = (w * w).sum(dim=-1)  # (v,)
    ids = []
    for start in range(0, flat.shape[0], _ROUND_CHUNK):
        rows = flat[start : start + _ROUND_CHUNK]  # (c, e)
        # ||x - w||^2 = ||x||^2 - 2 x.w + ||w||^2; ||x||^2 is constant per row, so dropped.
        dist = w_sq.unsqueeze(0) - 2.0 * rows @ w.T  # (c, v)
        ids.append(dist.argmin(dim=-1))
    ids = torch.cat(ids) if ids else flat.new_zeros(0, dtype=torch.long)
    return w[ids].view_as(x)  # (..., e)


def clamp_x0(model, x0_hat: torch.Tensor, clamp: str | None, vocab_weight: torch.Tensor | None) -> torch.Tensor:
    """``x0_hat (b, l, e)`` clamped: ``round`` to the nearest row of ``vocab_weight (v, e)``, ``logits`` to
    the embedding of the tied head's argmax token (what the nll term trains), None unchanged."""
    if clamp == "round":
        return round_to_vocab(x0_hat, vocab_weight)
    if clamp == "logits":
        return vocab_weight[model.logits(x0_hat).argmax(dim=-1)]  # (b, l, e)
    return x0_hat


def _step_coefficients(
    schedule: NoiseSchedule, j: int, eta: float, variance: str
) -> tuple[float, float, float]:
    """(c_x0, c_xt, noise_std) of the step from kept index j to j - 1 (float64 -> python float)."""
    if eta == 1.0:
        c_x0 = float(schedule.posterior_mean_coef1[j])
        c_xt = float(schedule.posterior_mean_coef2[j])
        var = schedule.model_variance_large[j] if variance == "fixed_large" else schedule.posterior_variance[j]
        return c_x0, c_xt, float(var.sqrt())
    ab_t = schedule.alphas_cumprod[j]
    ab_s = schedule.alphas_cumprod_prev[j]
    var_mean = eta**2 * schedule.posterior_variance[j]
    c_xt = ((1.0 - ab_s - var_mean).clamp_min(0.0).sqrt() / (1.0 - ab_t).sqrt())
    c_x0 = ab_s.sqrt() - c_xt * ab_t.sqrt()
    var = schedule.model_variance_large[j] if variance == "fixed_large" else schedule.posterior_variance[j]
    return float(c_x0), float(c_xt), float(eta * var.sqrt())


def _validate(diffusion, model, input_ids, input_mask, attention_mask, clamp, variance, who):
    if not isinstance(diffusion, GaussianDiffusion):
        raise ValueError(f"{who}: diffusion must be a GaussianDiffusion, got {type(diffusion).__name__}")
    check_ids_and_mask(input_ids, input_mask, attention_mask, who)
    if clamp not in CLAMP_CHOICES and clamp != "none":
        raise ValueError(f"{who}: clamp must be one of {CLAMP_CHOICES} (or 'none'), got {clamp!r}")
    if variance not in VARIANCE_CHOICES:
        raise ValueError(f"{who}: variance must be one of {VARIANCE_CHOICES}, got {variance!r}")
    for name in ("embed", "logits", "emb_dim"):
        if not hasattr(model, name):
            raise ValueError(f"{who}: model lacks `{name}` required by the Denoiser contract")


def _start(model, input_ids, input_mask, clamp, generator):
    """(x_src, target, x_T, vocab_weight): the clean source embeddings ``(b, l, e)`` (the anchor of
    the source side), the target positions ``(b, l, 1)``, the start ``(b, l, e)`` (noise on the target,
    the source elsewhere) and the embedding matrix ``(v, e)`` when ``clamp`` needs it."""
    x_src = model.embed(input_ids)  # (b, l, e)
    target = input_mask.to(device=x_src.device).bool().unsqueeze(-1)  # (b, l, 1)
    x = torch.where(target, randn_like_generator(x_src.shape, generator, x_src), x_src)  # (b, l, e)
    vocab_weight = embedding_matrix(model) if clamp in ("round", "logits") else None  # (v, e)
    return x_src, target, x, vocab_weight


@torch.no_grad()
def _reverse_loop(
    schedule: NoiseSchedule,
    model,
    input_ids: torch.Tensor,
    input_mask: torch.Tensor,
    attention_mask: torch.Tensor | None,
    clamp: str | None,
    eta: float,
    variance: str,
    generator: torch.Generator | None,
    progress: bool,
    self_condition: bool = False,
) -> SampleOutput:
    x_src, target, x, vocab_weight = _start(model, input_ids, input_mask, clamp, generator)
    b = x_src.shape[0]
    kept = schedule.timesteps.tolist()  # original timestep of each kept index
    order = range(len(kept) - 1, -1, -1)
    bar = progress_bar(len(kept), "diffusion sampling", enabled=progress)
    previous = None  # the last step's x0 estimate, fed back when self-conditioning
    for j in order:
        t = torch.full((b,), kept[j], dtype=torch.long, device=x.device)  # (b,) ORIGINAL step
        if self_condition:
            x0_hat = model(x, t, mask=attention_mask, self_cond=previous)  # (b, l, e)
            previous = x0_hat
        else:
            x0_hat = model(x, t, mask=attention_mask)  # (b, l, e)
        x0_hat = clamp_x0(model, x0_hat, clamp, vocab_weight)  # (b, l, e)
        c_x0, c_xt, std = _step_coefficients(schedule, j, eta, variance)
        x = c_x0 * x0_hat + c_xt * x  # (b, l, e) mean of p(x_s | x_t)
        if j > 0 and std > 0.0:
            x = x + std * randn_like_generator(x.shape, generator, x)
        x = torch.where(target, x, x_src)  # re-anchor the source side
        bar.update(1)
    bar.close()
    token_ids = model.logits(x).argmax(dim=-1)  # (b, l)
    return SampleOutput(x, token_ids)


def sample_ancestral(
    diffusion: GaussianDiffusion,
    model,
    input_ids: torch.Tensor,
    input_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    clamp: str | None = "round",
    generator: torch.Generator | None = None,
    progress: bool = False,
    variance: str = "fixed_large",
    self_condition: bool = False,
) -> SampleOutput:
    """DiffuSeq's full T-step ancestral sampler (``p_sample_loop``); returns (x0 (b,l,e), ids (b,l)).

    input_ids ``(b, l)``: source tokens (targets are ignored: overwritten by noise); input_mask
    ``(b, l)`` 1 = generate; attention_mask ``(b, l)`` or None (forwarded to the model);
    clamp ``"round"`` (nearest-embedding rounding of x0_hat at every step) or None;
    variance ``"fixed_large"`` (DiffuSeq) or ``"fixed_small"``. Runs under ``torch.no_grad``.
    """
    _validate(diffusion, model, input_ids, input_mask, attention_mask, clamp, variance, "sample_ancestral")
    clamp = None if clamp == "none" else clamp
    return _reverse_loop(
        diffusion.schedule, model, input_ids, input_mask, attention_mask, clamp, 1.0, variance, generator, progress,
        self_condition,
    )


def sample_respaced(
    diffusion: GaussianDiffusion,
    model,
    input_ids: torch.Tensor,
    input_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    steps: int,
    eta: float = 0.0,
    clamp: str | None = "round",
    generator: torch.Generator | None = None,
    progress: bool = False,
    variance: str = "fixed_large",
    self_condition: bool = False,
) -> SampleOutput:
    """K-step sampler over evenly spaced original steps (``space_timesteps(T, steps)``, incl. T-1 and 0).

    ``eta = 1``: ancestral sampling on the respaced chain (``steps == T`` reproduces
    :func:`sample_ancestral` exactly, same generator => same output). ``eta = 0`` (default):
    deterministic DDIM with x0 prediction, DiffuSeq's own choice for reduced-step decoding
    (``ddim_sample``, eta 0) with its step-skipping bug fixed; diversity across seeds comes from
    the initial noise. ``0 < eta < 1`` interpolates. Other arguments as :func:`sample_ancestral`.
    """
    _validate(diffusion, model, input_ids, input_mask, attention_mask, clamp, variance, "sample_respaced")
    clamp = None if clamp == "none" else clamp
    try:
        eta = float(eta)
    except (TypeError, ValueError):
        raise ValueError(f"sample_respaced: eta must be a float in [0, 1], got {eta!r}") from None
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"sample_respaced: eta must lie in [0, 1], got {eta}")
    schedule = diffusion.schedule.respace(space_timesteps(diffusion.num_timesteps, steps))
    return _reverse_loop(
        schedule, model, input_ids, input_mask, attention_mask, clamp, eta, variance, generator, progress,
        self_condition,
    )


@torch.no_grad()
def sample_dpm_solver(
    diffusion: GaussianDiffusion,
    model,
    input_ids: torch.Tensor,
    input_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    steps: int,
    order: int = 2,
    clamp: str | None = "round",
    generator: torch.Generator | None = None,
    progress: bool = False,
    self_condition: bool = False,
) -> SampleOutput:
    """DPM-Solver++ (multistep, ``order`` 1 or 2) over ``space_timesteps(T, steps)``; see the module
    docstring. Arguments and result as :func:`sample_respaced` (no eta: the solver is deterministic
    given the initial noise drawn from ``generator``)."""
    _validate(diffusion, model, input_ids, input_mask, attention_mask, clamp, "fixed_large", "sample_dpm_solver")
    clamp = None if clamp == "none" else clamp
    if order not in (1, 2):
        raise ValueError(f"sample_dpm_solver: order must be 1 or 2, got {order!r}")
    schedule = diffusion.schedule.respace(space_timesteps(diffusion.num_timesteps, steps))
    ab = schedule.alphas_cumprod  # (K,) float64, kept index j -> alpha_bar of original step tau_j
    alpha, sigma = ab.sqrt(), (1.0 - ab).sqrt()  # (K,), (K,)
    lam = alpha.log() - sigma.log()  # (K,) log signal-to-noise ratio / 2, rising as j falls

    x_src, target, x, vocab_weight = _start(model, input_ids, input_mask, clamp, generator)
    b = x_src.shape[0]
    kept = schedule.timesteps.tolist()
    bar = progress_bar(len(kept), "diffusion sampling (DPM-Solver++)", enabled=progress)
    previous, previous_x0, h_previous = None, None, None
    for j in range(len(kept) - 1, -1, -1):
        t = torch.full((b,), kept[j], dtype=torch.long, device=x.device)  # (b,) ORIGINAL step
        x0_hat = model(x, t, mask=attention_mask, self_cond=previous) if self_condition else model(
            x, t, mask=attention_mask)  # (b, l, e)
        previous = x0_hat
        x0_hat = clamp_x0(model, x0_hat, clamp, vocab_weight)  # (b, l, e)
        if j == 0:
            x = x0_hat
        else:
            h = float(lam[j - 1] - lam[j])
            d = x0_hat
            if order == 2 and previous_x0 is not None:
                r = h_previous / h
                d = (1 + 0.5 / r) * x0_hat - (0.5 / r) * previous_x0  # (b, l, e)
            x = float(sigma[j - 1] / sigma[j]) * x + float(alpha[j - 1]) * -math.expm1(-h) * d  # (b, l, e)
            previous_x0, h_previous = x0_hat, h
        x = torch.where(target, x, x_src)  # re-anchor the source side
        bar.update(1)
    bar.close()
    return SampleOutput(x, model.logits(x).argmax(dim=-1))
