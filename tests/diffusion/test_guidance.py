"""Classifier-free guidance on the source: the null condition, source dropout in training, and the
masked sampler's guided proposals against the formula computed by a wrapper model."""
import pytest
import torch
from torch import nn

from mambadiff.diffusion.masked import MaskedDiffusion, without_source
from mambadiff.diffusion.samplers import MaskedSampler, MaskedSamplerConfig, MaskedTokens

from .test_masked import MASK, ContextModel, batch

SPECIAL = (5, 6)  # (end-of-text, padding) here; kept in the null condition


def test_without_source_masks_only_source_words_of_the_chosen_rows():
    ids = torch.tensor([[5, 9, 10, 6, 11, 12], [5, 13, 6, 6, 14, 6]])  # (2, 6)
    mask = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]])
    keep = torch.tensor(SPECIAL)
    assert without_source(ids, mask, MASK, keep).tolist() == [[5, MASK, MASK, 6, 11, 12], [5, MASK, 6, 6, 14, 6]]
    assert without_source(ids, mask, MASK, keep, rows=torch.tensor([False, True])).tolist() == [
        [5, 9, 10, 6, 11, 12], [5, MASK, 6, 6, 14, 6]]


class GuidedReference(nn.Module):
    """The guided model written out: ``forward`` runs ``base`` on the input and on its null condition
    and keeps both outputs side by side; ``logits`` combines them as (1 + w) log p_c - w log p_u."""

    def __init__(self, base, w, target_of):
        super().__init__()
        self.base, self.w, self.target_of = base, w, target_of
        self.emb_dim = base.emb_dim

    def embed(self, ids):
        self.last_ids = ids  # forward needs the ids to build the null condition
        return self.base.embed(ids)

    def forward(self, x, t, mask=None, self_cond=None):
        ids = self.last_ids
        null = without_source(ids, self.target_of(ids), MASK, torch.tensor(SPECIAL))
        return torch.cat([self.base(x, t), self.base(self.base.embed(null), t)], -1)  # (b, l, 2E)

    def logits(self, h):
        conditional, unconditional = h.chunk(2, -1)
        return ((1 + self.w) * self.base.logits(conditional).log_softmax(-1)
                - self.w * self.base.logits(unconditional).log_softmax(-1))


SOURCE_WORDS = range(20, 30)  # the sampler never proposes them, so the reference can find the source


@pytest.mark.parametrize("predict_length", [False, True])
@pytest.mark.parametrize("w", [0.5, 2.0])
def test_guided_sampling_equals_sampling_the_guided_distribution(w, predict_length):
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch(b=4, l=16, src=5)
    mask[1, :9], mask[3, :12] = 0, 0  # unequal target lengths: at some steps only some rows commit and run
    ids = torch.where(mask.bool(), ids, 20 + ids % 10)  # source words from SOURCE_WORDS
    ids[:, 0], ids[1, 8] = 5, 6  # specials in the source stay in the null condition
    tokens = MaskedTokens(tuple(SOURCE_WORDS), SPECIAL, SPECIAL if predict_length else ())
    config = dict(steps=10, forbid_adjacent_repeat=True, predict_length=predict_length)
    base = ContextModel(16)
    guided = MaskedSampler(d, MaskedSamplerConfig(guidance=w, **config), tokens).decode_all(base, ids, mask)
    assert min(base.rows_seen) < 2 * 4  # the guided call ran on a subset of rows too
    target_of = lambda x: (x < 20) | (x >= 30)  # noqa: E731
    reference_model = GuidedReference(ContextModel(16), w, target_of)
    reference = MaskedSampler(d, MaskedSamplerConfig(**config), tokens).decode_all(reference_model, ids, mask)
    assert torch.equal(guided.token_ids, reference.token_ids)
    torch.testing.assert_close(guided.word_log_prob, reference.word_log_prob, rtol=1e-5, atol=1e-5)
    unguided = MaskedSampler(d, MaskedSamplerConfig(**config), tokens).decode_all(base, ids, mask)
    assert not torch.equal(guided.token_ids, unguided.token_ids)  # the guidance changes the outputs here


def test_guidance_needs_a_model_trained_with_source_dropout(tmp_path):
    from mambadiff.config import load_config
    from mambadiff.tasks.seq2seq import Seq2SeqConfig
    from mambadiff.tasks.seq2seq.sampling import build_sampler
    from mambadiff.data.tokenizer import bert_tokenizer

    cfg = load_config(Seq2SeqConfig, "demo", [])
    with pytest.raises(ValueError, match="source_dropout"):
        build_sampler(cfg, bert_tokenizer(), MaskedSamplerConfig(guidance=1.0))
    with pytest.raises(ValueError, match="diffusion.source_dropout"):
        load_config(Seq2SeqConfig, "demo", ["diffusion.source_dropout=1.0"])
    with pytest.raises(ValueError, match="diffusion.process: masked"):
        load_config(Seq2SeqConfig, "demo", ["diffusion.source_dropout=0.1", "diffusion.process=gaussian"])
