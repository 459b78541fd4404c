"""Hugging Face Mamba / Mamba-2 checkpoints: small random HF models saved with ``save_pretrained`` load as
a ``CausalLM`` with the same logits and the same greedy generations, save back into a folder HF loads, and
refuse what our layers cannot run with the file and the field named. Nothing is downloaded.

Tolerances: float32 logits atol 1e-4 / rtol 1e-3 (seen: max abs diff 1.2e-6, logits up to ~3, on the
parallel, prefill and step paths); float64 atol 1e-5 / rtol 1e-5 (HF computes its RMSNorms, Mamba-2's
SSD and its logits in float32 even for a float64 model, so it is float32-accurate; seen 5.5e-7)."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from mambadiff.models.backbones import BackboneConfig, build_backbone, count_parameters  # noqa: E402
from mambadiff.models.hf_mamba import is_hf_mamba_folder, load_hf_mamba, save_hf_mamba  # noqa: E402
from mambadiff.models.lm import CausalLM, CausalLMConfig  # noqa: E402
from mambadiff.ssm.norm import RMSNorm  # noqa: E402
from mambadiff.train.checkpoint import CheckpointError  # noqa: E402

V = 100
SMALL = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, state_size=8, bos_token_id=None,
             eos_token_id=None, pad_token_id=None)  # no eos: HF's generate must not stop early
CONFIGS = {
    "mamba": lambda: transformers.MambaConfig(**SMALL),
    # untied head, biased projections, explicit dt rank and eps: every optional tensor and field
    "mamba-bias-untied": lambda: transformers.MambaConfig(**SMALL, use_bias=True, tie_word_embeddings=False,
                                                         time_step_rank=3, layer_norm_epsilon=1e-3),
    "mamba2": lambda: transformers.Mamba2Config(**SMALL, num_heads=8, head_dim=8, n_groups=1, chunk_size=16),
}
F32 = dict(atol=1e-4, rtol=1e-3)
F64 = dict(atol=1e-5, rtol=1e-5)


def hf_model(name: str, seed: int = 0):
    """A random HF model of ``CONFIGS[name]``, off its init (D = 1, equal A rows), so that every tensor
    matters and greedy generation does not settle on one token."""
    cfg = CONFIGS[name]()
    cls = transformers.Mamba2ForCausalLM if cfg.model_type == "mamba2" else transformers.MambaForCausalLM
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():  # each tensor at its own scale (a model off scale magnifies float32 rounding)
        for p in model.parameters():
            p.mul_(1 + 0.3 * torch.randn_like(p)).add_(0.02 * torch.randn_like(p))
        for layer in model.backbone.layers:  # mixers outweigh the residual: a tied head then does not
            layer.mixer.out_proj.weight.mul_(4)  # just echo the last input token
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (HF model, its save_pretrained folder)."""
    torch.set_num_threads(1)
    out = {}
    for name in CONFIGS:
        model = hf_model(name)
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        out[name] = model, folder
    return out


def ids(b: int = 2, l: int = 37, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (b, l), generator=torch.Generator().manual_seed(seed))  # (b, l)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_hf_in_float32(saved, name):
    hf, folder = saved[name]
    ours = load_hf_mamba(folder)
    assert ours.embedding.weight.dtype == torch.float32 and not ours.training
    x = ids()
    with torch.no_grad():
        want = hf(x).logits  # (b, l, v)
    torch.testing.assert_close(ours(x), want, **F32)
    # the recurrent path too: prefill of a prefix, then one step per token
    logits, cache = ours.prefill(x[:, :20], all_logits=True)  # (b, 20, v)
    torch.testing.assert_close(logits, want[:, :20], **F32)
    for t in range(20, 25):
        torch.testing.assert_close(ours.step(x[:, t], cache), want[:, t], **F32)


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_logits_match_hf_in_float64(saved, name):
    _, folder = saved[name]
    cls = type(saved[name][0])
    hf = cls.from_pretrained(folder, dtype=torch.float64).eval()
    ours = load_hf_mamba(folder, dtype=torch.float64)
    assert ours.embedding.weight.dtype == torch.float64
    x = ids()
    with torch.no_grad():
        want = hf(x).logits.double()  # (b, l, v) HF returns float32 logits
    torch.testing.assert_close(ours(x), want, **F64)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_generation_matches_hf(saved, name):
    hf, folder = saved[name]
    ours = load_hf_mamba(folder)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [42, 9], [17]]
    want = [hf.generate(torch.tensor([p]), max_new_tokens=20, do_sample=False)[0, len(p):].tolist()
            for p in prompts]
    assert ours.generate(prompts, 20) == want  # ours batched (right-padded), HF one prompt at a time
    assert len({t for row in want for t in row}) > 5  # not one repeated token


@pytest.mark.parametrize("name", list(CONFIGS))
def test_save_round_trip_loads_in_transformers(saved, tmp_path, name):
    hf, folder = saved[name]
    ours = load_hf_mamba(folder)
    save_hf_mamba(ours, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    assert is_hf_mamba_folder(tmp_path / "out")
    back = type(hf).from_pretrained(tmp_path / "out").eval()
    x = ids()
    with torch.no_grad():
        assert torch.equal(back(x).logits, hf(x).logits)
    again = load_hf_mamba(tmp_path / "out")
    assert again.cfg == ours.cfg
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))


@pytest.mark.parametrize("name,layer", [("mamba", dict(d_state=4)),
                                        ("mamba2", dict(d_state=4, headdim=8, chunk_size=8, norm_eps=1e-5))])
def test_a_model_of_ours_saves_for_transformers(tmp_path, name, layer):
    torch.manual_seed(3)
    backbone = BackboneConfig(name=name, d_model=16, n_layers=2, norm_eps=1e-5 if name == "mamba2" else None)
    ours = CausalLM(CausalLMConfig(vocab_size=V, backbone=backbone.with_layer(**layer))).eval()
    save_hf_mamba(ours, tmp_path)
    cls = transformers.Mamba2ForCausalLM if name == "mamba2" else transformers.MambaForCausalLM
    hf = cls.from_pretrained(tmp_path).eval()
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x), **F32)


def test_a_mamba2_model_with_two_norm_eps_is_refused(tmp_path):
    backbone = BackboneConfig(name="mamba2", d_model=16, n_layers=1).with_layer(d_state=4, headdim=8)
    with pytest.raises(ValueError, match="layer_norm_epsilon.*set them equal"):
        save_hf_mamba(CausalLM(CausalLMConfig(vocab_size=V, backbone=backbone)), tmp_path)
    with pytest.raises(ValueError, match="plain mamba or mamba2"):
        save_hf_mamba(CausalLM(CausalLMConfig(vocab_size=V, backbone=BackboneConfig(name="s4d"))), tmp_path)


def test_sharded_safetensors_and_a_hub_id_from_the_local_cache(saved, tmp_path):
    hf, _ = saved["mamba2"]
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="30KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    x = ids()
    with torch.no_grad():
        want = hf(x).logits
    torch.testing.assert_close(load_hf_mamba(tmp_path / "sharded")(x), want, **F32)
    # a Hub cache as huggingface_hub lays it out: refs/main names the snapshot
    repo = tmp_path / "cache" / "models--someone--tiny-mamba2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots").mkdir()
    (tmp_path / "sharded").rename(repo / "snapshots" / ("0" * 40))
    ours = load_hf_mamba("someone/tiny-mamba2", cache_dir=tmp_path / "cache")
    torch.testing.assert_close(ours(x), want, **F32)
    with pytest.raises(CheckpointError, match="not a model in the local Hugging Face cache"):
        load_hf_mamba("someone/not-cached", cache_dir=tmp_path / "cache")


def _copy(folder, tmp_path, config_edit=None, tensors_edit=None):
    """A copy of a saved HF folder with its config dict and / or its tensors edited."""
    out = tmp_path / "edited"
    out.mkdir()
    cfg = json.loads((folder / "config.json").read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    (config_edit or (lambda c: None))(cfg)
    (tensors_edit or (lambda t: None))(tensors)
    (out / "config.json").write_text(json.dumps(cfg))
    save_file(tensors, str(out / "model.safetensors"))
    return out


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.update(model_type="llama"), r"config\.json: model_type 'llama' is not supported"),
    (lambda c: c.update(n_groups=2), r"config\.json: field 'n_groups' = 2"),
    (lambda c: c.update(time_step_limit=[0.0, 0.1]), r"config\.json: field 'time_step_limit'"),
    (lambda c: c.update(hidden_act="gelu"), r"config\.json: field 'hidden_act'"),
    (lambda c: c.update(head_dim=16), r"config\.json: num_heads \* head_dim"),
    (lambda c: c.update(hidden_size="32"), r"config\.json: field 'hidden_size' = '32' is not int"),
    (lambda c: c.update(layer_norm_epsilon=None), r"config\.json: field 'layer_norm_epsilon' = None"),
    (lambda c: c.update(state_size=0), r"config\.json: not a configuration our layers can build: backbone\.mamba2: d_state"),
])
def test_unsupported_configs_are_refused_naming_the_field(saved, tmp_path, edit, match):
    folder = _copy(saved["mamba2"][1], tmp_path, config_edit=edit)
    with pytest.raises(CheckpointError, match=match):
        load_hf_mamba(folder)
    assert is_hf_mamba_folder(folder) == ("llama" not in match)


def test_a_time_step_rank_that_does_not_fit_the_tensors_is_refused(saved, tmp_path):
    folder = _copy(saved["mamba"][1], tmp_path, config_edit=lambda c: c.update(time_step_rank=3))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: does not fit the model of .*config\.json "
                                              r".*dt_proj\.weight has shape \(64, 2\), .* needs \(64, 3\)"):
        load_hf_mamba(folder)


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.pop("backbone.layers.1.mixer.D"), r"model\.safetensors: does not fit .*missing backbone\.layers\.1\.mixer\.D"),
    (lambda t: t.update({"backbone.layers.0.mixer.x_proj.weight": torch.zeros(20, 64)}),
     r"model\.safetensors: does not fit .*x_proj\.weight has shape \(20, 64\)"),
    (lambda t: t.update(extra=torch.zeros(1)), r"model\.safetensors: does not fit .*unexpected extra"),
    (lambda t: t.update({"lm_head.weight": torch.zeros(V, 32)}), r"lm_head\.weight differs"),
])
def test_bad_tensors_are_refused_naming_the_file(saved, tmp_path, edit, match):
    folder = _copy(saved["mamba"][1], tmp_path, tensors_edit=edit)
    with pytest.raises(CheckpointError, match=match):
        load_hf_mamba(folder)


def test_mamba_ssm_embedding_name_is_read_as_hf_does(saved, tmp_path):
    hf, folder = saved["mamba"]
    rename = lambda t: t.update({"backbone.embedding.weight": t.pop("backbone.embeddings.weight")})  # noqa: E731
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(load_hf_mamba(_copy(folder, tmp_path, tensors_edit=rename))(x), hf(x).logits, **F32)


def test_missing_files_are_named(saved, tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load_hf_mamba(tmp_path)
    folder = _copy(saved["mamba"][1], tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing.*pytorch_model\.bin"):
        load_hf_mamba(folder)
    assert not is_hf_mamba_folder(tmp_path / "nothing")
    CausalLM(CausalLMConfig(vocab_size=V)).save_pretrained(tmp_path / "ours")  # no model_type in our config
    assert not is_hf_mamba_folder(tmp_path / "ours")


def test_norm_eps_defaults_keep_the_stack_as_it_was():
    cfg = BackboneConfig(name="mamba", d_model=16, n_layers=2)
    assert cfg.norm_eps is None
    stack = build_backbone(cfg)
    assert {m.eps for m in stack.modules() if isinstance(m, RMSNorm)} == {None}
    assert count_parameters(build_backbone(BackboneConfig(name="mamba", d_model=16, n_layers=2,
                                                          norm_eps=1e-5))) == count_parameters(stack)
    with pytest.raises(ValueError, match="norm_eps"):
        BackboneConfig(name="mamba", norm_eps=0.0).validate()
    with pytest.raises(ValueError, match="norm_eps"):
        BackboneConfig(name="transformer", norm_eps=1e-5).validate()


def test_lm_generate_command_reads_a_hf_folder(tmp_path):
    """`mambadiff lm generate` on a HF folder with its tokenizer.json: HF's own greedy continuation."""
    from click.testing import CliRunner

    from mambadiff.cli import main
    from mambadiff.data.lm_tokenizers import BPETokenizer

    tok = BPETokenizer.train(["the cat sat on the mat; the dog ate the log"] * 20, vocab_size=300)
    torch.manual_seed(0)
    hf = transformers.MambaForCausalLM(transformers.MambaConfig(**{**SMALL, "vocab_size": tok.vocab_size})).eval()
    with torch.no_grad():
        for layer in hf.backbone.layers:
            layer.mixer.out_proj.weight.mul_(4)
    folder = tmp_path / "hf"
    hf.save_pretrained(folder)
    tok.tok.save(str(folder / "tokenizer.json"))
    prompt = "the cat"
    ids = tok.encode(prompt)
    want = hf.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids):].tolist()
    out = CliRunner().invoke(main, ["lm", "generate", "--checkpoint", str(folder), "--prompt", prompt,
                                    "--max-new-tokens", "8", "--temperature", "0", "--no-stop-at-eos"])
    assert out.exit_code == 0, out.output
    assert out.output == prompt + tok.decode(want) + "\n"
