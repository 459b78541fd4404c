"""The causal language model: prefill + step against the parallel forward for every backbone, batched
generation against each row alone, stop tokens, sampling, save / load, and constant work per token."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mambadiff.models.backbones import BackboneConfig
from mambadiff.models.generation import generate, sample_next
from mambadiff.models.kv_cache import KVCache
from mambadiff.models.lm import CausalLM, CausalLMConfig
from mambadiff.train.checkpoint import CheckpointError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_backbones import V, backbone  # noqa: E402

BACKBONES = {
    "mamba": backbone("mamba"),
    "mamba2": backbone("mamba2"),
    "s4d": backbone("s4d"),
    "s4": backbone("s4"),
    "s4-zoh": backbone("s4").with_layer(discretization="zoh"),
    "h3": backbone("h3"),
    "transformer-learned": backbone("transformer", max_len=32),
    "transformer-rotary": backbone("transformer", pos_encoding="rotary"),
    "transformer-sinusoidal": backbone("transformer", pos_encoding="sinusoidal"),
    "mamba2-hybrid": backbone("mamba2", n_layers=3, attn_layers=[1], mlp_dim=12),
    "mamba-rotary-hybrid": backbone("mamba", attn_layers=[0], pos_encoding="rotary"),
    "lstm": backbone("lstm"),
}


def model(name: str, dtype=torch.float64, seed: int = 0, **kw) -> CausalLM:
    torch.manual_seed(seed)
    m = CausalLM(CausalLMConfig(vocab_size=V, backbone=BACKBONES[name], **kw)).to(dtype).eval()
    with torch.no_grad():  # off the init (D = 1, equal A rows, ...), so that every parameter matters
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def prefill_then_step(m: CausalLM, ids: torch.Tensor, lengths: torch.Tensor, steps: int) -> float:
    """Largest gap between the parallel logits over ``ids`` and prefill over each row's first
    ``lengths[i]`` tokens followed by ``steps`` steps, each row feeding its own next token."""
    full = m(ids)  # (b, l, v)
    prompt = ids[:, : int(lengths.max())]  # (b, l_p) right-padded: row i is real up to lengths[i]
    logits, cache = m.prefill(prompt, lengths, capacity=int(lengths.max()) + steps, all_logits=True)
    rows = torch.arange(ids.shape[0])
    gap = max((logits[i, :n] - full[i, :n]).abs().max().item() for i, n in enumerate(lengths.tolist()))
    for t in range(steps):
        step_logits = m.step(ids[rows, lengths + t], cache)  # (b, v)
        gap = max(gap, (step_logits - full[rows, lengths + t]).abs().max().item())
    return gap


@pytest.mark.parametrize("name", list(BACKBONES))
def test_prefill_and_step_match_the_parallel_forward(name):
    torch.set_num_threads(1)
    m = model(name)
    ids = torch.randint(0, V, (3, 13), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([6, 2, 9])  # unequal prompts in one batch
    assert prefill_then_step(m, ids, lengths, steps=4) <= 1e-9


@pytest.mark.parametrize("name", ["mamba", "mamba2-hybrid", "s4d"])
def test_prefill_and_step_match_in_float32(name):
    m = model(name, dtype=torch.float32)
    ids = torch.randint(0, V, (2, 11), generator=torch.Generator().manual_seed(2))
    assert prefill_then_step(m, ids, torch.tensor([7, 3]), steps=4) <= 1e-4


@pytest.mark.parametrize("name", ["mamba", "mamba2", "s4", "h3", "transformer-rotary", "transformer-learned",
                                  "mamba2-hybrid", "lstm"])
def test_batched_greedy_generation_equals_each_row_alone(name):
    m = model(name)
    prompts = [[1, 2, 3, 4, 5, 6], [7], [8, 9, 10]]
    batched = generate(m, prompts, 6)
    assert batched == [generate(m, [p], 6)[0] for p in prompts]
    assert all(len(row) == 6 for row in batched)
    # the same prompts as a right-padded tensor with lengths
    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0], [8, 9, 10, 0, 0, 0]])
    assert m.generate(ids, 6, lengths=torch.tensor([6, 1, 3])) == batched


def test_a_stop_token_ends_its_row_only():
    m = model("mamba")
    prompts = [[1, 2, 3], [4, 5]]
    free = generate(m, prompts, 8)
    stop = free[0][0]
    assert stop not in free[1]  # row 1 never meets it (fixed seeds), so it must run on
    stopped = generate(m, prompts, 8, stop_ids=[stop, V + 5])
    assert stopped == [[stop], free[1]]
    second = free[1][3]  # a second stop token: row 1 ends at its first occurrence
    assert generate(m, prompts, 8, stop_ids=[stop, second]) == [[stop], free[1][:free[1].index(second) + 1]]


def test_sampling_options():
    m = model("mamba2")
    prompts = [[1, 2, 3], [4]]
    greedy = generate(m, prompts, 5)
    assert generate(m, prompts, 5, temperature=1.0, top_k=1) == greedy
    assert generate(m, prompts, 5, temperature=0.7, top_p=1e-9) == greedy
    draw = lambda seed: generate(m, prompts, 5, temperature=1.5, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert draw(3) == draw(3)
    assert generate(m, prompts, 0) == [[], []]
    logits = torch.randn(64, V, generator=torch.Generator().manual_seed(0))
    picked = sample_next(logits, temperature=2.0, top_k=3, generator=torch.Generator().manual_seed(0))  # (64,)
    assert (logits.topk(3, dim=-1).indices == picked[:, None]).any(-1).all()
    with pytest.raises(ValueError, match="top_p"):
        sample_next(logits, temperature=1.0, top_p=0.0)


@pytest.mark.parametrize("name", ["mamba2-hybrid", "s4"])
def test_save_and_load_give_identical_logits(tmp_path, name):
    m = model(name)
    ids = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(4))
    m.save_pretrained(tmp_path / "lm")
    assert sorted(p.name for p in (tmp_path / "lm").iterdir()) == ["config.json", "model.safetensors"]
    loaded = CausalLM.from_pretrained(tmp_path / "lm").eval()
    assert loaded.cfg == m.cfg and loaded.head.weight is loaded.embedding.weight
    assert loaded.embedding.weight.dtype == torch.float64
    assert torch.equal(loaded(ids), m(ids))
    assert generate(loaded, [[1, 2]], 4) == generate(m, [[1, 2]], 4)


def test_load_refuses_a_foreign_folder(tmp_path):
    model("mamba").save_pretrained(tmp_path / "a")
    model("s4d").save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    with pytest.raises(CheckpointError, match="does not fit"):
        CausalLM.from_pretrained(tmp_path / "a")
    with pytest.raises(CheckpointError, match="missing"):
        CausalLM.from_pretrained(tmp_path / "nothing")


def _count_rows(m: CausalLM) -> list[int]:
    """Hook every Linear of the backbone: the counter holds the positions (rows) they have seen."""
    seen = [0]

    def hook(module, args, output):
        seen[0] += args[0].numel() // args[0].shape[-1]

    for layer in m.backbone.modules():
        if isinstance(layer, nn.Linear):
            layer.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("name", ["mamba", "mamba2-hybrid", "h3", "transformer-rotary"])
def test_a_step_does_not_rerun_the_prompt(name):
    m = model(name)
    b, prompt_len = 2, 10
    n_linear = sum(isinstance(x, nn.Linear) for x in m.backbone.modules())
    seen = _count_rows(m)
    ids = torch.randint(0, V, (b, prompt_len), generator=torch.Generator().manual_seed(5))
    _, cache = m.prefill(ids, torch.tensor([10, 4]), capacity=prompt_len + 5)
    shapes = [[t.shape for t in vars(s).values()] for s in cache.layers]
    for _ in range(5):
        before = seen[0]
        m.step(torch.tensor([1, 2]), cache)
        assert 0 < seen[0] - before <= b * n_linear  # each Linear sees this step's b tokens, no more
    # state-space layers keep constant-size states; a KV cache is allocated once
    assert [[t.shape for t in vars(s).values()] for s in cache.layers] == shapes
    assert cache.positions.tolist() == [15, 9]
    assert any(isinstance(s, KVCache) for s in cache.layers) == ("transformer" in name or "hybrid" in name)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="bidirectional"):
        CausalLM(CausalLMConfig(vocab_size=V, backbone=BackboneConfig(name="mamba", bidirectional=True)))
    m = model("transformer-rotary")
    with pytest.raises(ValueError, match="lengths"):
        m.prefill(torch.ones(2, 4, dtype=torch.long), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="vocab_size"):
        m(torch.full((1, 3), V))
    _, cache = m.prefill(torch.ones(1, 4, dtype=torch.long))  # capacity 4: no room for a 5th position
    with pytest.raises(ValueError, match="KV cache"):
        m.step(torch.tensor([1]), cache)
    with pytest.raises(ValueError, match="non-empty"):
        generate(m, [[1], []], 3)
