"""Whole-stack benchmark: 6-layer Mamba, Mamba-2, S4D, S4, Transformer and LSTM stacks side by side
(and H3 on request: ``--model h3``).

Glossary: b batch, l length, d model width.

Two modes, each timed in the same run so the ratios are comparable:
- ``train``: one training step (forward, backward of a mean loss, AdamW step) on x (b, l, d);
- ``infer``: forward only under ``torch.inference_mode``.
Mamba-1 can be listed with a scan backend, e.g. ``mamba:reference`` or ``mamba:cpu``.
S4's kernel length (l_max) is set to the longest case. H3 is not in the default list: its diagonal SSM
convolves (b, h, p, p, l) key-value products (p = 8: 8 d values per position, several GB per layer
for the 64 x 1024 training case), so time it on smaller cases, e.g. ``--model h3 --train 16x256``.
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


def run_layers_benchmark(models=DEFAULT_MODELS, train_cases=((64, 128), (64, 1024)),
                         infer_cases=((8, 128), (8, 1024), (8, 2048), (8, 4096)), d_model: int = 128,
                         n_layers: int = 6, repeats: int = 3, warmup: int = 1, device: str = "cpu",
                         json_path=None, seed: int = 0) -> list[dict]:
    dev = torch.device(device)
    records = []
    max_len = max(l for _, l in (*train_cases, *infer_cases))
    for model in models:
        torch.manual_seed(seed)
        net = build_backbone(stack_config(model, d_model, n_layers, max_len=max_len)).to(dev)
        params = count_parameters(net)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        for mode, cases in (("train", train_cases), ("infer", infer_cases)):
            for b, l in cases:
                x = torch.randn(b, l, d_model, device=dev)

                def train_step():
                    opt.zero_grad(set_to_none=True)
                    net(x).float().pow(2).mean().backward()
                    opt.step()

                def infer_step():
                    with torch.inference_mode():
                        net(x)

                fn = train_step if mode == "train" else infer_step
                t0 = time.perf_counter()
                try:
                    seconds, peak = time_and_peak(fn, dev, repeats=repeats, warmup=warmup)
                except (RuntimeError, MemoryError) as e:  # e.g. out of memory at long l
                    records.append({"model": model, "mode": mode, "batch": b, "seq_len": l, "d_model": d_model,
                                    "params": params, "error": str(e).splitlines()[0][:120]})
                    continue
                records.append({"model": model, "mode": mode, "batch": b, "seq_len": l, "d_model": d_model,
                                "n_layers": n_layers, "params": params, "seconds": seconds,
                                "tokens_per_s": b * l / seconds, "peak_mem_mb": peak,
                                "bench_wall_s": time.perf_counter() - t0})
    # ratios against the Transformer at the same (mode, batch, seq_len), side by side
    ref = {(r["mode"], r["batch"], r["seq_len"]): r["seconds"] for r in records
           if r["model"] == "transformer" and "seconds" in r}
    for r in records:
        key = (r["mode"], r["batch"], r["seq_len"])
        if "seconds" in r and key in ref:
            r["speedup_vs_transformer"] = ref[key] / r["seconds"]
    print_table(records, ["model", "mode", "batch", "seq_len", "params", "seconds", "tokens_per_s",
                          "peak_mem_mb", "speedup_vs_transformer"])
    write_json(json_path, records)
    return records
