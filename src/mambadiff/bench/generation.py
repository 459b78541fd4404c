"""`mambadiff bench generation`: how fast each backbone writes tokens, and how that changes with length.

Glossary: b batch, l prompt length, v vocab.

For every backbone and batch size, one greedy generation of ``max(lengths)`` tokens after a short
prompt is timed step by step (`CausalLM.step`, the recurrent path; the Transformer with its KV cache).
Each record is one (model, batch, length): ``tokens_per_s`` is b tokens over the mean time of the 64
steps before that length (the speed *at* that length, so a flat line is constant time per token),
and ``peak_mb`` the memory the whole generation grew by. Then prefill: a ``prefill`` long prompt
through ``CausalLM.prefill`` against the plain parallel forward (``prefill_vs_forward`` near 1 means
the prompt costs what training's forward costs).

The peer (``--hf``): transformers' ``MambaForCausalLM`` on the same weights (saved with
``save_hf_mamba``), prefill + greedy generation of a 1,024-token prompt, its tokens checked equal to ours.
"""
from __future__ import annotations

import time

import torch

from mambadiff.models.lm import CausalLM, CausalLMConfig

from .common import peak_growth_mb, print_table, write_json
from .layers import stack_config

DEFAULT_MODELS = ("mamba2", "mamba", "s4d", "s4", "h3", "transformer", "lstm")
WINDOW = 64  # steps averaged for the speed at a length
COLUMNS = ["model", "batch", "length", "tokens_per_s", "ms_per_step", "peak_mb", "params"]


def build_lm(name: str, d_model: int, n_layers: int, vocab: int, max_len: int, seed: int = 0) -> CausalLM:
    torch.manual_seed(seed)
    backbone = stack_config(name, d_model, n_layers, bidirectional=False, max_len=max_len)
    return CausalLM(CausalLMConfig(vocab_size=vocab, backbone=backbone)).eval()


@torch.inference_mode()
def step_times(model: CausalLM, batch: int, steps: int, prompt_len: int = 8, seed: int = 0) -> list[float]:
    """Seconds of each of ``steps`` greedy steps after a random prompt of ``prompt_len`` tokens."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, model.cfg.vocab_size, (batch, prompt_len), generator=g)  # (b, l)
    logits, cache = model.prefill(prompt, capacity=prompt_len + steps)  # (b, v)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        logits = model.step(logits.argmax(-1), cache)  # (b, v)
        times.append(time.perf_counter() - t0)
    return times


def generation_records(name: str, model: CausalLM, batches, lengths) -> list[dict]:
    """One record per (batch, length) of ``model``."""
    records = []
    params = sum(p.numel() for p in model.backbone.parameters())
    for b in batches:
        holder: dict = {}
        peak = peak_growth_mb(lambda: holder.update(times=step_times(model, b, max(lengths))), torch.device("cpu"))
        times = holder["times"]
        for length in lengths:
            window = times[max(0, length - WINDOW):length]  # (WINDOW,) the steps before `length`
            ms = 1000 * sum(window) / len(window)
            records.append({"model": name, "batch": b, "length": length, "tokens_per_s": b / (ms / 1000),
                            "ms_per_step": ms, "peak_mb": peak, "params": params})
    return records


@torch.inference_mode()
def prefill_record(name: str, model: CausalLM, length: int, repeats: int = 3) -> dict:
    """Seconds of ``prefill`` and of the parallel forward on one prompt of ``length`` tokens."""
    prompt = torch.randint(0, model.cfg.vocab_size, (1, length))  # (1, l)

    def best(fn) -> float:
        fn()  # warm-up
        return min(_timed(fn) for _ in range(repeats))

    pre, fwd = best(lambda: model.prefill(prompt)), best(lambda: model(prompt))
    return {"model": name, "prefill_len": length, "prefill_s": pre, "forward_s": fwd, "prefill_vs_forward": pre / fwd}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def hf_peer(model: CausalLM, prompt_len: int = 1024, new_tokens: int = 64, workdir=None) -> dict:
    """Ours against transformers' MambaForCausalLM on the same weights: prefill + greedy generation."""
    import tempfile

    import transformers

    from mambadiff.models.hf_mamba import save_hf_mamba
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        save_hf_mamba(model, tmp)
        hf_cls = transformers.Mamba2ForCausalLM if model.cfg.backbone.name == "mamba2" else transformers.MambaForCausalLM
        hf = hf_cls.from_pretrained(tmp).eval()
    prompt = torch.randint(0, model.cfg.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    ours = model.generate(prompt, new_tokens)[0]
    t_ours = time.perf_counter() - t0
    with torch.inference_mode():
        t0 = time.perf_counter()
        theirs = hf.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=0)[0, prompt_len:].tolist()
        t_hf = time.perf_counter() - t0
    return {"model": model.cfg.backbone.name, "prompt_len": prompt_len, "new_tokens": new_tokens, "ours_s": t_ours,
            "transformers_s": t_hf, "speedup": t_hf / t_ours, "same_greedy_tokens": ours == theirs}


def run_generation_benchmark(models=DEFAULT_MODELS, batches=(1, 16, 64), lengths=(256, 1024, 4096, 8192),
                             d_model: int = 512, n_layers: int = 6, vocab: int = 256, prefill: int = 4096,
                             threads: int = 0, hf: bool = False, hf_prompt: int = 1024, json_path=None) -> dict:
    """Every backbone's generation speed and memory (and prefill, and the transformers peer): a table
    printed, ``{"generation", "prefill", "peer"}`` written to ``json_path``."""
    if threads:
        torch.set_num_threads(threads)
    lengths = sorted(set(lengths))
    records, prefills, peers = [], [], []
    for name in models:
        model = build_lm(name, d_model, n_layers, vocab, max_len=max(prefill, hf_prompt, 8))
        records += generation_records(name, model, batches, lengths)
        if prefill:
            prefills.append(prefill_record(name, model, prefill))
        if hf and name in ("mamba", "mamba2"):
            if name == "mamba2":  # HF has one eps for every norm: give the blocks the gated norm's
                model = build_lm(name, d_model, n_layers, vocab, max(prefill, hf_prompt, 8))
                model.cfg.backbone.norm_eps = model.cfg.backbone.mamba2.norm_eps
                model = CausalLM(model.cfg).eval()
            peers.append(hf_peer(model, hf_prompt))
    ref = {(r["batch"], r["length"]): r["tokens_per_s"] for r in records if r["model"] == "transformer"}
    for r in records:
        if (r["batch"], r["length"]) in ref:
            r["vs_transformer"] = r["tokens_per_s"] / ref[(r["batch"], r["length"])]
    print_table(records, COLUMNS + ["vs_transformer"], floatfmt=".4g")
    if prefills:
        print()
        print_table(prefills, list(prefills[0]), floatfmt=".4g")
    if peers:
        print()
        print_table(peers, list(peers[0]), floatfmt=".4g")
    result = {"d_model": d_model, "n_layers": n_layers, "threads": torch.get_num_threads(), "generation": records,
              "prefill": prefills, "peer": peers}
    write_json(json_path, result)
    return result
