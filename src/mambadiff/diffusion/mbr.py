"""Minimum Bayes risk (MBR) selection among sampled candidates, DiffuSeq's rule.

DiffuSeq (``scripts/eval_seq2seq.py --mbr``) decodes each example S times, collects the S cleaned
strings of an example (duplicates kept, in seed order) and picks ``argmax_i sum_{j != i} BLEU(c_i, c_j)``
with nltk's ``sentence_bleu`` on whitespace tokens and ``SmoothingFunction().method4``; ties go to the
lowest index. The BLEU definition lives in ``mambadiff.metrics.generation``, and so does the rule:
this module re-exports it for the samplers.
"""
from mambadiff.metrics.generation import mbr_scores, mbr_select

__all__ = ["mbr_scores", "mbr_select"]
