"""`mambadiff demo`: train MambaDiff on the built-in corpus, sample the held-out pairs, and score
them against the copy-source baseline (the number a paraphrase model has to beat)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from tabulate import tabulate

from mambadiff.config import load_config
from mambadiff.data.seq2seq import load_seq2seq_split
from mambadiff.train.checkpoint import atomic_write_json, atomic_write_text, latest_checkpoint, read_json

from .paraphrase import generate
from .seq2seq import Seq2SeqConfig, prepare_data_folder, train_seq2seq

METRIC_COLUMNS = [("bleu", "BLEU"), ("rouge_l", "ROUGE-L"), ("dist1", "dist-1"), ("ibleu", "iBLEU"),
                  ("copy_rate", "copy rate"), ("repeat_rate", "repeats"), ("len_words", "length")]


def run_demo(run_dir: str = "runs/demo", config: str = "demo", overrides: list[str] | None = None,
             json_path: str | None = None, resume: bool = False, progress: bool = True, n_examples: int = 4) -> dict:
    from mambadiff.metrics.generation import comparable_texts, generation_metrics

    cfg = load_config(Seq2SeqConfig, config, [f"run_dir={run_dir}", *(overrides or [])])
    t0 = time.perf_counter()
    ckpt = latest_checkpoint(run_dir)
    done = ckpt is not None and read_json(ckpt / "trainer_state.json")["step"] >= cfg.train.steps
    if done and not resume:
        print(f"{run_dir} already holds a finished demo model: sampling from it (delete the folder to retrain)")
    result, model, tok = train_seq2seq(cfg, resume=ckpt is not None, progress=progress)
    cfg = load_config(Seq2SeqConfig, Path(run_dir) / "config.json")  # as trained (vocab size filled in)
    train_seconds = time.perf_counter() - t0

    data_folder = prepare_data_folder(cfg)
    test = load_seq2seq_split(data_folder, "test", tok, cfg.data.seq_len, layout=cfg.data.layout,
                              limit=cfg.sample.limit or None)
    t1 = time.perf_counter()
    records = generate(model.eval(), tok, cfg, test, progress=progress)
    sample_seconds = time.perf_counter() - t1
    atomic_write_text(Path(run_dir) / "samples_test.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    outputs = [r["recover"] for r in records]
    steps = cfg.sample.for_process(cfg.diffusion.process).steps or cfg.diffusion.steps
    # the rows hold the data's texts: scored in the form the model writes, as `mambadiff evaluate` does
    refs = comparable_texts([r["reference"] for r in records])
    srcs = comparable_texts([r["source"] for r in records])
    model_m = generation_metrics(outputs, refs, srcs)
    copy_m = generation_metrics(srcs, refs, srcs)
    rows = [[name] + [m.get(k, float("nan")) for k, _ in METRIC_COLUMNS]
            for name, m in ((f"MambaDiff ({cfg.model.backbone.name}, {cfg.diffusion.process})", model_m), ("copy source", copy_m))]
    print()
    print(tabulate(rows, headers=["", *[h for _, h in METRIC_COLUMNS]], floatfmt=".4f"))
    print()
    for r in records[:n_examples]:
        print(f"  source:    {r['source']}\n  reference: {r['reference']}\n  output:    {r['recover']}\n")
    beats = model_m["bleu"] > copy_m["bleu"]
    print(f"BLEU {model_m['bleu']:.4f} vs copy-source {copy_m['bleu']:.4f}: "
          f"{'beats' if beats else 'does NOT beat'} the copy baseline "
          f"({len(records)} held-out pairs, {steps} sampling steps; "
          f"training {train_seconds:.0f}s, sampling {sample_seconds:.0f}s)")
    summary = {"model": model_m, "copy_source": copy_m, "beats_copy_bleu": beats,
               "backbone": cfg.model.backbone.name, "train_steps": result.step,
               "train_seconds": train_seconds, "train_tokens_per_s": result.tokens_per_s,
               "sample_seconds": sample_seconds, "sampling_steps": steps,
               "n_examples": len(records), "run_dir": str(run_dir)}
    if json_path:
        atomic_write_json(json_path, summary)
    return summary
