"""`mambadiff train`, `mambadiff generate` and `mambadiff demo`."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from mambadiff.config import ConfigError, load_config


def _fail(err: Exception) -> None:
    raise click.ClickException(str(err))


def _load_cfg(config, overrides):
    from mambadiff.tasks.seq2seq import Seq2SeqConfig
    try:
        return load_config(Seq2SeqConfig, config, overrides)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        _fail(e)


@click.command("train")
@click.option("--config", "config", default=None, help="YAML file or shipped config name (demo, qqp-mamba-cpu, ...); default: built-in defaults.")
@click.option("--resume", is_flag=True, help="Continue the run folder's latest checkpoint.")
@click.argument("overrides", nargs=-1)
def train_command(config, resume, overrides):
    """Train a diffusion seq2seq model. OVERRIDES are key=value, e.g. train.steps=500 run_dir=runs/x.

    Pairs longer than data.seq_len are truncated by DiffuSeq's rule (the longer side loses its last
    tokens; see mambadiff.data.seq2seq) and a warning gives their count per file;
    data.on_overflow=error refuses them instead."""
    from mambadiff.data.errors import DataError
    from mambadiff.tasks.seq2seq import train_seq2seq
    cfg = _load_cfg(config, overrides)
    try:
        result, _, _ = train_seq2seq(cfg, resume=resume)
    except (DataError, ConfigError, FileExistsError, FileNotFoundError, ValueError) as e:
        _fail(e)
    msg = f"step {result.step} in {result.seconds:.0f}s ({result.tokens_per_s:,.0f} tokens/s); checkpoint {result.checkpoint}"
    if result.interrupted:
        click.echo(f"interrupted: {msg}; resume with --resume", err=True)
        sys.exit(130)
    click.echo(msg)


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    from mambadiff.train.checkpoint import atomic_write_text
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def checkpoint_and_data_options(command):
    """--checkpoint and --data, as every command that runs a trained model over examples takes them."""
    command = click.option("--data", "data_path", required=True, type=click.Path(exists=True),
                           help="A jsonl file of {src, trg}, or a DiffuSeq folder (then --split).")(command)
    return click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False),
                        help="A run folder (its latest checkpoint) or a checkpoint folder.")(command)


def load_examples(data_path, split, tok, cfg, limit):
    """The examples of a jsonl file, or of ``split`` in a DiffuSeq folder, laid out as ``cfg`` trained."""
    from mambadiff.data.seq2seq import load_seq2seq_split
    split_arg = split if Path(data_path).is_dir() else None
    return load_seq2seq_split(data_path, split_arg, tok, cfg.data.seq_len, layout=cfg.data.layout,
                              on_overflow=cfg.data.on_overflow, limit=limit)


@click.command("generate")
@checkpoint_and_data_options
@click.option("--split", default="test", show_default=True)
@click.option("--steps", type=int, default=None, help="Sampling steps K (respaced); 0 = all T. Default: config.")
@click.option("--samples", type=int, default=None, help="Samples per example S.")
@click.option("--mbr/--no-mbr", default=None, help="MBR-select the output among the S samples.")
@click.option("--eta", type=float, default=None, help="Respaced sampler eta (0 deterministic DDIM).")
@click.option("--clamp", type=click.Choice(["round", "logits", "none"]), default=None,
              help="Clamp x0 each step: round (nearest embedding, DiffuSeq), logits (head argmax), none.")
@click.option("--limit", type=int, default=None, help="Only the first N examples.")
@click.option("--batch-size", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of the EMA weights.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output jsonl.")
def generate_command(checkpoint, data_path, split, steps, samples, mbr, eta, clamp, limit, batch_size, seed, no_ema,
                     out_path):
    """Sample targets; writes jsonl with source, reference, recover (+ samples).

    Examples longer than the model's seq_len are truncated as in training (a warning gives their count)."""
    from mambadiff.data.errors import DataError
    from mambadiff.tasks.seq2seq import generate, load_seq2seq_model
    try:
        model, tok, cfg = load_seq2seq_model(checkpoint, ema=not no_ema)
        if clamp:
            cfg.sample.clamp = clamp
        ds = load_examples(data_path, split, tok, cfg, limit)
        t0 = time.perf_counter()
        records = generate(model, tok, cfg, ds, steps=steps, samples=samples, mbr=mbr, eta=eta,
                           batch_size=batch_size, seed=seed)
    except (DataError, ValueError, FileNotFoundError) as e:
        _fail(e)
    write_jsonl(out_path, records)
    click.echo(f"wrote {len(records)} rows to {out_path} in {time.perf_counter() - t0:.1f}s")


@click.command("copy-accuracy")
@checkpoint_and_data_options
@click.option("--split", default="valid", show_default=True)
@click.option("--t", "t_values", default="100,500,1000,1500", show_default=True,
              help="Comma-separated diffusion steps at which to noise the targets.")
@click.option("--limit", type=int, default=512, show_default=True, help="Only the first N examples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the results here.")
def copy_accuracy_command(checkpoint, data_path, split, t_values, limit, seed, json_path):
    """Word recovery of the predicted x0 at fixed noise levels, split into target words that the
    source also has (copy) and words it does not (novel)."""
    from mambadiff.data.errors import DataError
    from mambadiff.diffusion import GaussianDiffusion
    from mambadiff.train.checkpoint import atomic_write_json
    from mambadiff.tasks.seq2seq import load_seq2seq_model, x0_token_accuracy
    try:
        steps = [int(v) for v in t_values.split(",") if v.strip()]
        model, tok, cfg = load_seq2seq_model(checkpoint)
        if not steps or not all(0 <= t < cfg.diffusion.steps for t in steps):
            raise ValueError(f"--t must list steps in [0, {cfg.diffusion.steps}), got {t_values!r}")
        ds = load_examples(data_path, split, tok, cfg, limit)
        diffusion = GaussianDiffusion.from_name(cfg.diffusion.schedule, cfg.diffusion.steps)
        result = x0_token_accuracy(model, ds, diffusion, steps, tok.pad_id, seed=seed)
    except (DataError, ValueError, FileNotFoundError) as e:
        _fail(e)
    from tabulate import tabulate
    rows = [(t, r["copy"], r["novel"], r["n_copy"], r["n_novel"]) for t, r in result.items()]
    click.echo(tabulate(rows, headers=["t", "copy", "novel", "copy positions", "novel positions"],
                        tablefmt="github", floatfmt=".3f"))
    if json_path:
        atomic_write_json(json_path, {"checkpoint": str(checkpoint), "n_examples": len(ds),
                                      "accuracy": {str(t): r for t, r in result.items()}})


@click.command("demo")
@click.option("--run-dir", default="runs/demo", show_default=True)
@click.option("--config", "config", default="demo", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the metrics here.")
@click.option("--resume", is_flag=True, help="Continue an interrupted demo run.")
@click.argument("overrides", nargs=-1)
def demo_command(run_dir, config, json_path, resume, overrides):
    """Train MambaDiff on the built-in paraphrase corpus, sample, and score it against copying the source."""
    from mambadiff.tasks.demo import run_demo
    try:
        run_demo(run_dir=run_dir, config=config, overrides=list(overrides), json_path=json_path, resume=resume)
    except (ConfigError, ValueError, FileExistsError, FileNotFoundError) as e:
        _fail(e)


@click.command("params")
@click.option("--config", "configs", multiple=True, help="Config file or shipped name; default: every shipped diffusion config.")
def params_command(configs):
    """Parameter counts of diffusion configs (embedding, backbone, other, total)."""
    from tabulate import tabulate

    from mambadiff.config import SHIPPED_CONFIGS
    from mambadiff.tasks.seq2seq import config_parameter_report
    names = configs or sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml")
                              if p.stem == "demo" or p.stem.startswith("qqp-"))
    rows = []
    for name in names:
        cfg = _load_cfg(name, [])
        rep = config_parameter_report(cfg)
        rows.append([name, cfg.model.backbone.name, rep["embedding"], rep["backbone"], rep["other"], rep["total"]])
    click.echo(tabulate(rows, headers=["config", "backbone", "embedding", "backbone params", "other", "total"], intfmt=","))
