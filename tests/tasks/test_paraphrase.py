"""The Paraphraser API: call, settings checks, the per-batch randomness rule, one core for every caller."""
import pytest

from mambadiff import Paraphraser
from mambadiff.data.seq2seq import load_seq2seq_split
from mambadiff.tasks.generation_io import iter_jsonl_rows
from mambadiff.tasks.paraphrase import batch_generator, generate
from mambadiff.tasks.seq2seq import SampleConfig, generation_settings, load_seq2seq_model

TEXTS = ["how do i learn python?", "what is the best way to lose weight?", "why is the sky blue?",
         "how can i improve my english?"]


@pytest.fixture(scope="module")
def para(tiny_run):
    return Paraphraser.from_pretrained(tiny_run, device="cpu")


def test_call_returns_one_string_per_text_and_is_reproducible(para):
    out = para(TEXTS[:3], steps=3, samples=2, mbr=True, seed=5)
    assert isinstance(out, list) and len(out) == 3 and all(isinstance(o, str) and o for o in out)
    assert para(TEXTS[:3], steps=3, samples=2, mbr=True, seed=5) == out
    assert para(TEXTS[:3], steps=3, samples=2, mbr=True, seed=6) != out


def test_rows_depend_on_their_batch_only(para):
    """The randomness rule: batch k draws from SeedSequence((seed, k, s)), whatever follows it."""
    whole = para(TEXTS, steps=3, batch_size=2, seed=1)
    assert para(TEXTS[:2], steps=3, batch_size=2, seed=1) == whole[:2]
    assert para(TEXTS[:3], steps=3, batch_size=2, seed=1)[:2] == whole[:2]
    a, b = batch_generator(1, 0, 0), batch_generator(1, 1, 0)
    assert a.initial_seed() != b.initial_seed()
    assert batch_generator(1, 0, 0).initial_seed() == a.initial_seed()


def test_dataset_generate_and_streamed_rows_are_one_core(tiny_run, para):
    """tasks.seq2seq.generate (a laid-out dataset) and generate_rows (streamed jsonl) give the same records."""
    valid = tiny_run / "data" / "valid.jsonl"
    model, tok, cfg = load_seq2seq_model(tiny_run)
    ds = load_seq2seq_split(valid, None, tok, cfg.data.seq_len, layout=cfg.data.layout, limit=5)
    old = generate(model, tok, cfg, ds, steps=3, samples=2, mbr=True, batch_size=2, seed=3, progress=False)
    settings = para.settings(steps=3, samples=2, mbr=True, batch_size=2, seed=3)
    with valid.open("rb") as f:
        rows = [r for _, r in zip(range(5), iter_jsonl_rows(f, str(valid)))]
    streamed = [rec for batch in para.generate_rows(rows, settings) for rec in batch]
    assert streamed == old
    assert all(r["recover"] in r["samples"] and len(r["samples"]) == 2 for r in old)


def test_workers_sample_the_same_rows_in_input_order(tiny_run, para):
    """Batches sampled side by side (one torch thread each) give the rows one thread gives, in input
    order, resumed or not; the randomness rule is per batch."""
    import torch

    from mambadiff.tasks.paraphrase import sampling_workers
    valid = tiny_run / "data" / "valid.jsonl"
    with valid.open("rb") as f:
        rows = [r for _, r in zip(range(11), iter_jsonl_rows(f, str(valid)))]
    settings = para.settings(steps=3, samples=2, mbr=True, batch_size=2, seed=4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the same kernels per batch in both runs: 1 thread each
        one = [rec for batch in para.generate_rows(rows, settings) for rec in batch]
        torch.set_num_threads(3)
        three = [batch for batch in para.generate_rows(rows, settings, workers=3)]
        assert torch.get_num_threads() == 3  # restored after the pool
        resumed = [rec for batch in para.generate_rows(rows, settings, workers=3, skip=5) for rec in batch]
    finally:
        torch.set_num_threads(threads)
    assert [len(b) for b in three] == [2, 2, 2, 2, 2, 1]
    assert [rec for batch in three for rec in batch] == one
    assert resumed == one[5:]
    with pytest.raises(ValueError, match="workers"):
        next(iter(para.generate_rows(rows, settings, workers=0)))
    torch.set_num_threads(2)
    try:
        assert sampling_workers(0, "cpu", 100, 8) == 2 and sampling_workers(0, "cpu", 5, 8) == 1
        assert sampling_workers(0, "cpu", None, 8) == 1 and sampling_workers(3, "cpu", 5, 8) == 3
        assert sampling_workers(0, "cuda", 100, 8) == 1
    finally:
        torch.set_num_threads(threads)


def test_settings_come_from_the_checkpoint_and_are_checked(para):
    s = para.settings()
    sc = para.cfg.sample
    assert para.process == "gaussian" and s.sampler == sc.gaussian
    assert (s.steps, s.samples, s.batch_size, s.seed) == (sc.gaussian.steps, sc.samples, sc.batch_size, sc.seed)
    assert para.max_steps == 100
    assert para.settings(steps=100).steps == 100
    assert para.settings(eta=0, solver="dpm-solver++").to_dict()["eta"] == 0.0
    for kwargs, message in [({"samples": 0}, "sample.samples must be an int >= 1"),
                            ({"batch_size": -4}, "sample.batch_size must be an int >= 1"),
                            ({"steps": 5000}, "the maximum is 100"),
                            ({"steps": -1}, "sample.gaussian.steps must be an int >= 0"),
                            ({"eta": 1.5}, "eta"), ({"clamp": "nearest"}, "clamp"), ({"seed": -1}, "seed"),
                            ({"temperature": 0.5}, "temperature is an option of the masked sampler"),
                            ({"stepz": 3}, "unknown sampling option 'stepz'")]:
        with pytest.raises(ValueError, match=message):
            para.settings(**kwargs)
        with pytest.raises(ValueError, match=message):
            para(TEXTS[:1], **kwargs)
    with pytest.raises(ValueError, match="single string"):
        para("how do i learn python?")
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        para(["ok", "  "])


def test_masked_settings_are_checked_by_their_declaration():
    sc = SampleConfig()
    s = generation_settings(sc, "masked", {"temperature": 1, "top_k": 5, "end_bias": -2})
    assert s.to_dict()["end_bias"] == -2.0 and s.to_dict()["temperature"] == 1.0
    assert isinstance(s.sampler.temperature, float) and s.sampler.remask is False
    flipped = generation_settings(sc, "masked", {"forbid_adjacent_repeat": True, "forbid_repeat_bigram": True,
                                                 "remask": True})
    assert (flipped.sampler.forbid_adjacent_repeat, flipped.sampler.forbid_repeat_bigram, flipped.sampler.remask) == (
        True, True, True)
    for kwargs, message in [({"top_k": 2}, "top_k must be 0"), ({"temperature": -0.5}, "temperature"),
                            ({"end_defer": -1.0}, "end_defer"), ({"end_bias": float("nan")}, "end_bias"),
                            ({"length_beam": 0}, "length_beam must be an int >= 1"),
                            ({"length_beam": 3, "predict_length": False}, "length_beam 3 needs sample.masked.predict"),
                            ({"steps": 0}, "sample.masked.steps must be an int >= 1"),
                            ({"eta": 0.5}, "eta is an option of the gaussian sampler"),
                            ({"samples": True}, "sample.samples must be an int")]:
        with pytest.raises(ValueError, match=message):
            generation_settings(sc, "masked", kwargs)


def test_all_t_steps_use_the_full_chain(para):
    """steps = T (and 0) run the T-step ancestral sampler: the same draws either way."""
    assert para(TEXTS[:1], steps=100, seed=2) == para(TEXTS[:1], steps=0, seed=2)
