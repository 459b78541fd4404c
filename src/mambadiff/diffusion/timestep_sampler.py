"""Training-time samplers of diffusion steps t (DiffuSeq's ``schedule_sampler``).

Glossary: b batch, t diffusion step, T number of steps, H history length per step.

``sample(b, device, generator=None) -> (t (b,) long, weights (b,) float32)`` draws t from a
distribution p over ``[0, T)`` and returns importance weights ``1 / (T * p[t])`` so that
``mean(weights * loss)`` is an unbiased estimate of the uniform-t objective.

* ``UniformSampler``: p uniform, weights all 1.
* ``LossAwareSampler``: DiffuSeq's "lossaware" = improved-diffusion's loss-second-moment
  resampler. Keeps the last ``H = 10`` losses of every t; once every t has H of them,
  ``p[t] ∝ sqrt(mean(history[t] ** 2))``, mixed with the uniform distribution at
  ``uniform_prob = 0.001``; uniform before that (warm-up).

Under ``torch.distributed`` every rank draws its own t (its own generator) but ``update`` all-gathers
``(t, loss)`` from every rank (padding unequal batch sizes) and applies them in rank order, so all
ranks hold identical histories; without an initialised process group the update is local.
``state_dict()`` / ``load_state_dict()`` capture the histories exactly (float64), so a resumed run
samples bit-for-bit the same as an uninterrupted one (given the same generator state).

Fixes over DiffuSeq: its ``np.int`` counts no longer run on NumPy >= 1.24; its all-gather fails when
ranks have different batch sizes (local tensors were never padded); an all-zero history gave NaN
probabilities (here: uniform). Sampling uses ``torch.multinomial`` with an optional generator
instead of NumPy's global RNG.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.distributed as dist


class TimestepSampler(ABC):
    """A distribution over diffusion steps with importance weights. Subclasses define ``weights``."""

    def __init__(self, num_timesteps: int):
        if not isinstance(num_timesteps, int) or isinstance(num_timesteps, bool) or num_timesteps < 1:
            raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")
        self.num_timesteps = num_timesteps

    @abstractmethod
    def weights(self) -> torch.Tensor:
        """Unnormalised positive float64 weights ``(T,)``, one per step."""

    def probabilities(self) -> torch.Tensor:
        w = self.weights()  # (T,)
        return w / w.sum()

    def sample(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``t (b,)`` long and importance weights ``(b,)`` float32, both on ``device``.

        Draws on the generator's device (CPU if none is given), then moves to ``device``.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        p = self.probabilities()  # (T,) float64, CPU
        draw_device = generator.device if generator is not None else torch.device("cpu")
        t = torch.multinomial(p.to(draw_device), batch_size, replacement=True, generator=generator)  # (b,)
        t = t.cpu()
        weights = 1.0 / (self.num_timesteps * p[t])  # (b,) float64
        return t.to(device), weights.to(dtype=torch.float32, device=device)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Report per-example losses for the sampled steps (no-op unless loss-aware)."""

    def state_dict(self) -> dict:
        return {"num_timesteps": self.num_timesteps}

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("num_timesteps", -1)) != self.num_timesteps:
            raise ValueError(
                f"load_state_dict: num_timesteps {state.get('num_timesteps')} != {self.num_timesteps}"
            )


class UniformSampler(TimestepSampler):
    """Uniform t; all weights 1 (DiffuSeq's "uniform")."""

    def weights(self) -> torch.Tensor:
        return torch.ones(self.num_timesteps, dtype=torch.float64)

    def sample(self, batch_size, device="cpu", generator=None):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        draw_device = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(0, self.num_timesteps, (batch_size,), generator=generator, device=draw_device)
        return t.to(device), torch.ones(batch_size, dtype=torch.float32, device=device)


class LossAwareSampler(TimestepSampler):
    """Loss-second-moment importance sampler (DiffuSeq / improved-diffusion "lossaware")."""

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_timesteps)
        if not isinstance(history_per_term, int) or history_per_term < 1:
            raise ValueError(f"history_per_term must be a positive int, got {history_per_term!r}")
        if not 0.0 <= float(uniform_prob) <= 1.0:
            raise ValueError(f"uniform_prob must lie in [0, 1], got {uniform_prob!r}")
        self.history_per_term = history_per_term
        self.uniform_prob = float(uniform_prob)
        self.loss_history = torch.zeros(num_timesteps, history_per_term, dtype=torch.float64)  # (T, H)
        self.loss_counts = torch.zeros(num_timesteps, dtype=torch.long)  # (T,)

    def warmed_up(self) -> bool:
        return bool((self.loss_counts == self.history_per_term).all())

    def weights(self) -> torch.Tensor:
        T = self.num_timesteps
        if not self.warmed_up():
            return torch.ones(T, dtype=torch.float64)
        w = self.loss_history.pow(2).mean(dim=-1).sqrt()  # (T,) RMS loss per step
        total = w.sum()
        if not bool(torch.isfinite(total)) or float(total) <= 0.0:
            return torch.ones(T, dtype=torch.float64)
        w = w / total
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / T

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record ``losses (b,)`` for steps ``t (b,)``; all-gathered across ranks under DDP."""
        t = torch.as_tensor(t).detach().flatten()
        losses = torch.as_tensor(losses).detach().flatten()
        if t.shape != losses.shape:
            raise ValueError(f"update: t {tuple(t.shape)} and losses {tuple(losses.shape)} must match")
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t, losses = _all_gather_varlen(t, losses)
        self.update_with_all_losses(t.tolist(), losses.double().tolist())

    def update_with_all_losses(self, ts: list[int], losses: list[float]) -> None:
        """Apply already-gathered ``(t, loss)`` pairs in order (identical on every rank)."""
        H = self.history_per_term
        for step, loss in zip(ts, losses):
            if not 0 <= step < self.num_timesteps:
                raise ValueError(f"update: t={step} outside [0, {self.num_timesteps})")
            count = int(self.loss_counts[step])
            if count == H:  # full: shift out the oldest loss
                self.loss_history[step, :-1] = self.loss_history[step, 1:].clone()
                self.loss_history[step, -1] = loss
            else:
                self.loss_history[step, count] = loss
                self.loss_counts[step] = count + 1

    def state_dict(self) -> dict:
        return {
            "num_timesteps": self.num_timesteps,
            "history_per_term": self.history_per_term,
            "uniform_prob": self.uniform_prob,
            "loss_history": self.loss_history.tolist(),  # JSON-native: exact for float64
            "loss_counts": self.loss_counts.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if int(state.get("history_per_term", -1)) != self.history_per_term:
            raise ValueError(
                f"load_state_dict: history_per_term {state.get('history_per_term')} != {self.history_per_term}"
            )
        history = torch.as_tensor(_plain(state["loss_history"]), dtype=torch.float64).cpu()
        counts = torch.as_tensor(_plain(state["loss_counts"]), dtype=torch.long).cpu()
        if history.shape != self.loss_history.shape or counts.shape != self.loss_counts.shape:
            raise ValueError(
                f"load_state_dict: loss_history {tuple(history.shape)} / loss_counts {tuple(counts.shape)} "
                f"do not match ({self.num_timesteps}, {self.history_per_term})"
            )
        self.uniform_prob = float(state.get("uniform_prob", self.uniform_prob))
        self.loss_history = history.clone()
        self.loss_counts = counts.clone()


def _all_gather_varlen(t: torch.Tensor, losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather 1-D ``t`` / ``losses`` of possibly different lengths; concatenated in rank order."""
    world = dist.get_world_size()
    device = t.device
    size = torch.tensor([t.numel()], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    longest = max(sizes)
    t_pad = torch.zeros(longest, dtype=torch.long, device=device)
    t_pad[: t.numel()] = t.to(torch.long)
    loss_pad = torch.zeros(longest, dtype=torch.float64, device=device)
    loss_pad[: losses.numel()] = losses.to(device=device, dtype=torch.float64)
    t_all = [torch.zeros_like(t_pad) for _ in range(world)]
    loss_all = [torch.zeros_like(loss_pad) for _ in range(world)]
    dist.all_gather(t_all, t_pad)
    dist.all_gather(loss_all, loss_pad)
    t_cat = torch.cat([x[:n] for x, n in zip(t_all, sizes)]).cpu()
    loss_cat = torch.cat([x[:n] for x, n in zip(loss_all, sizes)]).cpu()
    return t_cat, loss_cat


SAMPLER_NAMES = ("uniform", "lossaware")


def create_timestep_sampler(name: str, num_timesteps: int) -> TimestepSampler:
    """``"uniform"`` -> :class:`UniformSampler`, ``"lossaware"`` -> :class:`LossAwareSampler`."""
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name == "lossaware":
        return LossAwareSampler(num_timesteps)
    raise ValueError(f"unknown timestep sampler {name!r}; expected one of {SAMPLER_NAMES}")


def _plain(values):
    """Values saved as a list (or a tensor); checkpoints of earlier versions wrapped the list as
    ``{"__tensor__": list, "dtype": name}``."""
    return values["__tensor__"] if isinstance(values, dict) and "__tensor__" in values else values
