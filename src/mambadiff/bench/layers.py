"""Whole-stack benchmark: 6-layer Mamba, Mamba-2, S4D, S4, Transformer and LSTM stacks side by side
(and H3 on request: ``--model h3``).

Glossary: b batch, l length, d model width.

Two modes, each timed in the same run so the ratios are comparable:
- ``train``: one training step (forward, backward of a mean loss, AdamW step) on x (b, l, d);
- ``infer``: forward only under ``torch.inference_mode``.
Mamba-1 can be listed with a scan backend, e.g. ``mamba:reference`` or ``mamba:cpu``.
S4's kernel length (l_max) is set to the longest case. ``bidirectional`` builds the stacks as the
classifiers and denoisers use them; ``match`` sizes every stack to one model's parameter count
(d_model, or the Transformer's ff_dim: ``matched_stack_configs``), so that tokens/s compare at equal
parameters. H3 is not in the default list: its diagonal SSM runs over (b, h, p, p, l) key-value
products (p = 8: 8 d values per position, over a GB per layer for the 64 x 1024 training case), so
time it on smaller cases, e.g. ``--model h3 --train 16x1024``.
"""
from __future__ import annotations

import time

import torch

from mambadiff.models.backbones import BackboneConfig, build_backbone, count_parameters
from mambadiff.models.layer_options import Mamba2Options, S4Options

from .common import print_table, time_and_peak, write_json

DEFAULT_MODELS = ("mamba", "mamba2", "s4d", "s4", "transformer", "lstm")


def stack_config(model: str, d_model: int = 128, n_layers: int = 6, bidirectional: bool = False,
                 max_len: int = 512) -> BackboneConfig:
    """The benchmark's stacks. The Transformer uses ff 256 (the reference point in the targets table).
    ``max_len`` is the longest sequence (S4's kernel length)."""
    name, _, backend = model.partition(":")
    cfg = BackboneConfig(name=name, d_model=d_model, n_layers=n_layers, bidirectional=bidirectional,
                         n_heads=4, ff_dim=2 * d_model, pos_encoding="sinusoidal",
                         mamba2=Mamba2Options(headdim=32, chunk_size=64), s4=S4Options(l_max=max_len))
    if backend:
        cfg = cfg.with_layer(scan_backend=backend)
    return cfg


def matched_stack_configs(models, reference: str, d_model: int = 128, n_layers: int = 6,
                          bidirectional: bool = False, max_len: int = 512,
                          tolerance: float = 0.05) -> dict[str, BackboneConfig]:
    """{model: its stack sized to the parameter count of ``reference``'s stack} (within ``tolerance``).

    The knob is ``d_model`` for the state-space stacks and the LSTM (Mamba-2's and H3's head dims follow
    it), ``ff_dim`` for the Transformer (d_model stays), as ``param_match`` sizes the classifiers
    (``mambadiff.tasks.classify.param_match.match_backbone``); the reference keeps ``d_model``."""
    from mambadiff.tasks.classify.param_match import match_backbone

    ref = stack_config(reference, d_model, n_layers, bidirectional, max_len)
    target = count_parameters(build_backbone(ref))
    out = {}
    for model in models:
        cfg = stack_config(model, d_model, n_layers, bidirectional, max_len)
        if model != reference:
            cfg = match_backbone(cfg.name, cfg, 0, target=target, tolerance=tolerance)[0]
        out[model] = cfg
    return out


def _time_cases(net, model: str, d_model: int, cases, mode: str, dev, repeats: int, warmup: int) -> list[dict]:
    """One record per (b, l) case of ``mode`` ("train": forward, backward, AdamW step; "infer")."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    records = []
    for b, l in cases:
        x = torch.randn(b, l, d_model, device=dev)

        def train_step():
            opt.zero_grad(set_to_none=True)
            net(x).float().pow(2).mean().backward()
            opt.step()

        def infer_step():
            with torch.inference_mode():
                net(x)

        base = {"model": model, "mode": mode, "batch": b, "seq_len": l, "d_model": d_model}
        t0 = time.perf_counter()
        try:
            seconds, peak = time_and_peak(train_step if mode == "train" else infer_step, dev,
                                          repeats=repeats, warmup=warmup)
        except (RuntimeError, MemoryError) as e:  # e.g. out of memory at long l
            records.append({**base, "error": str(e).splitlines()[0][:120]})
            continue
        records.append({**base, "seconds": seconds, "tokens_per_s": b * l / seconds, "peak_mem_mb": peak,
                        "bench_wall_s": time.perf_counter() - t0})
    return records


def _add_ratios(records: list[dict], match: str | None) -> None:
    """speedup_vs_transformer (its seconds over the model's) and, with ``match``, vs_reference (the model's
    tokens/s over the reference stack's), at the same (mode, batch, seq_len)."""
    for name, key in (("transformer", "speedup_vs_transformer"), (match, "vs_reference")):
        ref = {(r["mode"], r["batch"], r["seq_len"]): r["seconds"] for r in records
               if name is not None and r["model"] == name and "seconds" in r}
        for r in records:
            case = (r["mode"], r["batch"], r["seq_len"])
            if "seconds" in r and case in ref:
                r[key] = ref[case] / r["seconds"]


def run_layers_benchmark(models=DEFAULT_MODELS, train_cases=((64, 128), (64, 1024)),
                         infer_cases=((8, 128), (8, 1024), (8, 2048), (8, 4096)), d_model: int = 128,
                         n_layers: int = 6, repeats: int = 3, warmup: int = 1, device: str = "cpu",
                         json_path=None, seed: int = 0, bidirectional: bool = False, match: str | None = None,
                         threads: int = 0) -> list[dict]:
    """Time each stack's training step and inference. ``bidirectional``: the stacks as the classifiers and
    denoisers use them (every mixer in ``Bidirectional``; a non-causal Transformer). ``match``: a model of
    ``models`` whose parameter count every stack is sized to (``matched_stack_configs``). ``threads`` > 0
    sets torch's intra-op threads for the run."""
    if match is not None and match not in models:
        raise ValueError(f"match={match!r} must be one of the timed models {tuple(models)}")
    dev = torch.device(device)
    max_len = max(l for _, l in (*train_cases, *infer_cases))
    if match is not None:
        configs = matched_stack_configs(models, match, d_model, n_layers, bidirectional, max_len)
    else:
        configs = {m: stack_config(m, d_model, n_layers, bidirectional, max_len) for m in models}
    old_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    records = []
    try:
        for model in models:
            torch.manual_seed(seed)
            cfg = configs[model]
            net = build_backbone(cfg).to(dev)
            extra = {"params": count_parameters(net), "n_layers": n_layers, "bidirectional": bidirectional,
                     "ff_dim": (cfg.ff_dim or 4 * cfg.d_model) if cfg.name == "transformer" else None,
                     "threads": torch.get_num_threads()}
            for mode, cases in (("train", train_cases), ("infer", infer_cases)):
                records += [{**r, **extra} for r in _time_cases(net, model, cfg.d_model, cases, mode, dev,
                                                                  repeats, warmup)]
    finally:
        torch.set_num_threads(old_threads)
    _add_ratios(records, match)
    print_table(records, ["model", "mode", "batch", "seq_len", "d_model", "params", "seconds", "tokens_per_s",
                          "peak_mem_mb", "speedup_vs_transformer"] + (["vs_reference"] if match else []))
    write_json(json_path, records)
    return records
