"""`mambadiff lm train`, `mambadiff lm eval` and `mambadiff lm generate`."""
from __future__ import annotations

import sys

import click

from mambadiff.config import ConfigError, load_config
from mambadiff.tasks.lm.config import LMGenerateConfig

from .config_options import option_flags
from .training import run_training, train_arguments


def _fail(err: Exception) -> None:
    raise click.ClickException(" ".join(str(err).split()))  # one line


@click.group("lm")
def lm_group():
    """Causal language models on every backbone: train on a text or jsonl file, score, generate.

    Shipped configs: shakespeare-char (Tiny Shakespeare characters, nanoGPT's recipe), imdb-bytes (IMDB reviews as
    UTF-8 bytes, MambaByte-style). Data paths are relative (../shared/data/...): run from the repository root.
    """


@lm_group.command("train")
@train_arguments("shakespeare-char, imdb-bytes")
def train_command(config, resume, overrides):
    """Train a language model. OVERRIDES are key=value, e.g. model.backbone.name=transformer train.max_minutes=5."""
    from mambadiff.tasks.lm import LMConfig, train_lm

    def train():
        result, _, _, metrics = train_lm(load_config(LMConfig, config, overrides), resume=resume)
        valid = metrics["valid"]
        return result, (f"valid: loss {valid['loss']:.4f} nats/token, {valid['bpb']:.4f} bits/byte "
                        f"({valid['tokens']:,} tokens)")

    run_training(train)


@lm_group.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False),
              help="A run folder (its latest checkpoint) or a checkpoint folder.")
@click.option("--data", "data_path", default=None, type=click.Path(dir_okay=False),
              help="Score this text or jsonl file (whole) instead of the run's validation split.")
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of the EMA weights.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the scores here.")
def eval_command(checkpoint, data_path, no_ema, json_path):
    """Score a language model: nats per token (loss) and bits per byte (bpb)."""
    from mambadiff.data.errors import DataError
    from mambadiff.data.lm_text import read_documents
    from mambadiff.tasks.lm import encode_documents, load_lm, load_streams, score_stream
    from mambadiff.train.checkpoint import atomic_write_json
    try:
        model, tok, cfg = load_lm(checkpoint, ema=not no_ema)
        if data_path is None and cfg is None:
            raise ValueError(f"{checkpoint} is a saved model without its run's data: give --data")
        if data_path is not None:
            d = cfg.data if cfg is not None else None
            stream = encode_documents(tok, read_documents(data_path, d.format if d else "auto",
                                                          d.text_field if d else "text"))
        else:
            stream = load_streams(cfg.data, lambda _docs: tok)[0].valid
        block = cfg.data.block_size if cfg is not None else 256
        scores = score_stream(model, stream, block, tok.token_bytes, cfg.data.eval_batch_size if cfg else 32)
    except (DataError, ConfigError, FileNotFoundError, ValueError) as e:
        _fail(e)
    click.echo(f"loss {scores['loss']:.4f} nats/token, {scores['bpb']:.4f} bits/byte over {scores['tokens']:,} tokens")
    if json_path:
        atomic_write_json(json_path, {"checkpoint": str(checkpoint), "data": data_path or "valid", **scores})


@lm_group.command("generate")
@click.option("--checkpoint", required=True,
              help="A run folder, a checkpoint folder, a saved model, or a Hugging Face Mamba / Mamba-2 folder "
                   "or Hub id (from the local cache; nothing is downloaded).")
@click.option("--prompt", default="\n", show_default="a newline",
              help="The text to continue ('-': read it from stdin).")
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of the EMA weights.")
@option_flags([("", LMGenerateConfig)])
def generate_command(checkpoint, prompt, no_ema, **options):
    """Continue a prompt: the prompt runs once through the parallel path, then one recurrent step per token."""
    import torch

    from mambadiff.tasks.lm import load_lm
    settings = LMGenerateConfig(**{k: v for k, v in options.items() if v is not None})
    try:
        if prompt == "-":
            prompt = sys.stdin.read() if sys.stdin is not None and not sys.stdin.closed else ""
        model, tok, _ = load_lm(checkpoint, ema=not no_ema)
        ids = tok.encode(prompt) or [tok.eos_id]
        generator = torch.Generator().manual_seed(settings.seed)
        outs = model.generate([ids] * settings.num_samples, settings.max_new_tokens,
                              temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
                              stop_ids=[tok.eos_id] if settings.stop_at_eos else (), pad_id=tok.eos_id,
                              generator=generator)
    except (FileNotFoundError, ValueError) as e:
        _fail(e)
    for i, out in enumerate(outs):
        if settings.num_samples > 1:
            click.echo(f"--- sample {i + 1}")
        click.echo(prompt + tok.decode(out))
