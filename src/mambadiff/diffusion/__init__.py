"""Diffusion process of MambaDiff: DiffuSeq's continuous diffusion over word embeddings.

Kept apart from the network (diffusers-style): schedules, forward process + losses, timestep
samplers, reverse samplers (``samplers/``) and MBR selection all take the denoiser as an argument.
"""
from .mbr import mbr_scores, mbr_select
from .process import GaussianDiffusion, mean_flat
from .samplers import (
    SOLVERS,
    SampleOutput,
    embedding_matrix,
    round_to_vocab,
    sample_ancestral,
    sample_dpm_solver,
    sample_respaced,
)
from .schedule import SCHEDULE_NAMES, NoiseSchedule, ScheduleConfig, named_betas, space_timesteps
from .timestep_sampler import (
    SAMPLER_NAMES,
    LossAwareSampler,
    TimestepSampler,
    UniformSampler,
    create_timestep_sampler,
)

__all__ = [
    "GaussianDiffusion",
    "LossAwareSampler",
    "NoiseSchedule",
    "SAMPLER_NAMES",
    "SCHEDULE_NAMES",
    "SOLVERS",
    "SampleOutput",
    "ScheduleConfig",
    "TimestepSampler",
    "UniformSampler",
    "create_timestep_sampler",
    "embedding_matrix",
    "mbr_scores",
    "mbr_select",
    "mean_flat",
    "named_betas",
    "round_to_vocab",
    "sample_ancestral",
    "sample_dpm_solver",
    "sample_respaced",
    "space_timesteps",
]
