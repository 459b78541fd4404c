"""Minimum Bayes risk (MBR) selection among sampled candidates, DiffuSeq's rule.

DiffuSeq (``scripts/eval_seq2seq.py --mbr``) decodes each example S times (one output file per
seed), collects the S cleaned strings of an example (special tokens removed, stripped; duplicates
kept, in seed-file order) and picks ``argmax_i sum_{j != i} BLEU(hyp=c_i, ref=c_j)`` with nltk's
``sentence_bleu`` on whitespace tokens and ``SmoothingFunction().method4``. Ties go to the lowest
index (``np.argmax``). Cleaning the strings is the caller's job (``mambadiff.metrics``), so the
candidates passed here must already be in the form DiffuSeq scores.
"""
from __future__ import annotations

import warnings
from typing import Sequence


def _bleu_fn():
    try:
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("mbr_select needs nltk: pip install 'mambadiff[eval]'") from err
    smoothing = SmoothingFunction().method4

    def bleu(hypothesis: str, reference: str) -> float:
        return float(sentence_bleu([reference.split()], hypothesis.split(), smoothing_function=smoothing))

    return bleu


def mbr_scores(candidates: Sequence[str]) -> list[float]:
    """For one example, each candidate's summed sentence-BLEU against all the others."""
    bleu = _bleu_fn()
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nltk warns on zero n-gram overlaps
        for i, hyp in enumerate(candidates):
            scores.append(sum(bleu(hyp, ref) for j, ref in enumerate(candidates) if j != i))
    return scores


def mbr_select(candidates: Sequence[Sequence[str]]) -> list[int]:
    """Per example (a list of S candidate strings), the index of DiffuSeq's MBR choice."""
    if isinstance(candidates, str) or not isinstance(candidates, Sequence):
        raise ValueError("mbr_select: candidates must be a list (examples) of lists of strings")
    chosen = []
    for k, cands in enumerate(candidates):
        if isinstance(cands, str) or not isinstance(cands, Sequence) or len(cands) == 0:
            raise ValueError(f"mbr_select: candidates[{k}] must be a non-empty list of strings")
        for i, c in enumerate(cands):
            if not isinstance(c, str):
                raise ValueError(f"mbr_select: candidates[{k}][{i}] must be a str, got {type(c).__name__}")
        scores = mbr_scores(cands)
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))  # first index wins ties
        chosen.append(best)
    return chosen
