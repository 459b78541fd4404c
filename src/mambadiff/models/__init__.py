"""Backbone registry, diffusion denoiser, sequence classifier and causal language model."""
from .backbones import BACKBONES, BackboneConfig, build_backbone, count_parameters
from .classifier import ClassifierConfig, SequenceClassifier
from .denoiser import Denoiser, DenoiserConfig
from .generation import generate
from .lm import CausalLM, CausalLMConfig

__all__ = ["BACKBONES", "BackboneConfig", "build_backbone", "count_parameters", "ClassifierConfig",
           "SequenceClassifier", "Denoiser", "DenoiserConfig", "CausalLM", "CausalLMConfig", "generate"]
