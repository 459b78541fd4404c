"""Forward process and training losses of DiffuSeq (Gong et al. 2022), x0-parameterised.

Glossary: b batch, l length, e embedding width (``Denoiser.emb_dim``), v vocab, t diffusion step.

Batch convention (DiffuSeq's): ``input_ids (b, l)`` hold ``[CLS] source [SEP] target [SEP] PAD..``;
``input_mask (b, l)`` is 1 on TARGET positions (these are noised and generated) and 0 on the source
side (kept clean: the condition). Target-side PAD tokens are target positions: DiffuSeq noises
and predicts them like any other token (the model learns where the sentence ends), and so do we.
``attention_mask (b, l)`` (True at non-pad tokens) is only forwarded to the model as ``mask=``;
DiffuSeq itself passes no mask (its transformer attends to PAD too), so ``attention_mask=None``
reproduces it exactly. No loss term uses ``attention_mask``.

Model contract (see ``mambadiff.models.denoiser``): ``model.embed(ids) -> (b, l, e)``,
``model.logits(h) -> (b, l, v)`` (tied head), ``model(x_t, t, mask=None) -> predicted x0``, and
optionally ``model.token_cross_entropy(h (n, e), ids (n,)) -> (n,)``, a faster equal of
``cross_entropy(logits(h), ids)`` (used for the NLL terms when the model has it).
``t`` is the ORIGINAL integer step in ``[0, T)``. DiffuSeq runs with ``rescale_timesteps=True``,
i.e. its network sees ``t * 1000 / T`` as a float; here that scaling is the denoiser's own job
(inside its timestep embedding), so nothing in this package rescales timesteps.

Training loss (``training_losses``), exactly DiffuSeq's ``training_losses_seq2seq``:

    x_start_mean = embed(input_ids)                                    (b, l, e)
    x_start      = x_start_mean + sqrt(1 - alpha_bar[0]) * eps0        ALL positions, source too
    x_t          = q_sample(x_start, t, eps, input_mask)               source positions = x_start
    pred         = model(x_t, t)                                       predicted x0
    mse          = mean over ALL positions and dims of (x_start - pred)^2,
                   and of (x_start_mean - pred)^2 for examples with t == 0
    tT           = mean over ALL positions and dims of (sqrt(alpha_bar[T-1]) * x_start)^2
    decoder_nll  = mean over ALL positions of CE(logits(x_start), input_ids)
    loss         = mse + decoder_nll + tT                              <- what is optimised
    nll          = mean over TARGET positions of CE(logits(pred), input_ids)   logged only

``loss`` is per example; the trainer multiplies it by the timestep sampler's importance weights
and averages (DiffuSeq: ``(losses["loss"] * weights).mean()``) and feeds ``loss.detach()`` to a
loss-aware sampler. ``nll`` carries gradient but is not part of ``loss`` (DiffuSeq issue #25/#27:
it traces reconstruction quality). Source positions enter ``mse`` as a copy task (x_t equals
x_start there) and enter ``tT`` / ``decoder_nll`` as embedding regularisers; this dilutes the
target-side terms by the source fraction, which is DiffuSeq's behaviour and kept on purpose.

Deviation (a fix): DiffuSeq divides the target-masked ``nll`` by the number of target positions
and returns NaN for an example without any; here that count is clamped to >= 1 (``nll = 0``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .schedule import NoiseSchedule


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first: ``(b, ...) -> (b,)``."""
    return x.mean(dim=tuple(range(1, x.dim())))


def check_ids_and_mask(input_ids, input_mask, attention_mask, who: str) -> None:
    if not torch.is_tensor(input_ids) or input_ids.dim() != 2:
        raise ValueError(f"{who}: input_ids must be a (b, l) tensor, got {getattr(input_ids, 'shape', type(input_ids))}")
    if input_ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(f"{who}: input_ids must be an integer tensor, got {input_ids.dtype}")
    if not torch.is_tensor(input_mask) or input_mask.shape != input_ids.shape:
        raise ValueError(
            f"{who}: input_mask must have input_ids' shape {tuple(input_ids.shape)}, "
            f"got {getattr(input_mask, 'shape', type(input_mask))}"
        )
    if input_mask.dtype != torch.bool and not bool(((input_mask == 0) | (input_mask == 1)).all()):
        raise ValueError(f"{who}: input_mask must hold only 0/1 (1 = target position)")
    if attention_mask is not None and (
        not torch.is_tensor(attention_mask) or attention_mask.shape != input_ids.shape
    ):
        raise ValueError(
            f"{who}: attention_mask must be None or have input_ids' shape {tuple(input_ids.shape)}, "
            f"got {getattr(attention_mask, 'shape', type(attention_mask))}"
        )


class GaussianDiffusion:
    """Gaussian diffusion over word embeddings with x0 prediction (DiffuSeq's configuration).

    Holds only the schedule; the network is passed to each call (diffusers-style separation).
    """

    def __init__(self, schedule: NoiseSchedule):
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        # A respaced schedule indexes its kept steps 0..K-1; the model always sees ORIGINAL steps.
        self._timestep_map = schedule.timesteps  # (T,) long
        self._identity_map = torch.equal(schedule.timesteps, torch.arange(schedule.num_timesteps))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Map schedule indices ``t (b,)`` to the ORIGINAL timesteps the model is conditioned on."""
        if self._identity_map:
            return t
        return self._timestep_map.to(t.device)[t]

    @classmethod
    def from_name(cls, name: str = "sqrt", num_timesteps: int = 2000) -> "GaussianDiffusion":
        return cls(NoiseSchedule.from_name(name, num_timesteps))

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def _check_t(self, t: torch.Tensor, batch: int, who: str) -> None:
        if not torch.is_tensor(t) or t.shape != (batch,) or t.dtype not in (torch.long, torch.int32):
            raise ValueError(
                f"{who}: t must be an integer tensor of shape ({batch},), "
                f"got {getattr(t, 'dtype', type(t))} {tuple(getattr(t, 'shape', ()))}"
            )
        if batch and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ValueError(f"{who}: t must lie in [0, {self.num_timesteps}), got {t.tolist()}")

    # ------------------------------------------------------------------ forward process
    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor):
        """Mean ``(b, l, e)`` and variance ``(b, 1, 1)`` of ``q(x_t | x0)``."""
        s = self.schedule
        mean = s.gather(s.sqrt_alphas_cumprod, t, x0) * x0  # (b, l, e)
        variance = s.gather(1.0 - s.alphas_cumprod, t, x0)  # (b, 1, 1)
        return mean, variance

    def q_sample(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        input_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``x_t ~ q(x_t | x0)`` on target positions; source positions are returned as x0.

        x0 ``(b, l, e)``, t ``(b,)`` long, noise ``(b, l, e)`` (drawn if None), input_mask ``(b, l)``
        1 = target (None: noise every position).
        """
        if x0.dim() != 3:
            raise ValueError(f"q_sample: x0 must be (b, l, e), got shape {tuple(x0.shape)}")
        self._check_t(t, x0.shape[0], "q_sample")
        if noise is None:
            noise = randn_like_generator(x0.shape, generator, x0)
        if noise.shape != x0.shape:
            raise ValueError(f"q_sample: noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        s = self.schedule
        x_t = (
            s.gather(s.sqrt_alphas_cumprod, t, x0) * x0
            + s.gather(s.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )  # (b, l, e)
        if input_mask is None:
            return x_t
        if input_mask.shape != x0.shape[:2]:
            raise ValueError(
                f"q_sample: input_mask must have shape {tuple(x0.shape[:2])}, got {tuple(input_mask.shape)}"
            )
        return torch.where(input_mask.bool().unsqueeze(-1), x_t, x0)  # (b, l, e)

    def q_posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean ``(b, l, e)``, variance and clipped log-variance ``(b, 1, 1)`` of q(x_{t-1}|x_t,x0)."""
        s = self.schedule
        mean = s.gather(s.posterior_mean_coef1, t, x_t) * x0 + s.gather(s.posterior_mean_coef2, t, x_t) * x_t
        return (
            mean,
            s.gather(s.posterior_variance, t, x_t),
            s.gather(s.posterior_log_variance_clipped, t, x_t),
        )

    # ------------------------------------------------------------------ losses
    @staticmethod
    def token_nll(model, x: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Rounding cross-entropy ``-log p(w | x)`` with the tied head, per example ``(b,)``.

        Mean over all positions (``mask=None``) or over positions where ``mask`` is 1.
        """
        cross_entropy = getattr(model, "token_cross_entropy", None)
        if cross_entropy is None:  # any model with a logits head: the plain (n, v) cross-entropy
            def cross_entropy(h, ids):
                return F.cross_entropy(model.logits(h), ids, reduction="none")  # (n,)
        if mask is None:
            ce = cross_entropy(x.reshape(-1, x.shape[-1]), input_ids.reshape(-1)).view(input_ids.shape)  # (b, l)
            return ce.mean(dim=-1)
        # Only the selected positions go through the (v-wide) head: the same value as masking a
        # full (b, l, v) cross-entropy, at the cost of the selected positions alone.
        keep = mask.bool()  # (b, l)
        ce = cross_entropy(x[keep], input_ids[keep])  # (N,)
        rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1).expand_as(keep)[keep]  # (N,)
        total = ce.new_zeros(x.shape[0]).index_add(0, rows, ce)  # (b,)
        return total / keep.sum(dim=-1).to(ce.dtype).clamp_min(1.0)

    @staticmethod
    def absorbed(model, x_start: torch.Tensor, input_ids: torch.Tensor, absorb: torch.Tensor,
                 mask_id: int | None) -> torch.Tensor:
        """``x_start (b, l, e)`` with the embedding of ``mask_id`` at the ``absorb (b, l)`` positions
        (DiffuSeq-v2's soft absorbing state)."""
        if absorb.shape != input_ids.shape or mask_id is None:
            raise ValueError(f"training_losses: absorb must be a {tuple(input_ids.shape)} bool tensor given with "
                             f"mask_id, got {tuple(absorb.shape)} and mask_id={mask_id!r}")
        mask_emb = model.embed(torch.full_like(input_ids[:1, :1], int(mask_id)))  # (1, 1, e) learned
        return torch.where(absorb.unsqueeze(-1), mask_emb, x_start)  # (b, l, e)

    def training_losses(
        self,
        model,
        input_ids: torch.Tensor,
        input_mask: torch.Tensor,
        t: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        x_start_noise: torch.Tensor | None = None,
        nll_grad: bool = True,
        with_nll: bool = True,
        self_condition: bool = False,
        absorb: torch.Tensor | None = None,
        mask_id: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """DiffuSeq's per-example losses; see the module docstring for the exact definitions.

        input_ids ``(b, l)`` long, input_mask ``(b, l)`` 1 = target, t ``(b,)`` long in [0, T),
        attention_mask ``(b, l)`` bool or None (forwarded to the model only), noise ``(b, l, e)``:
        the eps of ``q_sample``; x_start_noise ``(b, l, e)``: the eps0 of ``x_start`` (both drawn
        from the global RNG when None). Returns ``{"loss", "mse", "tT", "decoder_nll", "nll"}``,
        each ``(b,)``; only ``loss`` is meant to be optimised. ``nll_grad=False`` computes ``nll``
        without autograd (cheaper; right when it is only logged, as in DiffuSeq); ``with_nll=False``
        leaves ``nll`` out altogether (a step whose metrics nobody reads). ``self_condition``: run the
        model once without gradient and feed its x0 estimate back as ``self_cond`` (Analog Bits); the
        caller picks the steps (the others see zeros, i.e. no ``self_cond``). ``absorb`` ``(b, l)`` bool
        with ``mask_id``: DiffuSeq-v2's soft absorbing state, the positions whose x0 is the embedding of
        ``mask_id`` before noising (the losses still target the true words' x0).
        """
        check_ids_and_mask(input_ids, input_mask, attention_mask, "training_losses")
        self._check_t(t, input_ids.shape[0], "training_losses")
        s = self.schedule
        x_start_mean = model.embed(input_ids)  # (b, l, e)
        if x_start_mean.dim() != 3 or x_start_mean.shape[:2] != input_ids.shape:
            raise ValueError(
                f"training_losses: model.embed must return (b, l, e) for input_ids {tuple(input_ids.shape)}, "
                f"got {tuple(x_start_mean.shape)}"
            )
        for name, tensor in (("noise", noise), ("x_start_noise", x_start_noise)):
            if tensor is not None and tensor.shape != x_start_mean.shape:
                raise ValueError(
                    f"training_losses: {name} must have shape {tuple(x_start_mean.shape)}, got {tuple(tensor.shape)}"
                )
        if x_start_noise is None:
            x_start_noise = torch.randn_like(x_start_mean)
        t_zero = torch.zeros_like(t)
        std0 = s.gather(s.sqrt_one_minus_alphas_cumprod, t_zero, x_start_mean)  # (b, 1, 1)
        x_start = x_start_mean + std0 * x_start_noise  # (b, l, e) the x0 sample of q(x0 | w)
        if noise is None:
            noise = torch.randn_like(x_start)
        noised = x_start if absorb is None else self.absorbed(model, x_start, input_ids, absorb, mask_id)  # (b, l, e)
        x_t = self.q_sample(noised, t, noise=noise, input_mask=input_mask)  # (b, l, e)

        model_t = self.model_timesteps(t)
        if self_condition:
            with torch.no_grad():
                estimate = model(x_t, model_t, mask=attention_mask).detach()  # (b, l, e)
            pred_x0 = model(x_t, model_t, mask=attention_mask, self_cond=estimate)  # (b, l, e)
        else:
            pred_x0 = model(x_t, model_t, mask=attention_mask)  # (b, l, e)
        if pred_x0.shape != x_start.shape:
            raise ValueError(
                f"training_losses: model output shape {tuple(pred_x0.shape)} != x_t shape {tuple(x_start.shape)}"
            )
        mse = mean_flat((x_start - pred_x0) ** 2)  # (b,)
        mse_t0 = mean_flat((x_start_mean - pred_x0) ** 2)  # (b,) the L_1 reconstruction term at t == 0
        mse = torch.where(t == 0, mse_t0, mse)

        t_last = torch.full_like(t, self.num_timesteps - 1)
        mean_T = s.gather(s.sqrt_alphas_cumprod, t_last, x_start) * x_start  # (b, l, e)
        tT = mean_flat(mean_T**2)  # (b,) KL(q(x_T|x0) || N(0, I)) up to constants

        decoder_nll = self.token_nll(model, x_start, input_ids)  # (b,) all positions
        losses = {"loss": mse + decoder_nll + tT, "mse": mse, "tT": tT, "decoder_nll": decoder_nll}
        if with_nll or nll_grad:
            with torch.set_grad_enabled(torch.is_grad_enabled() and nll_grad):
                losses["nll"] = self.token_nll(model, pred_x0, input_ids, mask=input_mask)  # (b,) target positions
        return losses


def randn_like_generator(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise of ``shape`` in ``like``'s dtype/device, from ``generator`` if given."""
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    out = torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device)
    return out.to(like.device)
