"""Decoding an autoregressive paraphraser: ``[CLS] source [SEP]`` through the parallel path, then the
target token by token (greedy, or a beam) until ``[SEP]``; the output records are those of
`mambadiff generate` (``source``, ``reference``, ``recover``), so `mambadiff evaluate` and the
benchmarks read them the same way.

Glossary: b sources in a batch.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch

from mambadiff.data.seq2seq import Seq2SeqDataset
from mambadiff.data.tokenizer import TextTokenizer
from mambadiff.models.lm import CausalLM

from .config import ARDecodeConfig

__all__ = ["decode_targets", "paraphrase_dataset", "prompt_ids"]


def prompt_ids(dataset: Seq2SeqDataset) -> tuple[list[list[int]], list[list[int]]]:
    """Each pair's ``[CLS] source [SEP]`` and target tokens (no [SEP]), as laid out (truncated as in
    training)."""
    t = dataset.tensors()
    ids, input_mask = t["input_ids"], t["input_mask"]  # (N, l) each
    cond = (input_mask == 0).sum(1)  # (N,) the compact layout's condition length
    real = t["attention_mask"].sum(1)  # (N,) condition + target + [SEP]
    rows = [row.tolist() for row in ids]
    return ([row[:c] for row, c in zip(rows, cond.tolist())],
            [row[c:r - 1] for row, c, r in zip(rows, cond.tolist(), real.tolist())])


@torch.no_grad()
def decode_targets(model: CausalLM, tok: TextTokenizer, prompts: Sequence[Sequence[int]], settings: ARDecodeConfig,
                   max_new_tokens: int) -> list[str]:
    """The decoded target of each prompt (its closing [SEP] and any special token dropped)."""
    banned = [tok.pad_id, tok.cls_id, tok.mask_id]
    if settings.beam == 1:
        outs = model.generate(list(prompts), max_new_tokens, stop_ids=[tok.sep_id], pad_id=tok.pad_id,
                              banned_ids=banned, no_repeat_ngram=settings.no_repeat_ngram)
    else:
        outs = model.beam_search(list(prompts), settings.beam, max_new_tokens, tok.sep_id,
                                 length_penalty=settings.length_penalty, pad_id=tok.pad_id, banned_ids=banned,
                                 no_repeat_ngram=settings.no_repeat_ngram)
    return [tok.decode(out, skip_special=True) for out in outs]


def paraphrase_dataset(model: CausalLM, tok: TextTokenizer, dataset: Seq2SeqDataset, settings: ARDecodeConfig,
                       seq_len: int, progress: bool = False) -> Iterator[list[dict[str, Any]]]:
    """Records of consecutive batches of ``settings.batch_size`` pairs (the first ``settings.limit``)."""
    from tqdm.auto import tqdm

    prompts, _ = prompt_ids(dataset)
    n = min(len(prompts), settings.limit) if settings.limit else len(prompts)
    longest = settings.max_new_tokens or seq_len
    model.eval()
    bar = tqdm(total=n, desc="decode", unit="pair", disable=not progress)
    try:
        for start in range(0, n, settings.batch_size):
            batch = prompts[start:min(start + settings.batch_size, n)]
            outputs = decode_targets(model, tok, batch, settings, longest)
            records = []
            for j, out in enumerate(outputs):
                # the data's own texts, as `mambadiff generate` writes them (the metrics put them in
                # the tokenizer's form before scoring)
                records.append({"source": dataset.sources[start + j], "reference": dataset.targets[start + j],
                                "recover": out})
            bar.update(len(batch))
            yield records
    finally:
        bar.close()
