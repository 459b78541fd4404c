"""Every mixer's prefill: the parallel path's output and, per right-padded row, the state that stepping
through the row's own tokens reaches; short prompts (one chunk of the time-invariant state sums) and
long ones (several chunks, with and without leading zeros), full rows and padded."""
import dataclasses

import pytest
import torch

from mambadiff.ssm.h3 import H3, H3Config
from mambadiff.ssm.mamba import Mamba, MambaConfig
from mambadiff.ssm.mamba2 import Mamba2, Mamba2Config
from mambadiff.ssm.prefill import check_lengths, chunk_shape, state_chunks, trailing_window
from mambadiff.ssm.s4 import S4, S4Config
from mambadiff.ssm.s4d import S4D, S4DConfig

D = 8
LAYERS = {
    "mamba": lambda: Mamba(MambaConfig(D, d_state=4)),
    "mamba-reference-scan": lambda: Mamba(MambaConfig(D, d_state=4, scan_backend="reference")),
    "mamba2": lambda: Mamba2(Mamba2Config(D, d_state=4, headdim=4, chunk_size=4)),  # the fused CPU kernel
    "mamba2-chunked": lambda: Mamba2(Mamba2Config(D, d_state=4, headdim=4, chunk_size=4, algorithm="chunked")),
    "s4d": lambda: S4D(S4DConfig(D, d_state=4)),
    "s4": lambda: S4(S4Config(D, d_state=4, l_max=160)),
    "s4-zoh": lambda: S4(S4Config(D, d_state=4, l_max=160, discretization="zoh")),
    "h3": lambda: H3(H3Config(D, head_dim=4, d_state=4, shift_size=3)),
}


@pytest.mark.parametrize("l, lengths", [
    (11, [11, 2, 7]),  # one chunk, padded rows
    (11, None),  # full rows: no masks, the state sums read the inputs in place
    (150, [150, 129, 64, 1]),  # over 256 steps: zeros first, chunks (c, K) = (64, 4), padded rows
    (128, None),  # (64, 2): the inputs in place, full rows
])
@pytest.mark.parametrize("name", list(LAYERS))
def test_prefill_state_equals_stepping_each_row(name, l, lengths):
    torch.manual_seed(0)
    layer = LAYERS[name]().double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
        b = 2 if lengths is None else len(lengths)
        x = torch.randn(b, l, D, dtype=torch.float64)
        out, state = layer.prefill(x, None if lengths is None else torch.tensor(lengths))
        lengths = torch.full((b,), l) if lengths is None else torch.tensor(lengths)
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


def test_state_chunks_right_align_rows():
    u = torch.arange(1, 7.0).view(1, 1, 6, 1).repeat(2, 1, 1, 1)  # (b, e, l, j) steps 1..6
    got = state_chunks(u, torch.tensor([6, 3]), 4, 2)[..., 0]  # (b, e, c, K): step i K + k at (i, k)
    assert got.tolist() == [[[[0.0, 0.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]],
                            [[[0.0, 0.0], [0.0, 0.0], [0.0, 1.0], [2.0, 3.0]]]]
    view = state_chunks(u, torch.tensor([6, 6]), 3, 2)  # full rows, l = c K: u itself
    assert view.data_ptr() == u.data_ptr() and view.shape == (2, 1, 3, 2, 1)
    assert chunk_shape(1) == (1, 1) and chunk_shape(11) == (16, 1) and chunk_shape(150) == (64, 4)
