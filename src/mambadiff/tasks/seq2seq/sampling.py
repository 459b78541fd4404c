"""What decides a model's sampled outputs besides the inputs, and the sampler object that draws them.

`GenerationSettings` is the ``sample`` section of a run's config with any options replacing it: the
keys every process shares (samples, mbr, batch_size, seed) and the sampler section of the model's own
process (``sample.gaussian`` or ``sample.masked``). Options are the declared fields of `SampleConfig`,
`GaussianSamplerConfig` and `MaskedSamplerConfig` (`mambadiff.options`): the `generate` flags, the
`Paraphraser` keywords and the settings recorded beside an output file all come from them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mambadiff.diffusion import GaussianDiffusion
from mambadiff.diffusion.embedding_space import embedding_space
from mambadiff.diffusion.masked import MaskedDiffusion
from mambadiff.diffusion.samplers import (SAMPLER_CONFIGS, GaussianSamplerConfig, MaskedSampler, MaskedSamplerConfig,
                                          MaskedTokens, Sampler, gaussian_sampler)
from mambadiff.options import option_specs

from .config import SampleConfig, Seq2SeqConfig

DRAW_OPTIONS = ("samples", "mbr", "batch_size", "seed")  # the SampleConfig options a file's rows depend on


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides the sampled outputs besides the model and the inputs."""

    process: str  # diffusion.process of the model
    samples: int  # S samples per example
    mbr: bool  # pick one of the S samples by MBR when S > 1
    batch_size: int  # rows per batch (part of the randomness rule of tasks/paraphrase.py)
    seed: int
    sampler: GaussianSamplerConfig | MaskedSamplerConfig  # the section of ``process``

    @property
    def steps(self) -> int:
        return self.sampler.steps

    def to_dict(self) -> dict[str, Any]:
        """Flat: process, the draw options, then the sampler's options (recorded beside an output file)."""
        return {"process": self.process, **{k: getattr(self, k) for k in DRAW_OPTIONS},
                **self.sampler.option_values()}


def option_names() -> dict[str, tuple[str, ...]]:
    """Every sampling option name -> the sections that declare it ("sample", "gaussian", "masked")."""
    names: dict[str, tuple[str, ...]] = {}
    for section, cls in (("sample", SampleConfig), *SAMPLER_CONFIGS.items()):
        for spec in option_specs(cls):
            names[spec.name] = (*names.get(spec.name, ()), section)
    return names


def generation_settings(sample: SampleConfig, process: str, options: dict[str, Any]) -> GenerationSettings:
    """``sample``'s settings for ``process`` with ``options`` (option names; None values ignored)
    replacing them, checked by the declarations. A key of another process's sampler, or none at all,
    is a ValueError naming it."""
    declared = option_names()
    common, own = {}, {}
    for key, value in options.items():
        if value is None:
            continue
        sections = declared.get(key, ())
        if "sample" in sections and key in DRAW_OPTIONS:
            common[key] = value
        elif process in sections:
            own[key] = value
        elif sections and sections != ("sample",):
            raise ValueError(f"{key} is an option of the {' and '.join(sections)} sampler (sample.{sections[0]}.{key}); "
                             f"this model uses diffusion.process: {process}")
        else:
            raise ValueError(f"unknown sampling option {key!r}; one of {', '.join(sorted(declared))}")
    base = dataclasses.replace(sample, **common)  # checked as sample.<key>
    sampler = dataclasses.replace(sample.for_process(process), **own)  # checked as sample.<process>.<key>
    return GenerationSettings(process, *(getattr(base, k) for k in DRAW_OPTIONS), sampler)


def build_masked_diffusion(cfg: Seq2SeqConfig, mask_id: int) -> MaskedDiffusion:
    return MaskedDiffusion(cfg.diffusion.steps, mask_id, cfg.diffusion.masked_weighting)


def build_sampler(cfg: Seq2SeqConfig, tok, sampler_cfg: GaussianSamplerConfig | MaskedSamplerConfig) -> Sampler:
    """The sampler of the model's process, configured by ``sampler_cfg`` (a ValueError when it does not
    fit the model, e.g. more Gaussian steps than T)."""
    self_condition = bool(cfg.model.self_condition)
    if cfg.diffusion.process == "masked":
        if sampler_cfg.guidance and not cfg.diffusion.source_dropout:
            raise ValueError(f"{sampler_cfg.prefix}guidance {sampler_cfg.guidance} needs a model trained with "
                             "diffusion.source_dropout > 0 (the unconditional model it contrasts with); this one "
                             "was trained without")
        return MaskedSampler(build_masked_diffusion(cfg, tok.mask_id), sampler_cfg, MaskedTokens.from_tokenizer(tok),
                             self_condition=self_condition)
    diffusion = GaussianDiffusion.from_name(cfg.diffusion.schedule, cfg.diffusion.steps)
    return gaussian_sampler(diffusion, sampler_cfg, self_condition=self_condition)


def sampling_view(cfg: Seq2SeqConfig, model):
    """The denoiser as the sampler of its process sees it: the Gaussian process runs in the (possibly
    normalised and scaled) embedding space of ``diffusion.embedding_norm`` / ``noise_factor``."""
    if cfg.diffusion.process == "masked":
        return model
    return embedding_space(model, cfg.diffusion.embedding_norm, cfg.diffusion.noise_factor)
