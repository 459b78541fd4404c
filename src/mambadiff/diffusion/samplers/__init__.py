"""Samplers, apart from the network and the task (diffusers-style): one class per algorithm, each
with the config dataclass of its process (``sample.gaussian``, ``sample.masked``).

* ``gaussian``: `AncestralSampler` (DiffuSeq's T steps), `RespacedSampler` (K steps, ancestral or DDIM
  by eta), `DPMSolverSampler` (DiffuSeq-v2); `gaussian_sampler` picks one from `GaussianSamplerConfig`.
* ``masked``: `MaskedSampler` (confidence-ordered unmasking, its length beam) from `MaskedSamplerConfig`.
"""
from .base import Sampler
from .gaussian import (CLAMPS, SOLVERS, AncestralSampler, DPMSolverSampler, GaussianSampler, GaussianSamplerConfig,
                       RespacedSampler, SampleOutput, embedding_matrix, gaussian_sampler, round_to_vocab,
                       sample_ancestral, sample_dpm_solver, sample_respaced)
from .masked import MaskedSampleOutput, MaskedSampler, MaskedSamplerConfig, MaskedTokens

SAMPLER_CONFIGS = {"gaussian": GaussianSamplerConfig, "masked": MaskedSamplerConfig}  # diffusion.process -> config

__all__ = ["CLAMPS", "SAMPLER_CONFIGS", "SOLVERS", "AncestralSampler", "DPMSolverSampler", "GaussianSampler",
           "GaussianSamplerConfig", "MaskedSampleOutput", "MaskedSampler", "MaskedSamplerConfig", "MaskedTokens",
           "RespacedSampler", "SampleOutput", "Sampler", "embedding_matrix", "gaussian_sampler", "round_to_vocab",
           "sample_ancestral", "sample_dpm_solver", "sample_respaced"]
