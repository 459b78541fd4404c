"""Generation metrics with DiffuSeq's definitions (Shark-NLP/DiffuSeq, scripts/eval_seq2seq.py).

All inputs are strings already cleaned of special tokens (see `mambadiff.metrics.io`).
`evaluate_predictions` scores references and sources in the form the models write
(`comparable_texts`: lower case, punctuation split off as decoding does, every word kept), since
generated rows hold them as the data gives them; a DiffuSeq file's texts are in that form already.
Many rows are scored on every core (`mambadiff.metrics.parallel`), with the same results.

- BLEU: nltk sentence-level BLEU-4 of the whitespace-split output against the single whitespace-split
  reference, smoothing method 4 (nltk is pinned to 3.10.4: method 4's result differs across releases).
  Reported as the mean over sentences, in [0, 1].
- ROUGE-L: F1 of the longest common subsequence per sentence, tokenised as DiffuSeq's torchmetrics
  ROUGEScore does by default (lower-case, non-alphanumerics to spaces, no stemming); computed with
  the `rouge-score` package, whose default tokeniser is the same. Mean over sentences.
- dist-1: distinct unigrams / unigrams within each output (0 for an empty output), mean over outputs.
- length: DiffuSeq counts `len(output.split(' '))` on the cleaned string, which still holds the
  spaces of the deleted [PAD]/[SEP] tokens, so it counts leftover padding too (`len_diffuseq`).
  `len_words` is the plain whitespace word count.
- self-BLEU (several candidates per example): mean BLEU over ordered pairs i < j of candidate i
  against candidate j; 0 for a single candidate. Mean over examples.
- div-4: distinct 4-grams / 4-grams pooled over all candidates of an example. Mean over examples.
- MBR: per example, the candidate whose BLEU against each other candidate, summed, is highest
  (first one on ties), as DiffuSeq's selectBest.
- Paraphrase-aware: BLEU of the output against the source (`bleu_src`), iBLEU = alpha*BLEU(out, ref)
  - (1-alpha)*BLEU(out, src) (sentence-level, then averaged), copy rate = share of outputs equal to
  their source after lower-casing and collapsing whitespace.
- sacreBLEU: corpus-level BLEU from `sacrebleu` (its default 13a tokenisation), on its 0-100 scale.
- Repeats (a degenerate-decoding check, not in DiffuSeq): on whitespace tokens, a token is a repeat
  when it equals the token right before it ("the the"). `repeat_rate` = share of outputs with at
  least one repeat; `repeat_token_rate` = repeats / tokens, pooled over all outputs (0 with no tokens).
  `ngram_repeat_rate` = share of outputs in which some word n-gram with n >= 2 occurs twice ("money
  online without investment without investment"): a repeated n-gram repeats its first bigram, so a
  repeated bigram (overlapping occurrences included, "a a a") is the test. The evaluate JSON also gives
  the references' own rate (`reference_ngram_repeat_rate`): natural text repeats phrases too.
"""
from __future__ import annotations

import re
import time
import warnings
from typing import Sequence

import numpy as np

from mambadiff.metrics.io import comparable_text
from mambadiff.metrics.parallel import RowPool

__all__ = [
    "sentence_bleu", "rouge_l", "dist_n", "distinct_n_pooled", "length_diffuseq", "length_words",
    "self_bleu", "div_n", "mbr_select", "normalize_for_copy", "copy_rate", "corpus_sacrebleu",
    "repeated_tokens", "has_repeated_ngram", "repeat_rates", "generation_metrics", "comparable_texts", "diversity_metrics",
    "evaluate_predictions", "METRIC_LABELS", "SCHEMA",
]

# key -> (table label, higher is better?) ; the order is the order of the printed table
METRIC_LABELS: dict[str, tuple[str, bool | None]] = {
    "bleu": ("BLEU", True),
    "rouge_l": ("ROUGE-L", True),
    "bertscore_f1": ("BERTScore", True),
    "dist1": ("dist-1", True),
    "len_diffuseq": ("len (DiffuSeq)", None),
    "len_words": ("len (words)", None),
    "sacrebleu": ("sacreBLEU (0-100)", True),
    "bleu_src": ("BLEU vs src", False),
    "ibleu": ("iBLEU", True),
    "copy_rate": ("copy rate", False),
    "repeat_rate": ("repeats (outputs)", False),
    "repeat_token_rate": ("repeats (tokens)", False),
    "ngram_repeat_rate": ("repeated n-grams", False),
    "self_bleu": ("self-BLEU", False),
    "div4": ("div-4", True),
}


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ImportError(f"generation metrics need '{module.split('.')[0]}'; "
                          "install with pip install -e '.[eval]'") from None


_BLEU = None  # (nltk sentence_bleu, smoothing method 4), loaded on first use
_SCORER = None


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """DiffuSeq's BLEU: nltk sentence BLEU-4, one reference, whitespace tokens, smoothing method 4."""
    global _BLEU
    if _BLEU is None:
        mod = _require("nltk.translate.bleu_score")
        _BLEU = (mod.sentence_bleu, mod.SmoothingFunction().method4)
    bleu, smooth = _BLEU
    with warnings.catch_warnings():  # nltk warns on zero n-gram overlaps; the score is still defined
        warnings.simplefilter("ignore")
        return float(bleu([reference.split()], hypothesis.split(), smoothing_function=smooth))


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F1 with the default (torchmetrics == rouge-score) tokenisation, no stemming."""
    global _SCORER
    if _SCORER is None:
        _SCORER = _require("rouge_score.rouge_scorer").RougeScorer(["rougeL"], use_stemmer=False)
    return float(_SCORER.score(reference, hypothesis)["rougeL"].fmeasure)


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def dist_n(text: str, n: int = 1) -> float:
    """Distinct n-grams / n-grams within one text (0 when it has no n-gram)."""
    grams = _ngrams(text.split(), n)
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_n_pooled(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / n-grams pooled over several texts (0 when there is none)."""
    grams = [g for t in texts for g in _ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def div_n(candidates: Sequence[str], n: int = 4) -> float:
    """DiffuSeq's div-n of one example's candidate set (pooled distinct n-grams)."""
    return distinct_n_pooled(candidates, n)


def length_diffuseq(text: str) -> int:
    """DiffuSeq's length: pieces of `text.split(' ')`, counting the spaces left by deleted tokens."""
    return len(text.split(" "))


def length_words(text: str) -> int:
    return len(text.split())


def self_bleu(candidates: Sequence[str]) -> float:
    """Mean BLEU of candidate i against candidate j over pairs i < j (0 for fewer than two)."""
    scores = [sentence_bleu(candidates[i], candidates[j])
              for i in range(len(candidates)) for j in range(i + 1, len(candidates))]
    return float(np.mean(scores)) if scores else 0.0


def mbr_scores(cands: Sequence[str]) -> list[float]:
    """For one example, each candidate's summed sentence-BLEU against all the other candidates."""
    return [sum(sentence_bleu(c, other) for j, other in enumerate(cands) if j != i) for i, c in enumerate(cands)]


def mbr_select(candidates: Sequence[Sequence[str]]) -> list[int]:
    """Minimum-Bayes-risk selection with BLEU as the utility, as DiffuSeq's selectBest.

    `candidates[i]` are the candidate outputs of example i (e.g. one per seed). Returns, per example,
    the index of the candidate with the highest sum of BLEU(candidate, other) over the other
    candidates; ties go to the first (numpy's argmax in DiffuSeq). A single candidate gives index 0.
    """
    if isinstance(candidates, str) or not isinstance(candidates, Sequence):
        raise ValueError("candidates: expected a list (examples) of lists of strings")
    out = []
    for i, cands in enumerate(candidates):
        if isinstance(cands, str) or not isinstance(cands, Sequence) or len(cands) == 0:
            raise ValueError(f"candidates[{i}]: expected a non-empty list of strings, got {cands!r:.80}")
        for j, c in enumerate(cands):
            if not isinstance(c, str):
                raise ValueError(f"candidates[{i}][{j}]: expected a str, got {type(c).__name__}")
        out.append(int(np.argmax(mbr_scores(list(cands)))))
    return out


_WS = re.compile(r"\s+")


def normalize_for_copy(text: str) -> str:
    return _WS.sub(" ", text.lower()).strip()


def copy_rate(outputs: Sequence[str], sources: Sequence[str]) -> float:
    """Share of outputs equal to their source after lower-casing and collapsing whitespace."""
    _same_length(outputs, sources, "sources")
    if not outputs:
        return 0.0
    return sum(normalize_for_copy(o) == normalize_for_copy(s) for o, s in zip(outputs, sources)) / len(outputs)


def repeated_tokens(text: str) -> int:
    """Whitespace tokens of ``text`` equal to the token right before them ("a a a b" has 2)."""
    tokens = text.split()
    return sum(a == b for a, b in zip(tokens, tokens[1:]))


def has_repeated_ngram(text: str) -> bool:
    """Whether some whitespace-word n-gram with n >= 2 occurs twice in ``text`` (its first bigram then
    occurs twice, possibly overlapping: "a a a")."""
    tokens = text.split()
    bigrams = list(zip(tokens, tokens[1:]))
    return len(set(bigrams)) < len(bigrams)


def repeat_rates(outputs: Sequence[str]) -> dict[str, float]:
    """``repeat_rate``: share of outputs with a repeated adjacent token; ``repeat_token_rate``: repeated
    tokens / tokens over all outputs (0 when there are none); ``ngram_repeat_rate``: share of outputs
    with a repeated word n-gram, n >= 2 (`has_repeated_ngram`)."""
    if isinstance(outputs, str):
        raise ValueError("outputs: expected a list of strings, got a single string")
    repeats = [repeated_tokens(o) for o in outputs]
    tokens = sum(length_words(o) for o in outputs)
    n = len(outputs)
    return {"repeat_rate": sum(r > 0 for r in repeats) / n if n else 0.0,
            "repeat_token_rate": sum(repeats) / tokens if tokens else 0.0,
            "ngram_repeat_rate": sum(map(has_repeated_ngram, outputs)) / n if n else 0.0}


def corpus_sacrebleu(outputs: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU from sacrebleu (13a tokenisation, 0-100)."""
    sacrebleu = _require("sacrebleu")
    _same_length(outputs, references, "references")
    return float(sacrebleu.corpus_bleu(list(outputs), [list(references)]).score)


def _same_length(a: Sequence, b: Sequence, name: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name}: expected {len(a)} strings (one per output), got {len(b)}")


def _sentence_scores(rows: list[tuple[str, str, str | None]]) -> list[tuple]:
    """(bleu, rouge_l, dist1, len_diffuseq, len_words, bleu_src or None) of each (output, reference,
    source or None): the per-sentence work of `generation_metrics`, one chunk at a time (`RowPool`)."""
    return [(sentence_bleu(o, r), rouge_l(o, r), dist_n(o, 1), length_diffuseq(o), length_words(o),
             None if s is None else sentence_bleu(o, s)) for o, r, s in rows]


def _comparable_texts(texts: list[str]) -> list[str]:
    return [comparable_text(t) for t in texts]


def comparable_texts(texts: Sequence[str], pool: RowPool | None = None, desc: str = "") -> list[str]:
    """References or sources in the form the models write (`mambadiff.metrics.io.comparable_text`:
    lower case, punctuation split off as decoding does, every word kept): generated rows hold them as
    the data gives them, and a cased reference would cost an uncased model's every capital. A text
    that is already decoded output (a DiffuSeq file's) keeps its words."""
    return (pool or RowPool(workers=1)).map(_comparable_texts, texts, desc, progress=False)  # quick: no bar


def generation_metrics(outputs: Sequence[str], references: Sequence[str],
                       sources: Sequence[str] | None = None, alpha: float = 0.8,
                       per_sentence: bool = False, pool: RowPool | None = None, desc: str = "score") -> dict:
    """All single-output metrics as means over examples (see the module docstring), of the strings as
    given: score generated rows, whose references and sources are the texts of the data, after
    `comparable_texts` (as `evaluate_predictions` does).

    With `sources`, adds bleu_src, ibleu and copy_rate. With `per_sentence`, also returns the
    per-example lists under "per_sentence". `pool` (`RowPool`) scores many rows on several cores, with
    a progress bar named `desc` when it shows progress; the values are the same without it.
    """
    if isinstance(outputs, str) or isinstance(references, str):
        raise ValueError("outputs/references: expected lists of strings, got a single string")
    _same_length(outputs, references, "references")
    if sources is not None:
        _same_length(outputs, sources, "sources")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha}")
    n = len(outputs)
    if n == 0:
        raise ValueError("outputs: expected at least one example")
    src = sources if sources is not None else [None] * n
    scores = (pool or RowPool(workers=1)).map(_sentence_scores, list(zip(outputs, references, src)), desc)
    bleu, rouge, dist1, len_ds, len_w, bleu_src = (list(column) for column in zip(*scores))
    res: dict = {
        "n": n,
        "bleu": float(np.mean(bleu)),
        "rouge_l": float(np.mean(rouge)),
        "dist1": float(np.mean(dist1)),
        "len_diffuseq": float(np.mean(len_ds)),
        "len_words": float(np.mean(len_w)),
        "sacrebleu": corpus_sacrebleu(outputs, references),
        **repeat_rates(outputs),
    }
    per = {"bleu": bleu, "rouge_l": rouge, "dist1": dist1, "len_diffuseq": len_ds, "len_words": len_w}
    if sources is not None:
        res["bleu_src"] = float(np.mean(bleu_src))
        res["ibleu"] = alpha * res["bleu"] - (1.0 - alpha) * res["bleu_src"]
        res["copy_rate"] = copy_rate(outputs, sources)
        per["bleu_src"] = bleu_src
    if per_sentence:
        res["per_sentence"] = per
    return res


def _candidate_scores(candidates: list[list[str]]) -> list[tuple[float, float, int]]:
    """(self-BLEU, div-4, MBR pick) of each example's candidates (one chunk, see `RowPool`)."""
    return [(self_bleu(c), div_n(c, 4), int(np.argmax(mbr_scores(c)))) for c in candidates]


def diversity_metrics(candidates: Sequence[Sequence[str]], n: int = 4) -> dict:
    """self-BLEU and div-n over each example's candidate set, averaged over examples."""
    if not candidates:
        raise ValueError("candidates: expected at least one example")
    sb = [self_bleu(list(c)) for c in candidates]
    dv = [div_n(list(c), n) for c in candidates]
    return _diversity(sb, dv, candidates, n)


def _diversity(sb: list[float], dv: list[float], candidates: Sequence[Sequence[str]], n: int = 4) -> dict:
    return {"self_bleu": float(np.mean(sb)), f"div{n}": float(np.mean(dv)),
            "candidates_min": int(min(len(c) for c in candidates)),
            "candidates_max": int(max(len(c) for c in candidates))}


# ---- evaluating prediction files ------------------------------------------------------------------
# The JSON written by `mambadiff evaluate --json` and read by `mambadiff report` (RUN_DIR/eval/step_*.json):
# {
#   "schema": "mambadiff.evaluate/1",
#   "step": int | null,              training step of the checkpoint that produced the files, if known
#   "files": [str, ...],             the prediction files, in the order given
#   "n_examples": int,
#   "candidates": {"min": int, "max": int},   candidate outputs per example over all files
#   "alpha": float,                  iBLEU weight
#   "bertscore": {"name", "path", "num_layers"} | null,
#   "model":       {metrics},        one file: its `recover`; several: the mean over files of each metric
#   "per_file":    [{"file": str, metrics}, ...],
#   "mbr":         {metrics} | null, the MBR-selected candidates (when an example has >1 candidate)
#   "diversity":   {"self_bleu", "div4", "candidates_min", "candidates_max"} | null,
#   "copy_source": {metrics},        the source copied as the prediction (the baseline to beat)
#   "reference_ngram_repeat_rate": float,  the references' own share with a repeated word n-gram
#   "seconds": float
# }
# {metrics} has "n", "bleu", "rouge_l", "dist1", "len_diffuseq", "len_words", "sacrebleu", "bleu_src",
# "ibleu", "copy_rate", "repeat_rate", "repeat_token_rate" (pooled over tokens), "ngram_repeat_rate" and, unless BERTScore is
# off, "bertscore_f1" (the others means over examples).
SCHEMA = "mambadiff.evaluate/1"


def evaluate_predictions(paths: Sequence[str], alpha: float = 0.8, bertscore: bool = True,
                         bertscore_model: str | None = None, bertscore_num_layers: int | None = None,
                         bertscore_batch_size: int | None = None, step: int | None = None,
                         progress=None, workers: int | None = None) -> dict:
    """Score prediction files (one per seed) with DiffuSeq's metrics; see SCHEMA above for the result.
    References and sources are scored in the form the models write (`comparable_texts`).

    Raises io.PredictionFileError (a ValueError) for unreadable/misaligned files, ValueError for bad
    arguments, bertscore.BertScoreUnavailableError when BERTScore is asked for but not installed.
    `progress`, if given, is called with one-line status messages, and the scoring shows progress
    bars. `workers`: processes that score many rows at once (None: one per available CPU; 1: none);
    the results do not depend on it.
    """
    from mambadiff.metrics import io as mio

    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    if isinstance(paths, (str, bytes)) or not paths:
        raise ValueError("paths: expected a non-empty list of prediction files")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha}")
    bs_model = None
    if bertscore:  # resolve (and fail on a missing package) before the slow part
        from mambadiff.metrics import bertscore as mbs
        bs_model = mbs.resolve_model(bertscore_model, bertscore_num_layers)
    data = mio.read_prediction_files(list(paths))
    with RowPool(workers, progress=progress is not None) as pool:
        refs = comparable_texts(data.references, pool, "references")
        srcs = comparable_texts(data.sources, pool, "sources")
        # the source as DiffuSeq would clean it as an output (its [PAD]s removed too; none in practice)
        copy_pred = [s.replace(mio.DIFFUSEQ_TOKENS.pad, "") for s in srcs]
        rows: list[tuple[dict, list[str]]] = []  # (metrics dict to complete, outputs) for BERTScore

        def score(outputs: list[str], what: str, head: dict | None = None) -> dict:
            say(f"scoring {what}")
            m = {**(head or {}), **generation_metrics(outputs, refs, srcs, alpha, pool=pool, desc=what)}
            rows.append((m, outputs))  # BERTScore is added to this same dict below
            return m

        per_file = [score([r.recover for r in recs], path, {"file": path})
                    for path, recs in zip(data.paths, data.files)]
        cands = data.candidates()
        mbr = diversity = None
        if max(len(c) for c in cands) > 1:
            say(f"diversity and MBR over up to {max(len(c) for c in cands)} candidates per example")
            per_example = pool.map(_candidate_scores, cands, "diversity and MBR")
            diversity = _diversity([x[0] for x in per_example], [x[1] for x in per_example], cands)
            mbr = score([c[x[2]] for c, x in zip(cands, per_example)], "MBR selection")
        copy = score(copy_pred, "copy-source baseline")
    if bs_model is not None:
        say(f"BERTScore of {len(rows)} x {len(refs)} pairs with {bs_model.name}")
        _add_bertscore(rows, refs, bs_model, bertscore_batch_size)
    if len(per_file) == 1:
        model = {k: v for k, v in per_file[0].items() if k != "file"}
    else:
        keys = [k for k in per_file[0] if k not in ("file", "n")]
        model = {"n": data.n_examples, **{k: float(np.mean([f[k] for f in per_file])) for k in keys}}
    return {"schema": SCHEMA, "step": step, "files": list(data.paths), "n_examples": data.n_examples,
            "candidates": {"min": min(len(c) for c in cands), "max": max(len(c) for c in cands)},
            "alpha": alpha, "bertscore": bs_model.describe() if bs_model is not None else None,
            "model": model, "per_file": per_file, "mbr": mbr, "diversity": diversity, "copy_source": copy,
            "reference_ngram_repeat_rate": repeat_rates(refs)["ngram_repeat_rate"],
            "seconds": time.perf_counter() - t0}


def _add_bertscore(rows: list[tuple[dict, list[str]]], refs: list[str], bs_model, batch_size: int | None) -> None:
    """Put ``bertscore_f1`` into each row's metrics dict (its outputs against ``refs``)."""
    from mambadiff.metrics import bertscore as mbs

    # one call for several rows: bert_score embeds each distinct sentence once, so the references
    # (and outputs shared between rows) are not re-encoded per row
    group = 4  # rows per call: bert_score keeps every distinct sentence's embeddings in memory
    for g in range(0, len(rows), group):
        part = rows[g:g + group]
        f1, _ = mbs.bertscore_f1([o for _, outs in part for o in outs], refs * len(part),
                                 bs_model.path, bs_model.num_layers, batch_size=batch_size or mbs.DEFAULT_BATCH_SIZE)
        for k, (m, _) in enumerate(part):
            m["bertscore_f1"] = float(np.mean(f1[k * len(refs):(k + 1) * len(refs)]))
