"""Every sampling option is declared once (a config dataclass field) and reaches every place that
takes it: the `generate` and `bench curve` flags, the `Paraphraser` and `generate()` keywords, the
settings recorded beside an output file, and the docs' options page. Walks the declarations, so an
option added later is covered without a new test."""
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mambadiff.cli import main
from mambadiff.diffusion.samplers import SAMPLER_CONFIGS
from mambadiff.options import option_specs
from mambadiff.tasks import paraphrase
from mambadiff.tasks.seq2seq import SampleConfig, generation_settings, load_seq2seq_model
from mambadiff.tasks.seq2seq.sampling import DRAW_OPTIONS

SECTIONS = {"sample": SampleConfig, **SAMPLER_CONFIGS}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "reference" / "options.md"


def non_default(spec):
    """A valid value other than the option's default."""
    if spec.kind == "bool":
        return not spec.default
    if spec.choices:
        return next(c for c in spec.choices if c != spec.default)
    if spec.kind == "int":
        return max(spec.default, int(spec.minimum or 0)) + 3
    value = spec.default + 0.5
    return value if spec.maximum is None or value <= spec.maximum else spec.default - 0.5


def cases(sections=SECTIONS):
    """(section, spec, options) for every declared option; options hold what a rule needs beside it."""
    return list(_cases(sections))


def _cases(sections):
    for section, cls in sections.items():
        for spec in option_specs(cls):
            options = {spec.name: non_default(spec)}
            if spec.name == "length_beam":
                options["predict_length"] = True
            yield pytest.param(section, spec, options, id=f"{section}.{spec.name}")


def flag(name):
    return "--" + name.replace("_", "-")


def cli_args(options):
    args = []
    for name, value in options.items():
        if isinstance(value, bool):
            spec = next(s for cls in SECTIONS.values() for s in option_specs(cls) if s.name == name)
            args.append(flag(name) if value else "--" + (spec.off_flag or "no-" + name.replace("_", "-")))
        else:
            args += [flag(name), str(value)]
    return args


@pytest.mark.parametrize("command", [["generate"], ["bench", "curve"]])
def test_every_option_is_a_flag_with_its_help(command):
    text = " ".join(CliRunner().invoke(main, [*command, "--help"], terminal_width=400).output.split())
    for section, cls in SECTIONS.items():
        for spec in option_specs(cls):
            if command == ["bench", "curve"] and spec.name == "limit":
                continue  # the curve's own --limit (pairs per checkpoint) replaces it
            assert flag(spec.name) in text, spec.name
            assert " ".join(spec.help.split()[:6]) in text, spec.name


@pytest.mark.parametrize("section, spec, options", cases())
def test_every_option_parses_from_its_flag(section, spec, options):
    from mambadiff.commands.seq2seq import generate_command
    ctx = generate_command.make_context("generate", ["--checkpoint", ".", "--text", "x", *cli_args(options)])
    assert {k: ctx.params[k] for k in options} == options


@pytest.mark.parametrize("section, spec, options", cases())
def test_every_option_is_a_keyword_and_a_recorded_setting(section, spec, options):
    for process in SAMPLER_CONFIGS:
        own = {s.name for s in option_specs(SECTIONS[process])}
        if section not in ("sample", process) and spec.name not in own:
            with pytest.raises(ValueError, match=f"{spec.name} is an option of the {section} sampler"):
                generation_settings(SampleConfig(), process, options)
            continue
        if spec.name == "limit":  # how many examples, not how they are drawn: a generate() keyword
            with pytest.raises(ValueError, match="unknown sampling option 'limit'"):
                generation_settings(SampleConfig(), process, options)
            continue
        if section not in ("sample", process):  # a name both samplers declare (steps): the value must fit both
            options = {spec.name: max(options[spec.name], 1)}
        recorded = generation_settings(SampleConfig(), process, options).to_dict()
        assert {k: recorded[k] for k in options} == options
        assert json.loads(json.dumps(recorded)) == recorded  # stored as JSON beside the output


def test_the_options_page_is_generated_from_every_section():
    text = DOCS.read_text()
    for cls in SECTIONS.values():
        assert f"<!-- options: {cls.__module__}.{cls.__qualname__} -->" in text


@pytest.fixture()
def masked_copy(tiny_run, tmp_path):
    """tiny_run's checkpoint relabelled as a masked-process model (the denoiser is the same network),
    trained with source dropout (so that guidance applies)."""
    from mambadiff.train.checkpoint import resolve_checkpoint
    folder = tmp_path / "masked"
    shutil.copytree(resolve_checkpoint(tiny_run), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["diffusion"]["process"] = "masked"
    cfg["diffusion"]["source_dropout"] = 0.1
    cfg["sample"]["limit"] = 3
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("process", ["gaussian", "masked"])
def test_paraphraser_and_generate_take_every_option_of_their_process(tiny_run, masked_copy, monkeypatch, process):
    model, tok, cfg = load_seq2seq_model(tiny_run if process == "gaussian" else masked_copy)
    para = paraphrase.Paraphraser(model, tok, cfg)
    seen = []
    monkeypatch.setattr(paraphrase.Paraphraser, "generate_rows",
                        lambda self, rows, settings, **kw: seen.append(settings) or iter([]))
    monkeypatch.setattr(paraphrase.Paraphraser, "sample_batch",
                        lambda self, ids, mask, settings, k: seen.append(settings) or ([""] * len(ids),) * 2
                        + ([[""]] * len(ids),))
    from mambadiff.data.seq2seq import load_seq2seq_split
    data = load_seq2seq_split(tiny_run / "data", "valid", tok, cfg.data.seq_len, limit=2)
    for section, spec, options in (c.values for c in _cases({"sample": SampleConfig, process: SECTIONS[process]})):
        if spec.name == "limit":
            assert len(paraphrase.generate(model, tok, cfg, data, limit=1, progress=False)) == 1
            continue
        para(["how do i learn python?"], **options)
        paraphrase.generate(model, tok, cfg, data, progress=False, **options)
        for settings in seen[-2:]:
            values = settings.to_dict()
            assert {k: values[k] for k in options} == options, (spec.name, values)


def test_generate_reads_limit_from_the_config_and_copy_accuracy_refuses_a_masked_model(masked_copy, tmp_path):
    out = tmp_path / "out.jsonl"
    valid = tmp_path / "valid.jsonl"
    valid.write_text("".join(json.dumps({"src": f"how do i learn python {i}?", "trg": "how to learn python?"}) + "\n"
                             for i in range(6)))
    r = CliRunner().invoke(main, ["generate", "--checkpoint", str(masked_copy), "--data", str(valid), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 3  # sample.limit: 3
    r = CliRunner().invoke(main, ["generate", "--checkpoint", str(masked_copy), "--data", str(valid), "--eta", "0.5"])
    assert r.exit_code != 0 and "eta is an option of the gaussian sampler" in r.output
    r = CliRunner().invoke(main, ["copy-accuracy", "--checkpoint", str(masked_copy), "--data", str(valid)])
    assert r.exit_code != 0 and "diffusion.process: masked" in r.output and "Traceback" not in r.output


def test_a_saved_flat_sample_section_loads_into_the_process_sections():
    from mambadiff.config import from_dict
    from mambadiff.tasks.seq2seq import Seq2SeqConfig
    saved = dataclasses.asdict(Seq2SeqConfig())
    saved["sample"] = {"steps": 0, "eta": 0.5, "temperature": 0.3, "remask": True, "samples": 2, "seed": 9}
    sample = from_dict(Seq2SeqConfig, saved).sample
    assert (sample.samples, sample.seed, sample.gaussian.steps, sample.gaussian.eta) == (2, 9, 0, 0.5)
    assert (sample.masked.steps, sample.masked.temperature, sample.masked.remask) == (20, 0.3, True)
