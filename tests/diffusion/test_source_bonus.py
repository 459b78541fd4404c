"""The source-word prior of the masked sampler (``source_bonus``)."""
import torch

from mambadiff.diffusion.masked import MaskedDiffusion
from mambadiff.diffusion.samplers.token_rules import favour_source_words

from .test_masked import MASK, PAD, SEP, V, FixedLogits, batch, length_kw, output_length, sample_masked


def test_favour_source_words_adds_the_bonus_at_each_rows_source_words_only():
    x = torch.tensor([[0, 12, SEP, MASK, MASK, PAD],     # source holds token 0 and 12
                      [13, 13, SEP, 20, MASK, PAD]])     # source holds 13 twice; 20 is a target word
    target = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1]]).bool()
    open_pos = (x == MASK) & target  # row 0: two open positions, row 1: one
    logits = torch.zeros(3, V)
    favour_source_words(logits, x, target, open_pos, torch.tensor([SEP, PAD]), 2.5)
    expected = torch.zeros(3, V)
    expected[0:2, [0, 12]] = 2.5
    expected[2, 13] = 2.5
    assert torch.equal(logits, expected)
    # a row whose source lacks token 0 gets no bonus there
    logits = torch.zeros(1, V)
    favour_source_words(logits, x[1:], target[1:], open_pos[1:], torch.tensor([SEP, PAD]), 1.0)
    assert logits[0, 0] == 0 and logits[0, 13] == 1.0 and logits.sum() == 1.0


def test_source_bonus_turns_a_close_second_source_word_into_the_output():
    d = MaskedDiffusion(100, MASK)
    l, src = 10, 4
    ids, mask = batch(b=2, l=l, src=src)
    ids[:, :src] = torch.tensor([11, 12, 13, SEP])
    table = torch.zeros(l, V)
    table[src:src + 3, 20] = 3.0  # a word not in the source, slightly above ...
    table[src:src + 3, 12] = 2.5  # ... one the source holds
    table[src + 3:, SEP] = 9.0
    plain = sample_masked(d, FixedLogits(table), ids, mask, **length_kw(forbid_adjacent_repeat=True)).token_ids
    favoured = sample_masked(d, FixedLogits(table), ids, mask,
                             **length_kw(forbid_adjacent_repeat=True, source_bonus=1.0)).token_ids
    assert output_length(plain).tolist() == output_length(favoured).tolist() == [3, 3]
    assert plain[:, src:src + 3].tolist() == [[20, 12, 20]] * 2
    assert favoured[:, src:src + 3].tolist() == [[12, 20, 12]] * 2
    assert torch.equal(favoured[:, :src], ids[:, :src])  # the source is never touched
