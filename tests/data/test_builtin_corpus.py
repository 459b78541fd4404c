"""The built-in paraphrase corpus: determinism, split hygiene, difficulty, size bounds."""
import json
import re
import statistics

import pytest

from mambadiff.data import builtin_corpus as bc
from mambadiff.data.seq2seq import load_seq2seq_split, read_seq2seq_jsonl
from mambadiff.data.tokenizer import bert_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def corpus():
    return bc.generate_paraphrase_corpus(seed=0)


def _copy_bleu(pairs):
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    smooth = nltk_bleu.SmoothingFunction().method4
    # DiffuSeq's get_bleu: sentence_bleu([reference.split()], hypothesis.split(), method4)
    return statistics.mean(
        nltk_bleu.sentence_bleu([trg.split()], src.split(), smoothing_function=smooth) for src, trg in pairs
    )


def test_default_sizes(corpus):
    assert {k: len(v) for k, v in corpus.items()} == bc.DEFAULT_SIZES


def test_deterministic_by_seed(corpus):
    again = bc.generate_paraphrase_corpus(seed=0)
    assert again == corpus
    other = bc.generate_paraphrase_corpus(seed=1)
    assert other["train"] != corpus["train"]
    small = bc.generate_paraphrase_corpus(50, 10, 10, seed=3)
    assert small == bc.generate_paraphrase_corpus(50, 10, 10, seed=3)
    assert {k: len(v) for k, v in small.items()} == {"train": 50, "valid": 10, "test": 10}


def test_no_sentence_shared_between_splits(corpus):
    src = {k: {s for s, _ in v} for k, v in corpus.items()}
    sentences = {k: {x for pair in v for x in pair} for k, v in corpus.items()}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not src[a] & src[b]
        assert not sentences[a] & sentences[b]  # stronger: instances are split, not sentences
    for k, v in corpus.items():
        assert len(src[k]) == len(v)  # sources unique within a split too
        assert all(s != t for s, t in v)


def test_copy_source_bleu_is_low(corpus):
    for split in ("valid", "test"):
        assert _copy_bleu(corpus[split]) < 0.25
    assert _copy_bleu(corpus["train"][:2000]) < 0.25


def test_mapping_is_mostly_consistent():
    # With vary=0 the target is a function of the source; with the default vary=0.1, about 93% of
    # targets are the canonical rewrite.
    strict = bc.generate_paraphrase_corpus(18000, 100, 100, seed=5, vary=0.0)
    canonical = {s: t for split in strict.values() for s, t in split}
    noisy = bc.generate_paraphrase_corpus(3000, 100, 100, seed=6, vary=0.1)
    shared = [(s, t) for s, t in noisy["train"] if s in canonical]  # most of them
    assert len(shared) > 2000
    agree = sum(canonical[s] == t for s, t in shared) / len(shared)
    assert 0.85 < agree < 0.99


def test_lengths_vocab_and_format():
    # Whole generator space: every possible sentence is 6..16 tokens; lower case; spaced punctuation.
    vocab = set()
    n = 0
    for inst in bc._instances():
        intent = bc.INTENTS[inst[0]]
        for form, bits in bc._variants(inst):
            for flip in (False, True):
                s = bc._render(intent.forms[form], bc._values(inst, bits, flip))
                words = s.split()
                assert bc.MIN_WORDS <= len(words) <= bc.MAX_WORDS, s
                assert s == s.lower() and s == " ".join(words)
                assert re.fullmatch(r"[a-z0-9 ?.,]+", s), s
                assert all(w in "?.," or re.fullmatch(r"[a-z0-9]+", w) for w in words), s
                vocab.update(words)
                n += 1
    assert 200 <= len(vocab) <= 600
    n_inst, capacity = bc.corpus_capacity()
    assert n_inst > 3000 and capacity > 20000


def test_tokenizers_cover_the_corpus(corpus):
    bert = bert_tokenizer()
    texts = [x for pair in corpus["train"] for x in pair]
    trained = train_tokenizer(texts, vocab_size=1000)
    assert trained.vocab_size < 1000
    for s, t in corpus["test"][:200]:
        for x in (s, t):
            assert bert.unk_id not in bert.encode(x)
            assert len(trained.encode(x)) == len(x.split())  # every word is one token
            assert trained.decode(trained.encode(x)) == bert.decode(bert.encode(x))


def test_write_builtin_corpus(tmp_path):
    paths = bc.write_builtin_corpus(tmp_path / "builtin", 200, 20, 20, seed=7)
    assert sorted(paths) == ["test", "train", "valid"]
    expected = bc.generate_paraphrase_corpus(200, 20, 20, seed=7)
    for split, path in paths.items():
        assert path.name == f"{split}.jsonl"
        assert read_seq2seq_jsonl(path) == expected[split]
        first = json.loads(path.read_text().splitlines()[0])
        assert set(first) == {"src", "trg"}
    assert not [p for p in (tmp_path / "builtin").iterdir() if p.suffix == ".tmp"]
    ds = load_seq2seq_split(tmp_path / "builtin", "valid", bert_tokenizer(), seq_len=40)
    assert ds.n_truncated == 0 and len(ds) == 20


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_train"):
        bc.generate_paraphrase_corpus(-1, 1, 1)
    with pytest.raises(ValueError, match="vary"):
        bc.generate_paraphrase_corpus(10, 1, 1, vary=2.0)
    with pytest.raises(ValueError, match="at most"):
        bc.generate_paraphrase_corpus(1_000_000, 1, 1)
