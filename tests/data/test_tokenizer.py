"""Tokenizers: parity with transformers' BertTokenizer on the same vocab, decode, save/load."""
import warnings

import pytest
import torch

from mambadiff.data.tokenizer import (
    SPECIAL_TOKENS,
    bert_tokenizer,
    bert_vocab_path,
    build_tokenizer,
    clean_up_tokenization,
    load_tokenizer,
    train_tokenizer,
)

SENTENCES = [
    "How can I learn Python quickly?",
    "What's the best way, isn't it? I'm sure you've done it.",
    "Naïve café déjà-vu: 3.5% of $100 (approx.)!",
    "embeddings unaffable xyzzyq",
    'He said "hello" - ok; [weird] {x} a/b',
    "中文 text",
    "don't won't o'neil 's",
    "Why does he want to have sex with me not her?",
    "When/how did you realize you were gay/bisexual? Were you in denial?",
    "x" * 120,  # longer than max_input_chars_per_word -> [UNK]
    "tab\tand\nnewline  and\u200bzero width",
]


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # transformers >= 5: the vocab file is passed as `vocab`
            t = transformers.BertTokenizerFast(vocab=str(bert_vocab_path()), do_lower_case=True)
            if len(t) != 30522:
                raise TypeError
        except TypeError:  # transformers 4.x
            t = transformers.BertTokenizerFast(vocab_file=str(bert_vocab_path()), do_lower_case=True)
    assert len(t) == 30522
    return t


def test_bert_special_ids_and_size(tok):
    assert tok.vocab_size == 30522
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert tok.id_to_token(tok.cls_id) == "[CLS]"


@pytest.mark.parametrize("text", SENTENCES)
def test_bert_ids_match_transformers(tok, hf, text):
    assert tok.encode(text) == hf(text, add_special_tokens=False)["input_ids"]


def test_encode_batch_matches_encode(tok):
    assert tok.encode_batch(SENTENCES) == [tok.encode(s) for s in SENTENCES]


@pytest.mark.parametrize("text", SENTENCES)
def test_bert_decode_matches_diffuseq_transformers_decode(tok, hf, text):
    # DiffuSeq (transformers 4.22) decoded with specials kept and clean_up_tokenization_spaces=True.
    ids = hf(text)["input_ids"]
    assert tok.decode(ids) == hf.decode(ids, clean_up_tokenization_spaces=True)
    assert tok.decode(ids, skip_special=True) == hf.decode(ids, skip_special_tokens=True,
                                                          clean_up_tokenization_spaces=True)


def test_decode_examples(tok):
    ids = [tok.cls_id, *tok.encode("How can I learn Python quickly?"), tok.sep_id, tok.pad_id]
    assert tok.decode(ids) == "[CLS] how can i learn python quickly? [SEP] [PAD]"
    assert tok.decode(ids, skip_special=True) == "how can i learn python quickly?"
    assert tok.decode(tok.encode("What's up, isn't it?")) == "what's up, isn't it?"
    assert tok.decode(torch.tensor(tok.encode("a b"))) == "a b"  # tensors accepted
    with pytest.raises(ValueError, match="outside the vocab"):
        tok.decode([30522])


def test_decode_round_trip_on_normalised_text(tok):
    # Lower-case text with spaced punctuation comes back with DiffuSeq's clean-up applied.
    for s in ["how can i learn python quickly ?", "what is the difference between java and rust ?",
              "i want to study chess at home . where do i begin ?"]:
        assert tok.decode(tok.encode(s)) == clean_up_tokenization(s)
        assert tok.encode(tok.decode(tok.encode(s))) == tok.encode(s)


def test_save_load_bert(tok, tmp_path):
    tok.save(tmp_path / "tok")
    t2 = load_tokenizer(tmp_path / "tok")
    assert t2.kind == "bert" and t2.vocab_size == tok.vocab_size
    assert (t2.pad_id, t2.cls_id, t2.sep_id, t2.unk_id) == (tok.pad_id, tok.cls_id, tok.sep_id, tok.unk_id)
    for s in SENTENCES:
        ids = tok.encode(s)
        assert t2.encode(s) == ids
        assert t2.decode(ids) == tok.decode(ids)
    assert not [p for p in (tmp_path / "tok").iterdir() if p.name.endswith(".tmp")]


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_tokenizer(tmp_path)


TRAIN_TEXTS = [
    "how can i learn python quickly ?",
    "what is the fastest way to learn python ?",
    "how do i become a doctor in india ?",
    "what does it take to be a doctor in india ?",
    "why is tokyo so expensive ?",
    "what makes tokyo so costly ?",
] * 5


def test_trained_tokenizer(tmp_path):
    t = train_tokenizer(TRAIN_TEXTS, vocab_size=120)
    assert t.kind == "trained"
    assert [t.id_to_token(i) for i in range(5)] == list(SPECIAL_TOKENS)
    assert (t.pad_id, t.unk_id, t.cls_id, t.sep_id) == (0, 1, 2, 3)
    assert t.vocab_size <= 120
    for s in TRAIN_TEXTS[:6]:
        ids = t.encode(s)
        assert t.unk_id not in ids
        assert t.decode(ids) == clean_up_tokenization(s)
    # Deterministic.
    assert train_tokenizer(TRAIN_TEXTS, vocab_size=120).encode(TRAIN_TEXTS[0]) == t.encode(TRAIN_TEXTS[0])
    t.save(tmp_path / "t")
    t2 = load_tokenizer(tmp_path / "t")
    assert t2.kind == "trained" and t2.vocab_size == t.vocab_size
    assert t2.encode("how do i become a doctor ?") == t.encode("how do i become a doctor ?")


def test_build_tokenizer_config_names():
    assert build_tokenizer("bert").kind == "bert"
    t = build_tokenizer("trained", texts=TRAIN_TEXTS, vocab_size=100)
    assert t.kind == "trained" and t.vocab_size <= 100
    with pytest.raises(ValueError, match="needs the training texts"):
        build_tokenizer("trained")
    with pytest.raises(ValueError, match="must be one of"):
        build_tokenizer("gpt2")
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(TRAIN_TEXTS, vocab_size=3)
    with pytest.raises(ValueError, match="must be a str"):
        bert_tokenizer().encode(None)
