"""`mambadiff ar train` and `mambadiff ar generate`: the autoregressive paraphraser."""
from __future__ import annotations

import json

import click

from mambadiff.config import ConfigError, load_config
from mambadiff.tasks.ar.config import ARDecodeConfig

from .config_options import option_flags
from .training import run_training, train_arguments


def _fail(err: Exception) -> None:
    raise click.ClickException(" ".join(str(err).split()))  # one line


@click.group("ar")
def ar_group():
    """The autoregressive paraphraser: a causal LM over [CLS] source [SEP] target [SEP], on any backbone.

    Shipped configs: qqp-ar-mamba2-cpu, qqp-ar-transformer-cpu (the data, tokenizer and non-embedding size of
    qqp-cpu). Outputs are the records `mambadiff generate` writes, so `mambadiff evaluate` scores them.
    """


@ar_group.command("train")
@train_arguments("qqp-ar-mamba2-cpu, qqp-ar-transformer-cpu")
def train_command(config, resume, overrides):
    """Train an autoregressive paraphraser. OVERRIDES are key=value, e.g. train.max_minutes=12."""
    from mambadiff.tasks.ar import ARConfig, train_ar

    def train():
        result, _, _ = train_ar(load_config(ARConfig, config, overrides), resume=resume)
        return result, f"valid: target loss {result.last_eval.get('loss', float('nan')):.4f} nats/token"

    run_training(train)


@ar_group.command("generate")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False),
              help="A run folder (its latest checkpoint) or a checkpoint folder.")
@click.option("--data", "data_path", required=True, type=click.Path(exists=True),
              help="A jsonl file of src/trg pairs, or a data folder (then --split).")
@click.option("--split", default="test", show_default=True, help="The split of a data folder.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output jsonl (source, reference, recover).")
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of the EMA weights.")
@option_flags([("", ARDecodeConfig)])
def generate_command(checkpoint, data_path, split, out, no_ema, **options):
    """Paraphrase the sources of a jsonl file: greedy or beam decoding, one record per pair."""
    import dataclasses

    from mambadiff.data.errors import DataError
    from mambadiff.data.seq2seq import load_seq2seq_split
    from mambadiff.fileio import atomic_write_text
    from mambadiff.tasks.ar import load_ar_model, paraphrase_dataset
    try:
        model, tok, cfg = load_ar_model(checkpoint, ema=not no_ema)
        settings = dataclasses.replace(cfg.decode, **{k: v for k, v in options.items() if v is not None})
        data = load_seq2seq_split(data_path, split, tok, cfg.data.seq_len, layout="compact",
                                  on_overflow=cfg.data.on_overflow, limit=settings.limit or None)
        records = [r for batch in paraphrase_dataset(model, tok, data, settings, cfg.data.seq_len, progress=True)
                   for r in batch]
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    except (DataError, ConfigError, FileNotFoundError, ValueError) as e:
        _fail(e)
    click.echo(f"wrote {len(records)} records to {out}")
