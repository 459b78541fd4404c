"""Noise schedules for continuous diffusion over word embeddings (DiffuSeq, Gong et al. 2022).

Glossary: t diffusion step (0-based, ``0 <= t < T``), T number of steps, K kept steps after
respacing, b batch.

Indexing convention (the one DiffuSeq inherits from improved-diffusion): step index ``t`` is the
(t+1)-th noising step, so ``alphas_cumprod[t] = prod_{i<=t} (1 - betas[i])`` and the data itself
(``alpha_bar = 1``) sits "before" index 0.

Named schedules (``betas`` are float64):

* ``"sqrt"`` (DiffuSeq's default): ``alpha_bar(s) = 1 - sqrt(s + 1e-4)`` for ``s = t / T``;
  ``betas[t] = min(1 - alpha_bar((t+1)/T) / alpha_bar(t/T), 0.999)``. Because betas are built from
  *ratios*, ``alphas_cumprod[t] = alpha_bar((t+1)/T) / alpha_bar(0)`` (telescoping) wherever the
  0.999 cap is inactive; the cap only bites at the very last step, where ``alpha_bar(1) < 0``.
* ``"linear"``: Ho et al.'s ``linspace(1e-4, 0.02)`` rescaled by ``1000 / T`` (needs T >= 21, else
  betas would exceed 0.999).
* ``"cosine"``: Nichol & Dhariwal, ``alpha_bar(s) = cos((s + 0.008) / 1.008 * pi / 2) ** 2``, same
  ratio construction and 0.999 cap.

Every derived table is computed in float64 and cast only when gathered for a tensor
(:meth:`NoiseSchedule.gather`), to float32 for float32/float16/bfloat16 tensors (as DiffuSeq's
``_extract_into_tensor`` does) and to float64 for float64 tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

SCHEDULE_NAMES = ("sqrt", "linear", "cosine")
MAX_BETA = 0.999


@dataclass
class ScheduleConfig:
    """Which noise schedule to build: ``name`` in :data:`SCHEDULE_NAMES`, ``num_timesteps`` = T."""

    name: str = "sqrt"
    num_timesteps: int = 2000

    def build(self) -> "NoiseSchedule":
        return NoiseSchedule.from_name(self.name, self.num_timesteps)


def _betas_from_alpha_bar(
    num_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = MAX_BETA
) -> torch.Tensor:
    """Discretise a continuous alpha_bar(s), s in [0, 1], into T betas from consecutive ratios."""
    betas = []
    for i in range(num_timesteps):
        s0 = i / num_timesteps
        s1 = (i + 1) / num_timesteps
        betas.append(min(1.0 - alpha_bar(s1) / alpha_bar(s0), max_beta))
    return torch.tensor(betas, dtype=torch.float64)  # (T,)


def named_betas(name: str, num_timesteps: int = 2000) -> torch.Tensor:
    """The float64 betas ``(T,)`` of a named schedule ("sqrt", "linear" or "cosine")."""
    if not isinstance(num_timesteps, int) or isinstance(num_timesteps, bool) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")
    if name == "sqrt":
        return _betas_from_alpha_bar(num_timesteps, lambda s: 1.0 - math.sqrt(s + 0.0001))
    if name == "linear":
        scale = 1000.0 / num_timesteps
        if scale * 0.02 > MAX_BETA:
            raise ValueError(
                f"linear schedule needs num_timesteps >= 21 (its last beta 20 / T must be <= {MAX_BETA}), "
                f"got {num_timesteps}"
            )
        return torch.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=torch.float64)
    if name == "cosine":
        return _betas_from_alpha_bar(
            num_timesteps, lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        )
    raise ValueError(f"unknown noise schedule name {name!r}; expected one of {SCHEDULE_NAMES}")


def space_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """``steps`` evenly spaced original timesteps in ``[0, T)``, always including 0 and T-1.

    ``round(i * (T - 1) / (K - 1))`` for ``i = 0..K-1`` (round half up, in exact integer
    arithmetic). The stride is >= 1 when ``K <= T``, so the result is strictly increasing.
    ``steps == 1`` keeps only ``T - 1``.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be an int in [1, {num_timesteps}], got {steps!r}")
    if steps == 1:
        return [num_timesteps - 1]
    span, gaps = num_timesteps - 1, steps - 1
    return [(2 * i * span + gaps) // (2 * gaps) for i in range(steps)]


class NoiseSchedule:
    """Precomputed float64 tables of a (possibly respaced) diffusion schedule.

    Attributes, each a float64 tensor of shape ``(T,)`` (T = ``num_timesteps``):

    ``betas, alphas, alphas_cumprod, alphas_cumprod_prev (alpha_bar of the previous kept step, 1 at
    index 0), sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, log_one_minus_alphas_cumprod,
    posterior_variance, posterior_log_variance_clipped, posterior_mean_coef1 (on x0),
    posterior_mean_coef2 (on x_t), model_variance_large``.

    ``posterior_*`` describe ``q(x_{t-1} | x_t, x0)``. ``model_variance_large`` is DiffuSeq's
    reverse-process variance ("fixed large": ``betas`` with index 0 replaced by
    ``posterior_variance[1]``; DiffuSeq never uses the small/posterior variance for sampling).

    ``timesteps`` (long ``(T,)``) maps each index to the ORIGINAL timestep: ``arange(T)`` for a base
    schedule, the kept subsequence for a respaced one (:meth:`respace`).
    """

    def __init__(self, betas: torch.Tensor | Sequence[float], timesteps: torch.Tensor | None = None):
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu().clone()  # (T,)
        if betas.dim() != 1 or betas.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1-D sequence, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must all lie in (0, 1]")
        T = betas.numel()
        if timesteps is None:
            timesteps = torch.arange(T)
        timesteps = torch.as_tensor(timesteps, dtype=torch.long).cpu()
        if timesteps.shape != (T,):
            raise ValueError(f"timesteps must have shape ({T},), got {tuple(timesteps.shape)}")
        self.timesteps = timesteps  # (T,) original timestep of each index
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        one = torch.ones(1, dtype=torch.float64)
        self.alphas_cumprod_prev = torch.cat([one, self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.log_one_minus_alphas_cumprod = torch.log(1.0 - self.alphas_cumprod)
        self.posterior_variance = (
            betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        # posterior_variance[0] == 0; the log is clipped by reusing index 1 there (as DiffuSeq).
        first = self.posterior_variance[1:2] if T > 1 else self.betas[:1]
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([first, self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = (
            betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        )
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1.0 - self.alphas_cumprod)
        )
        self.model_variance_large = torch.cat([first, betas[1:]])
        self._cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_name(cls, name: str = "sqrt", num_timesteps: int = 2000) -> "NoiseSchedule":
        return cls(named_betas(name, num_timesteps))

    @property
    def num_timesteps(self) -> int:
        return self.betas.numel()

    def respace(self, timesteps: Sequence[int] | torch.Tensor) -> "NoiseSchedule":
        """A schedule over the kept (strictly increasing) subset of this schedule's indices.

        improved-diffusion style: ``new_beta_j = 1 - alpha_bar[tau_j] / alpha_bar[tau_{j-1}]``
        (``alpha_bar[tau_{-1}] = 1``), so the new ``alphas_cumprod`` equal the old ones at the kept
        steps and every reverse step moves between the REAL noise levels of consecutive kept steps.
        Where two kept steps are adjacent (``tau_j = tau_{j-1} + 1``) the original beta is reused
        verbatim, so keeping every step reproduces this schedule bit for bit.
        ``timesteps`` of the result maps back to ORIGINAL timesteps (composes with ours).
        """
        keep = torch.as_tensor(list(timesteps) if not torch.is_tensor(timesteps) else timesteps)
        keep = keep.to(dtype=torch.long, device="cpu").flatten()
        T = self.num_timesteps
        if keep.numel() == 0:
            raise ValueError("respace: timesteps must not be empty")
        if int(keep.min()) < 0 or int(keep.max()) >= T:
            raise ValueError(f"respace: timesteps must lie in [0, {T}), got {keep.tolist()}")
        if keep.numel() > 1 and not bool((keep[1:] > keep[:-1]).all()):
            raise ValueError("respace: timesteps must be strictly increasing")
        new_betas = []
        prev_index, prev_ab = -1, 1.0
        for idx in keep.tolist():
            ab = float(self.alphas_cumprod[idx])
            if idx == prev_index + 1:
                new_betas.append(float(self.betas[idx]))
            else:
                new_betas.append(1.0 - ab / prev_ab)
            prev_index, prev_ab = idx, ab
        return NoiseSchedule(torch.tensor(new_betas, dtype=torch.float64), self.timesteps[keep])

    # ------------------------------------------------------------------ gathering
    def gather(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``table[t]`` reshaped to broadcast against ``like``: ``(b,) -> (b, 1, ..., 1)``.

        Cast to float64 for float64 ``like``, else float32 (DiffuSeq's ``.float()``); placed on
        ``like``'s device. ``table`` is one of this schedule's ``(T,)`` float64 attributes.
        """
        dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
        key = (id(table), like.device, dtype)
        cached = self._cache.get(key)
        if cached is None:
            cached = table.to(dtype=dtype).to(like.device)  # cast on CPU first: MPS has no float64
            self._cache[key] = cached
        out = cached[t.to(like.device)]  # (b,)
        return out.view(-1, *([1] * (like.dim() - 1)))  # (b, 1, ..., 1)

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(T={self.num_timesteps}, alpha_bar[0]={float(self.alphas_cumprod[0]):.6g}, "
            f"alpha_bar[-1]={float(self.alphas_cumprod[-1]):.3g})"
        )
