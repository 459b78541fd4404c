import pytest


@pytest.fixture
def tok(bert_tok):
    """The bert-base-uncased tokenizer most data tests encode with."""
    return bert_tok
