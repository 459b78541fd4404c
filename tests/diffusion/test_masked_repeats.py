"""Repeated phrases in masked sampling: the word-pair test and the length beam that avoids them."""
import torch

from mambadiff.diffusion.masked import MaskedDiffusion
from mambadiff.diffusion.samplers.token_rules import repeats_a_word_pair

from .test_masked import MASK, PAD, SEP, V, FixedLogits, batch, beam_kw, output_length, sample_length_beam


def test_repeats_a_word_pair_finds_a_pair_twice_among_target_words():
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]] * 5)
    ids = torch.tensor([[10, 11, 10, 11, 12, SEP, PAD, PAD],   # the source's pair once in the target: none
                        [SEP, 10, 10, 11, 10, 11, SEP, PAD],   # (10, 11) twice
                        [SEP, 10, 10, 10, 10, SEP, PAD, PAD],  # (10, 10) twice, overlapping
                        [SEP, 10, 12, SEP, 12, SEP, PAD, PAD],  # pairs with specials do not count
                        [SEP, 10, 11, 12, 11, 10, SEP, PAD]])  # the same words, no pair twice
    assert repeats_a_word_pair(ids, mask, (SEP, PAD)).tolist() == [False, True, True, False, False]


def test_beam_avoid_repeat_moves_to_a_length_without_a_repeated_pair():
    d = MaskedDiffusion(100, MASK)
    l, src = 16, 4
    ids, mask = batch(b=2, l=l, src=src)
    table = torch.zeros(l, V)
    for i, word in enumerate([10, 11, 10, 11]):  # sure words that repeat a pair at the predicted length 4
        table[src + i, word] = 12.0
    table[src + 4:, SEP] = 12.0
    kw = beam_kw(length_beam=3)
    free = sample_length_beam(d, FixedLogits(table), ids, mask, **kw)
    assert output_length(free.token_ids).tolist() == [4, 4]
    assert repeats_a_word_pair(free.token_ids, mask, (SEP, PAD)).all()
    avoided = sample_length_beam(d, FixedLogits(table), ids, mask, beam_avoid_repeat=True, **kw)
    assert output_length(avoided.token_ids).tolist() == [3, 3]  # 10 11 10: no pair twice
    assert not repeats_a_word_pair(avoided.token_ids, mask, (SEP, PAD)).any()
