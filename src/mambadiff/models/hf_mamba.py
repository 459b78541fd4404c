"""Hugging Face Mamba / Mamba-2 checkpoints: a ``MambaForCausalLM`` or ``Mamba2ForCausalLM`` folder
(``config.json`` + ``model.safetensors`` or safetensors shards) loaded as a ``CausalLM``, and a
``CausalLM`` of a mamba / mamba2 backbone saved in that format.

Glossary: d model width (hidden_size), e inner width (expand * d), n state size (state_size), h heads
(num_heads), p head dim (head_dim, e = h * p), k conv width (conv_kernel), r dt rank (time_step_rank),
v vocab, g groups sharing B and C (n_groups).

The two models compute the same thing: pre-norm blocks x + mixer(RMSNorm(x)) without MLP, a final
RMSNorm, a head (tied or not); the Mamba mixer splits in_proj into (x, z), the Mamba-2 mixer into
(z, xBC, dt) and gates its output norm as RMSNorm(y * silu(z)) (HF: norm_before_gate=False). Only the
names differ, so a checkpoint maps one to one (shapes equal on both sides):

    Hugging Face                          ours                              shape
    backbone.embeddings.weight            embedding.weight                  (v, d)
    backbone.layers.{i}.norm.weight       backbone.norms.{i}.weight         (d,)
    backbone.layers.{i}.mixer.<rest>      backbone.mixers.{i}.<rest>        in_proj, conv1d, out_proj,
                                                                            A_log, D; Mamba: x_proj,
                                                                            dt_proj; Mamba-2: dt_bias, norm
    backbone.norm_f.weight                backbone.final_norm.weight        (d,)
    lm_head.weight                        head.weight                       (v, d), absent when tied

    config.json                           CausalLMConfig
    vocab_size, tie_word_embeddings       vocab_size, tie_embeddings
    hidden_size, num_hidden_layers        backbone.d_model, backbone.n_layers
    layer_norm_epsilon                    backbone.norm_eps (and mamba2.norm_eps, the gated norm's)
    state_size, conv_kernel, expand       <kind>.d_state, d_conv, expand
    use_bias, use_conv_bias               <kind>.bias, conv_bias
    time_step_min, _max, _floor           <kind>.dt_min, dt_max, dt_init_floor (init only)
    time_step_rank, _scale, _init_scheme  mamba.dt_rank, dt_scale, dt_init
    head_dim, chunk_size                  mamba2.headdim, chunk_size (num_heads = e / p is checked)

A field missing from config.json takes transformers' default for its model_type. Refused (a
``CheckpointError`` naming config.json and the field): n_groups != 1, a time_step_limit other than
(0, inf), hidden_act other than silu, other model types (falcon_mamba, mamba_ssm's own layout), and
pytorch_model.bin weights. Ignored: residual_in_fp32 (our residual keeps the model's dtype: the same in
float32, rounding differences in half precision), rescale_prenorm_residual and initializer_range (init
only), use_cache, use_mambapy, the token ids (the tokenizer's business).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from mambadiff.fileio import atomic_write_bytes, atomic_write_json
from mambadiff.train.checkpoint import CheckpointError, check_weights

from .backbones import BackboneConfig
from .lm import CONFIG_FILE, WEIGHTS_FILE, CausalLM, CausalLMConfig

__all__ = ["HF_MODEL_TYPES", "is_hf_mamba_folder", "load_hf_mamba", "resolve_hf_folder", "save_hf_mamba"]

HF_MODEL_TYPES = {"mamba": "MambaForCausalLM", "mamba2": "Mamba2ForCausalLM"}
INDEX_FILE = "model.safetensors.index.json"

# transformers' MambaConfig / Mamba2Config defaults, for the fields a config.json may leave out
_COMMON_DEFAULTS = {"layer_norm_epsilon": 1e-5, "expand": 2, "conv_kernel": 4, "use_bias": False,
                    "use_conv_bias": True, "hidden_act": "silu", "time_step_min": 1e-3,
                    "time_step_max": 0.1, "time_step_floor": 1e-4}
HF_DEFAULTS = {
    "mamba": {**_COMMON_DEFAULTS, "vocab_size": 50280, "hidden_size": 768, "num_hidden_layers": 32,
              "state_size": 16, "time_step_rank": "auto", "time_step_scale": 1.0,
              "time_step_init_scheme": "random", "tie_word_embeddings": True},
    "mamba2": {**_COMMON_DEFAULTS, "vocab_size": 32768, "hidden_size": 4096, "num_hidden_layers": 64,
               "state_size": 128, "num_heads": 128, "head_dim": 64, "n_groups": 8, "chunk_size": 256,
               "time_step_limit": [0.0, math.inf], "tie_word_embeddings": False},
}

# (pattern, replacement) over whole tensor names; the mixers' own parameter names are the same on both
# sides. HF also reads mamba_ssm's "backbone.embedding.weight", so load_hf_mamba does too.
_FROM_HF = [(r"backbone\.embeddings\.weight", "embedding.weight"),
            (r"backbone\.layers\.(\d+)\.norm\.weight", r"backbone.norms.\1.weight"),
            (r"backbone\.layers\.(\d+)\.mixer\.(.+)", r"backbone.mixers.\1.\2"),
            (r"backbone\.norm_f\.weight", "backbone.final_norm.weight"),
            (r"lm_head\.weight", "head.weight")]
_TO_HF = [(r"embedding\.weight", "backbone.embeddings.weight"),
          (r"backbone\.norms\.(\d+)\.weight", r"backbone.layers.\1.norm.weight"),
          (r"backbone\.mixers\.(\d+)\.(.+)", r"backbone.layers.\1.mixer.\2"),
          (r"backbone\.final_norm\.weight", "backbone.norm_f.weight"),
          (r"head\.weight", "lm_head.weight")]


def _rename(name: str, table: list[tuple[str, str]]) -> str:
    """``name`` under the first whole-name match of ``table``; unmatched names stay as they are (the
    weight check then reports them as unexpected)."""
    for pattern, replacement in table:
        match = re.fullmatch(pattern, name)
        if match:
            return match.expand(replacement)
    return name


def _decode_floats(obj: Any) -> Any:
    """transformers >= 5 writes inf as ``{"__float__": "Infinity"}`` (older versions as a bare
    ``Infinity``, which json reads already): those objects as floats."""
    if isinstance(obj, dict):
        if set(obj) == {"__float__"} and isinstance(obj["__float__"], str):
            return float(obj["__float__"])
        return {k: _decode_floats(v) for k, v in obj.items()}
    return [_decode_floats(v) for v in obj] if isinstance(obj, list) else obj


def _read_hf_config(folder: Path) -> dict:
    """config.json of a HF Mamba folder, with transformers' defaults filled in; CheckpointError names
    the file when it is missing, unreadable or of another model_type."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(path, "missing (a Hugging Face model folder has config.json)")
    try:
        raw = _decode_floats(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:  # ValueError: bad UTF-8, bad JSON, an unknown __float__ tag
        raise CheckpointError(path, f"not readable JSON: {e}") from None
    kind = raw.get("model_type") if isinstance(raw, dict) else None
    if kind not in HF_MODEL_TYPES:
        raise CheckpointError(path, f"model_type {kind!r} is not supported (one of {sorted(HF_MODEL_TYPES)})")
    return {**HF_DEFAULTS[kind], **raw}


def is_hf_mamba_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder whose config.json names model_type mamba or mamba2."""
    try:
        _read_hf_config(Path(path))
        return True
    except CheckpointError:
        return False


def _field(c: dict, path: Path, name: str, kind: type | tuple[type, ...] = int) -> Any:
    """``c[name]`` checked to be a ``kind`` (bools are not ints); CheckpointError naming the field."""
    value, kinds = c[name], kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise CheckpointError(path, f"field {name!r} = {value!r} is not {' or '.join(k.__name__ for k in kinds)}")
    return value


def _number(c: dict, path: Path, name: str) -> float:
    return float(_field(c, path, name, (int, float)))


def _layer_options(c: dict, path: Path, d: int) -> dict:
    """The backbone section of ``c``'s model_type (``mamba`` or ``mamba2`` options)."""
    expand = _field(c, path, "expand", (int, float))
    if expand != int(expand) or c.get("intermediate_size", int(expand) * d) != int(expand) * d:
        raise CheckpointError(path, f"expand = {expand} with intermediate_size = {c.get('intermediate_size')}: "
                                    f"our layers need an integer expand = intermediate_size / hidden_size")
    if c["hidden_act"] != "silu":
        raise CheckpointError(path, f"field 'hidden_act' = {c['hidden_act']!r}: our layers use silu only")
    options = dict(d_state=_field(c, path, "state_size"), d_conv=_field(c, path, "conv_kernel"),
                   expand=int(expand), bias=_field(c, path, "use_bias", bool),
                   conv_bias=_field(c, path, "use_conv_bias", bool), dt_min=_number(c, path, "time_step_min"),
                   dt_max=_number(c, path, "time_step_max"), dt_init_floor=_number(c, path, "time_step_floor"))
    if c["model_type"] == "mamba":
        rank = c["time_step_rank"]
        return {**options, "dt_rank": math.ceil(d / 16) if rank == "auto" else _field(c, path, "time_step_rank"),
                "dt_scale": _number(c, path, "time_step_scale"), "dt_init": c["time_step_init_scheme"]}
    if _field(c, path, "n_groups") != 1:
        raise CheckpointError(path, f"field 'n_groups' = {c['n_groups']}: our Mamba-2 layer shares one B, C "
                                    f"among all heads (n_groups = 1 only)")
    if list(c["time_step_limit"]) != [0.0, math.inf]:
        raise CheckpointError(path, f"field 'time_step_limit' = {c['time_step_limit']}: our Mamba-2 layer does "
                                    f"not clamp dt (only (0, inf) is supported)")
    heads, p = _field(c, path, "num_heads"), _field(c, path, "head_dim")
    if heads * p != int(expand) * d:
        raise CheckpointError(path, f"num_heads * head_dim = {heads} * {p} must equal expand * hidden_size "
                                    f"= {int(expand) * d}")
    return {**options, "headdim": p, "chunk_size": _field(c, path, "chunk_size"),
            "norm_eps": _number(c, path, "layer_norm_epsilon")}


def _lm_config(c: dict, path: Path) -> CausalLMConfig:
    """The CausalLMConfig of a HF Mamba config (see the module docstring's table)."""
    try:
        d = _field(c, path, "hidden_size")
        backbone = BackboneConfig(name=c["model_type"], d_model=d, n_layers=_field(c, path, "num_hidden_layers"),
                                  norm_eps=_number(c, path, "layer_norm_epsilon"))
        cfg = CausalLMConfig(vocab_size=_field(c, path, "vocab_size"),
                             backbone=backbone.with_layer(**_layer_options(c, path, d)),
                             tie_embeddings=_field(c, path, "tie_word_embeddings", bool))
        cfg.validate()  # the layer configs' checks, here so that the error names config.json
        return cfg
    except CheckpointError:
        raise
    except (TypeError, ValueError) as e:  # the configs' own checks (sizes > 0, headdim divides e, ...)
        raise CheckpointError(path, f"not a configuration our layers can build: {e}") from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001  safetensors raises its own errors for damaged files
        raise CheckpointError(path, f"not a readable safetensors file: {e}") from None


def _read_weights(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """(the file to name in errors, every tensor by its HF name) from model.safetensors or from the
    shards listed in model.safetensors.index.json."""
    single, index = folder / WEIGHTS_FILE, folder / INDEX_FILE
    if single.is_file():
        return single, _load_safetensors(single)
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(index, f"not a safetensors index (no weight_map): {e}") from None
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            if not (folder / shard).is_file():
                raise CheckpointError(folder / shard, f"missing (listed in {INDEX_FILE})")
            tensors.update(_load_safetensors(folder / shard))
        return index, tensors
    found = " (found pytorch_model.bin: convert it to safetensors)" if (folder / "pytorch_model.bin").exists() else ""
    raise CheckpointError(single, f"missing, and no {INDEX_FILE} either{found}")


def resolve_hf_folder(path_or_id: str | Path, cache_dir: str | Path | None) -> Path:
    """A local folder as it is; otherwise a Hub id looked up in the local Hugging Face cache only
    (nothing is downloaded)."""
    folder = Path(path_or_id)
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(str(path_or_id), cache_dir=cache_dir, local_files_only=True))
    except ImportError:
        raise CheckpointError(folder, "no such folder (huggingface_hub, needed for Hub ids, is not installed)") from None
    except Exception as e:  # noqa: BLE001  hub errors: invalid id, not cached, offline
        raise CheckpointError(folder, f"no such folder, and not a model in the local Hugging Face cache "
                                      f"({type(e).__name__}); download it first, e.g. "
                                      f"`huggingface-cli download {path_or_id}`") from None


def load_hf_mamba(path_or_id: str | Path, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None, *, cache_dir: str | Path | None = None) -> CausalLM:
    """A HF ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` folder (or cached Hub id) as a ``CausalLM`` in
    eval mode, in ``dtype`` (default: the stored one) on ``device``. CheckpointError (a ValueError)
    names the file and the field or tensor that does not fit."""
    folder = resolve_hf_folder(path_or_id, cache_dir)
    cfg_path = folder / CONFIG_FILE
    cfg = _lm_config(_read_hf_config(folder), cfg_path)
    weights_path, tensors = _read_weights(folder)
    if "backbone.embedding.weight" in tensors and "backbone.embeddings.weight" not in tensors:
        tensors["backbone.embeddings.weight"] = tensors.pop("backbone.embedding.weight")  # as HF reads it
    model = CausalLM(cfg)
    expected = {_rename(k, _TO_HF): v for k, v in model.state_dict().items()}  # HF name -> tensor
    if cfg.tie_embeddings:
        del expected["lm_head.weight"]
        head, emb = tensors.pop("lm_head.weight", None), tensors.get("backbone.embeddings.weight")
        if head is not None and emb is not None and not torch.equal(head, emb):  # a stored tied head is a copy
            raise CheckpointError(weights_path, "lm_head.weight differs from backbone.embeddings.weight, but "
                                                f"{cfg_path} says tie_word_embeddings = true")
    check_weights(weights_path, tensors, expected, target=f"the model of {cfg_path}")
    model.to(dtype or tensors["backbone.embeddings.weight"].dtype)
    model.load_state_dict({_rename(k, _FROM_HF): v for k, v in tensors.items()}, strict=not cfg.tie_embeddings)
    return model.to(device).eval() if device is not None else model.eval()


def _norm_eps(model: CausalLM) -> float:
    """The one layer_norm_epsilon HF uses for every RMSNorm: ours resolved (None is the machine epsilon
    of the model's dtype); ValueError when a Mamba-2 gated norm uses another eps."""
    cfg, dtype = model.cfg.backbone, model.embedding.weight.dtype
    eps = torch.finfo(dtype).eps if cfg.norm_eps is None else cfg.norm_eps
    if cfg.name == "mamba2" and not math.isclose(cfg.mamba2.norm_eps, eps, rel_tol=1e-6):
        raise ValueError(f"HF Mamba-2 has one layer_norm_epsilon, but backbone.norm_eps is {cfg.norm_eps} "
                         f"({eps:g} in {dtype}) and backbone.mamba2.norm_eps is {cfg.mamba2.norm_eps}: set them equal")
    return float(eps)


def hf_config(model: CausalLM) -> dict:
    """The config.json of ``model`` in HF's MambaConfig / Mamba2Config fields; ValueError for a model
    that HF's classes cannot express (another backbone, an MLP, attention layers)."""
    cfg, b = model.cfg, model.cfg.backbone
    if b.name not in HF_MODEL_TYPES or b.mlp_dim or b.attn_layers:
        raise ValueError(f"only a plain mamba or mamba2 backbone saves as a HF checkpoint, got {b.name!r} "
                         f"with mlp_dim={b.mlp_dim}, attn_layers={list(b.attn_layers)}")
    layer = b.layer_config()
    out = {"architectures": [HF_MODEL_TYPES[b.name]], "model_type": b.name, "vocab_size": cfg.vocab_size,
           "hidden_size": b.d_model, "num_hidden_layers": b.n_layers, "state_size": layer.d_state,
           "conv_kernel": layer.d_conv, "expand": layer.expand, "use_bias": layer.bias,
           "use_conv_bias": layer.conv_bias, "hidden_act": "silu", "layer_norm_epsilon": _norm_eps(model),
           "residual_in_fp32": False,  # ours keeps the residual in the model's dtype
           "tie_word_embeddings": cfg.tie_embeddings, "time_step_min": layer.dt_min,
           "time_step_max": layer.dt_max, "time_step_floor": layer.dt_init_floor,
           "dtype": str(model.embedding.weight.dtype).removeprefix("torch.")}
    if b.name == "mamba":
        out.update(intermediate_size=layer.d_inner, time_step_rank=layer.dt_rank, time_step_scale=layer.dt_scale,
                   time_step_init_scheme=layer.dt_init)
    else:  # time_step_limit left out: HF's default (0, inf) is ours
        out.update(num_heads=layer.nheads, head_dim=layer.headdim, n_groups=1, chunk_size=layer.chunk_size)
    return out


def save_hf_mamba(model: CausalLM, folder: str | Path) -> Path:
    """Write ``model`` as a HF checkpoint into ``folder``: config.json and model.safetensors (a tied head
    stored once, as HF does), each atomically, so that ``MambaForCausalLM.from_pretrained(folder)`` (or
    Mamba2ForCausalLM) loads it."""
    config = hf_config(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {_rename(k, _TO_HF): v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if not (model.cfg.tie_embeddings and k == "head.weight")}
    atomic_write_bytes(folder / WEIGHTS_FILE, save(state, metadata={"format": "pt"}))
    atomic_write_json(folder / CONFIG_FILE, config)
    return folder
