"""x0_token_accuracy: the copy / novel split of the denoiser's word recovery at fixed noise levels."""
import math

import torch
from torch import nn

from mambadiff.data.seq2seq import Seq2SeqDataset
from mambadiff.data.tokenizer import build_tokenizer
from mambadiff.diffusion import GaussianDiffusion
from mambadiff.tasks.seq2seq import x0_token_accuracy

PAIRS = [("how do i learn python fast", "what is the fastest way to learn python"),
         ("why is the sky blue", "what makes the sky blue"),
         ("where can i buy cheap books", "which shop sells cheap books")]


class IdentityDenoiser(nn.Module):
    """Predicts x0 = x_t, over one-hot embeddings scaled by 10 (well separated: the argmax is exact
    for a nearly clean x_t)."""

    def __init__(self, vocab_size):
        super().__init__()
        self.word_embedding = nn.Embedding(vocab_size, vocab_size, _weight=10.0 * torch.eye(vocab_size))

    def embed(self, ids):
        return self.word_embedding(ids)

    def logits(self, h):
        return h @ self.word_embedding.weight.t()

    def forward(self, x_t, t, mask=None):
        return x_t


def _setup():
    tok = build_tokenizer("trained", [w for p in PAIRS for w in p], vocab_size=100)
    ds = Seq2SeqDataset(PAIRS, tok, seq_len=32)
    return tok, ds, IdentityDenoiser(tok.vocab_size), GaussianDiffusion.from_name("sqrt", 50)


def test_counts_split_target_words_by_whether_the_source_has_them():
    tok, ds, model, diffusion = _setup()
    out = x0_token_accuracy(model, ds, diffusion, [0], tok.pad_id, batch_size=2)
    data = ds.tensors()
    n_copy = n_novel = 0
    for ids, mask in zip(data["input_ids"].tolist(), data["input_mask"].tolist()):
        source = {w for w, m in zip(ids, mask) if m == 0}
        for w, m in zip(ids, mask):
            if m == 1 and w != tok.pad_id:
                n_copy += w in source
                n_novel += w not in source
    assert (out[0]["n_copy"], out[0]["n_novel"]) == (n_copy, n_novel)
    assert n_copy > 0 and n_novel > 0  # "learn", "python", "sky", "blue", ... and "fastest", "shop", ...


def test_identity_denoiser_recovers_every_word_at_t0_and_not_from_pure_noise():
    tok, ds, model, diffusion = _setup()
    out = x0_token_accuracy(model, ds, diffusion, [0, 49], tok.pad_id)
    assert out[0]["copy"] == 1.0 and out[0]["novel"] == 1.0
    assert out[49]["copy"] < 0.5 and out[49]["novel"] < 0.5
    assert set(out) == {0, 49} and all(not math.isnan(v["copy"]) for v in out.values())
