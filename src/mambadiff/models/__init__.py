"""Backbone registry, diffusion denoiser and sequence classifier."""
from .backbones import BACKBONES, BackboneConfig, build_backbone, count_parameters
from .classifier import ClassifierConfig, SequenceClassifier
from .denoiser import Denoiser, DenoiserConfig

__all__ = ["BACKBONES", "BackboneConfig", "build_backbone", "count_parameters", "ClassifierConfig",
           "SequenceClassifier", "Denoiser", "DenoiserConfig"]
