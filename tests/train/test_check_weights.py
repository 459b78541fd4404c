"""check_weights: a weights file checked against a model's state dict (names and shapes), the file named."""
import pytest
import torch
from torch import nn

from mambadiff.train.checkpoint import CheckpointError, check_weights


def state(**shapes):
    return {k.replace("_", "."): torch.zeros(s) for k, s in shapes.items()}


def test_matching_weights_pass():
    model = nn.Linear(4, 2)
    check_weights("run/model.safetensors", dict(model.state_dict()), model.state_dict())


def test_mismatch_names_the_file_and_the_first_keys_of_each_kind():
    expected = state(a_w=(2, 2), b_w=(3,), c_w=(1,), d_w=(1,), e_w=(1,), f_w=(5,))
    got = state(a_w=(2, 2), b_w=(4,), x_w=(1,))
    with pytest.raises(CheckpointError) as info:
        check_weights("run/ema.safetensors", got, expected)
    err = info.value
    assert isinstance(err, ValueError) and str(err.path) == "run/ema.safetensors"
    assert str(err) == ("run/ema.safetensors: does not fit this model (missing c.w, d.w, e.w and 1 more; "
                        "unexpected x.w; b.w has shape (4,), this model needs (3,))")


def test_target_names_what_the_weights_should_fit():
    with pytest.raises(CheckpointError, match=r"m.safetensors: does not fit the checkpoint's config.json "
                                              r"\(w has shape \(1, 2\), the checkpoint's config.json needs \(2, 2\)\)"):
        check_weights("m.safetensors", state(w=(1, 2)), state(w=(2, 2)), target="the checkpoint's config.json")
