"""Every mixer's prefill: the parallel path's output and, per right-padded row, the state that stepping
through the row's own tokens reaches."""
import dataclasses

import pytest
import torch

from mambadiff.ssm.h3 import H3, H3Config
from mambadiff.ssm.mamba import Mamba, MambaConfig
from mambadiff.ssm.mamba2 import Mamba2, Mamba2Config
from mambadiff.ssm.prefill import check_lengths, trailing_window
from mambadiff.ssm.s4 import S4, S4Config
from mambadiff.ssm.s4d import S4D, S4DConfig

D = 8
LAYERS = {
    "mamba": lambda: Mamba(MambaConfig(D, d_state=4)),
    "mamba-reference-scan": lambda: Mamba(MambaConfig(D, d_state=4, scan_backend="reference")),
    "mamba2": lambda: Mamba2(Mamba2Config(D, d_state=4, headdim=4, chunk_size=4)),
    "s4d": lambda: S4D(S4DConfig(D, d_state=4)),
    "s4": lambda: S4(S4Config(D, d_state=4, l_max=16)),
    "s4-zoh": lambda: S4(S4Config(D, d_state=4, l_max=16, discretization="zoh")),
    "h3": lambda: H3(H3Config(D, head_dim=4, d_state=4, shift_size=3)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_prefill_state_equals_stepping_each_row(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(3, 11, D, dtype=torch.float64)
        lengths = torch.tensor([11, 2, 7])
        out, state = layer.prefill(x, lengths)
        full = layer(x)
        for i, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(out[i, :n], full[i, :n], rtol=0, atol=1e-12)
            assert not out[i, n:].any()  # padding stays zero
            stepped = layer.allocate_state(1, dtype=torch.float64)
            for t in range(n):
                _, stepped = layer.step(x[i : i + 1, t], stepped)
            for f in dataclasses.fields(state):
                got, want = getattr(state, f.name)[i], getattr(stepped, f.name)[0]
                torch.testing.assert_close(got, want.to(got.dtype), rtol=0, atol=1e-12, msg=f"{name}.{f.name}")


def test_trailing_window_and_lengths():
    u = torch.arange(1, 7.0).view(1, 1, 6).repeat(2, 1, 1)  # (b, c, l) steps 1..6
    got = trailing_window(u, torch.tensor([6, 2]), 3)  # (b, c, w)
    assert got.tolist() == [[[4.0, 5.0, 6.0]], [[0.0, 1.0, 2.0]]]
    assert check_lengths(None, 2, 5).tolist() == [5, 5]
    with pytest.raises(ValueError, match="lengths"):
        check_lengths(torch.tensor([1, 6]), 2, 5)
    with pytest.raises(ValueError, match="lengths"):
        check_lengths(torch.tensor([1.0, 2.0]), 2, 5)
