import pytest

nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")

from mambadiff.diffusion import mbr_scores, mbr_select  # noqa: E402


def _reference_scores(cands):
    """DiffuSeq's rule, spelled out: sum over j != i of BLEU(hyp=c_i, ref=c_j), method4, whitespace tokens."""
    smooth = nltk_bleu.SmoothingFunction().method4
    return [
        sum(
            nltk_bleu.sentence_bleu([r.split()], h.split(), smoothing_function=smooth)
            for j, r in enumerate(cands)
            if j != i
        )
        for i, h in enumerate(cands)
    ]


def test_mbr_picks_the_consensus_candidate():
    examples = [
        ["a cat sat on the mat", "the cat is on the mat", "the cat sat on the mat", "dogs run very fast in parks"],
        ["dogs run very fast in parks", "the dog runs in the park", "the dog runs in a park", "the dog ran in the park"],
        ["only one"],
    ]
    assert mbr_select(examples) == [2, 1, 0]
    for cands in examples:
        assert mbr_scores(cands) == pytest.approx(_reference_scores(cands), rel=1e-12)


def test_mbr_ties_go_to_the_first_index_and_duplicates_count():
    # 0 and 3 are duplicates (both kept, as DiffuSeq keeps every seed's output) and tie: np.argmax -> 0
    cands = ["a b c d e", "x y z", "a b c d e f", "a b c d e"]
    scores = mbr_scores(cands)
    assert scores[0] == scores[3] and scores[0] > scores[2] > scores[1]
    assert mbr_select([cands]) == [0]
    assert mbr_select([["same words here"] * 3]) == [0]
    assert mbr_select([["", "", "a b"]]) == [0]  # empty strings score 0, no crash


def test_mbr_validation():
    for bad in ("text", [[]], [["ok", 3]], ["not a list of lists"]):
        with pytest.raises(ValueError):
            mbr_select(bad)
