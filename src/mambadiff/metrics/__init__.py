"""Metrics: generation (DiffuSeq definitions), BERTScore, classification; reading prediction files.

Public API:
    generation: sentence_bleu, rouge_l, dist_n, length_diffuseq, length_words, self_bleu, div_n,
                mbr_select, copy_rate, repeat_rates, corpus_sacrebleu, generation_metrics, comparable_texts,
                diversity_metrics, evaluate_predictions
    tables:     results_table, results_markdown
    parallel:   RowPool (scoring many rows on every core)
    bertscore:  bertscore_f1, resolve_model, BertScoreUnavailableError
    classification: accuracy, macro_f1, confusion_matrix, per_class_scores, classification_metrics
    io:         read_predictions, read_prediction_files, PredictionFileError, bert_roundtrip,
                atomic_write_text, atomic_write_json
"""
from mambadiff.metrics.classification import (accuracy, classification_metrics, confusion_matrix, macro_f1,
                                              per_class_scores)
from mambadiff.metrics.generation import (comparable_texts, copy_rate, corpus_sacrebleu, dist_n, div_n,
                                          diversity_metrics, evaluate_predictions, generation_metrics,
                                          length_diffuseq, length_words, mbr_select, repeat_rates, rouge_l,
                                          self_bleu, sentence_bleu)
from mambadiff.metrics.io import (PredictionFileError, atomic_write_json, atomic_write_text, bert_roundtrip,
                                  read_prediction_files, read_predictions)
from mambadiff.metrics.tables import results_markdown, results_table

__all__ = [
    "accuracy", "classification_metrics", "confusion_matrix", "macro_f1", "per_class_scores",
    "comparable_texts", "copy_rate", "corpus_sacrebleu", "dist_n", "div_n", "diversity_metrics",
    "evaluate_predictions",
    "generation_metrics", "length_diffuseq", "length_words", "mbr_select", "repeat_rates", "results_markdown",
    "results_table", "rouge_l", "self_bleu", "sentence_bleu",
    "PredictionFileError", "atomic_write_json", "atomic_write_text", "bert_roundtrip",
    "read_prediction_files", "read_predictions",
]
