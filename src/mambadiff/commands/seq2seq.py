"""`mambadiff train`, `mambadiff generate` and `mambadiff demo`."""
from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import click

from mambadiff.config import ConfigError, load_config

from .config_options import sampling_flags


def _fail(err: Exception) -> None:
    if isinstance(err, OSError):  # a full disk, a missing permission: the file and the reason, one line
        from mambadiff.fileio import describe_os_error
        raise click.ClickException(describe_os_error(err))
    raise click.ClickException(str(err))


def _load_cfg(config, overrides):
    from mambadiff.tasks.seq2seq import Seq2SeqConfig
    try:
        return load_config(Seq2SeqConfig, config, overrides)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        _fail(e)


def workers_option(command):
    """``--workers``: batches sampled at once (see `Paraphraser.generate_rows`)."""
    return click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                        help="Batches sampled at once, each in a thread with a share of the CPU threads "
                             "(0: one per CPU thread on CPU, 1 on a GPU). The draws do not depend on it.")(command)


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
    except (DataError, ConfigError, OSError, ValueError) as e:
        _fail(e)
    msg = f"step {result.step} in {result.seconds:.0f}s ({result.tokens_per_s:,.0f} tokens/s); checkpoint {result.checkpoint}"
    if result.interrupted:  # 130 after Ctrl-C, 143 after SIGTERM (128 + the signal number)
        from mambadiff.train.interrupt import exit_code
        click.echo(f"interrupted: {msg}; resume with --resume", err=True)
        sys.exit(exit_code(result.stop_signal))
    click.echo(msg)


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
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False),
              help="A run folder (its latest checkpoint) or a checkpoint folder.")
@click.option("--data", "data_path", type=click.Path(exists=True, allow_dash=True),
              help="A jsonl file of {src[, trg]}, a DiffuSeq folder (then --split), or - for jsonl on stdin.")
@click.option("--text", "texts", multiple=True,
              help="A source sentence (repeatable); - reads one sentence per line from stdin.")
@click.option("--split", default="test", show_default=True, help="With a DiffuSeq folder as --data: the split to read.")
@sampling_flags
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda.")
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of the EMA weights.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Output jsonl (rows appended batch by batch). Default: print the outputs to stdout.")
@click.option("--resume", is_flag=True,
              help="Keep the complete rows --out already holds (same checkpoint and settings) and add the rest.")
@workers_option
def generate_command(checkpoint, data_path, texts, split, device, no_ema, out_path, resume, workers, **options):
    """Sample targets: jsonl rows with source, reference (when the input has one), recover and samples,
    or one output line per source on stdout.

    Every sampling option defaults to the checkpoint's `sample` config (`sample.gaussian` or
    `sample.masked` by the model's diffusion.process); an option of the other process is an error.
    Rows are written batch by batch. The same --seed and --batch-size (and settings) give the same rows,
    whether in one run or resumed after a crash with --resume. Examples longer than the model's seq_len
    are truncated as in training (a warning gives their count)."""
    from mambadiff.data.errors import DataError
    from mambadiff.tasks.paraphrase import Paraphraser, sampling_workers
    from mambadiff.train.checkpoint import resolve_checkpoint

    if (data_path is None) == (not texts):
        raise click.UsageError("give the sources with either --data or --text")
    if texts and "-" in texts and len(texts) > 1:
        raise click.UsageError("--text - reads every source from stdin: give it alone")
    if resume and not out_path:
        raise click.UsageError("--resume needs --out (the file to continue)")
    limit = options.pop("limit")
    try:
        para = Paraphraser.from_pretrained(checkpoint, device=device, ema=not no_ema)
        settings = para.settings(**options)
        limit = (para.cfg.sample.limit if limit is None else limit) or None  # 0: all
        open_rows = _source_rows(data_path, texts, split)
        total = None
        if open_rows is not None:  # a file: read it once up front, so bad input fails before any sampling
            total = _check_sources(para, open_rows(), limit, settings.batch_size)
            rows = open_rows()
        else:  # stdin, a named pipe, a device: read once, as it comes; an empty one fails before --out is made
            rows = _first_read(_stream_rows(data_path, texts, split))
        rows = itertools.islice(rows, limit)
        output = None
        done = 0
        if out_path:
            run = {"checkpoint": str(resolve_checkpoint(checkpoint).resolve()), "ema": not no_ema,
                   "device": para.device.type, "settings": settings.to_dict()}
            output = _open_output(out_path, run, resume)
            done = output.rows
    except (DataError, ValueError, FileNotFoundError, OSError) as e:
        _fail(e)
    seen = _Counter(rows)
    t0 = time.perf_counter()
    try:
        n_rows = None if total is None else max(0, total - done)
        workers = sampling_workers(workers, para.device, n_rows, settings.batch_size)
        for records in para.generate_rows(seen, settings, skip=done, progress=True, total=total,
                                          on_skipped=output.check_skipped if output else None, workers=workers):
            if output is not None:
                output.write(records)
            else:
                for r in records:
                    click.echo(r["recover"])
                sys.stdout.flush()
        if output is not None and output.rows > seen.n:
            raise ValueError(f"{out_path}: holds {output.rows} rows but this run covers only {seen.n} input rows; "
                             "was it generated from other data? Run without --resume to start over")
    except KeyboardInterrupt:
        if output is not None:
            click.echo(f"interrupted: {output.rows} rows in {out_path}; continue with --resume", err=True)
        sys.exit(130)
    except (DataError, ValueError, OSError) as e:
        _fail(e)
    finally:
        if output is not None:
            output.close()
    if output is not None:
        kept = f" ({done} kept from before)" if done else ""
        click.echo(f"wrote {output.rows} rows to {out_path}{kept} in {time.perf_counter() - t0:.1f}s", err=True)


class _Counter:
    """Counts the rows an iterator hands out."""

    def __init__(self, rows):
        self.rows, self.n = iter(rows), 0

    def __iter__(self):
        return self

    def __next__(self):
        row = next(self.rows)
        self.n += 1
        return row


def _source_rows(data_path, texts, split):
    """A function that opens the sources afresh (None for stdin, a named pipe or a device such as
    /dev/null: those can be read only once)."""
    from mambadiff.data.seq2seq import is_stream, resolve_split_path
    from mambadiff.tasks.generation_io import iter_text_rows
    if texts:
        if texts == ("-",):
            return None
        return lambda: iter_text_rows(texts, "--text")
    if data_path == "-":
        return None
    path = resolve_split_path(data_path, split if Path(data_path).is_dir() else None)
    return None if is_stream(path) else lambda: _file_rows(path)


def _file_rows(path):
    from mambadiff.tasks.generation_io import iter_jsonl_rows
    with open(path, "rb") as f:
        yield from iter_jsonl_rows(f, str(path))


def _stream_rows(data_path, texts, split):
    """The rows of a source that can be read once: stdin (``-``) or a named pipe or device."""
    from mambadiff.data.seq2seq import resolve_split_path
    from mambadiff.tasks.generation_io import iter_jsonl_rows, iter_text_rows
    if not texts and data_path != "-":
        return _file_rows(resolve_split_path(data_path, split if Path(data_path).is_dir() else None))
    if sys.stdin is None or sys.stdin.closed:
        raise click.UsageError("the sources come from stdin (- was given), but stdin is closed")
    if data_path == "-":
        return iter_jsonl_rows(sys.stdin.buffer, "<stdin>")
    return iter_text_rows(sys.stdin, "<stdin>")


def _first_read(rows):
    """``rows`` with its first row read now: an empty or bad jsonl start is an error before any output."""
    rows = iter(rows)
    try:
        first = next(rows)
    except StopIteration:
        return iter(())
    return itertools.chain([first], rows)


def _check_sources(para, rows, limit, batch_size) -> int:
    """Lays out every source (tokenizer and length checks) without sampling; returns how many there are."""
    from mambadiff.tasks.paraphrase import batches
    n = 0
    for _, batch in batches(itertools.islice(rows, limit), batch_size):
        para.layout(batch)
        n += len(batch)
    return n


def _open_output(out_path, run, resume):
    from mambadiff.tasks.generation_io import GenerationOutput
    output = GenerationOutput(out_path, run)
    output.open(resume)
    return output


@click.command("copy-accuracy")
@checkpoint_and_data_options
@click.option("--split", default="valid", show_default=True, help="With a DiffuSeq folder as --data: the split to read.")
@click.option("--t", "t_values", default="100,500,1000,1500", show_default=True,
              help="Comma-separated diffusion steps at which to noise the targets.")
@click.option("--limit", type=int, default=512, show_default=True, help="Only the first N examples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise drawn for x_t.")
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
        if cfg.diffusion.process != "gaussian":
            raise ValueError(f"{checkpoint}: copy-accuracy scores the Gaussian process's x0 prediction; this model "
                             f"uses diffusion.process: {cfg.diffusion.process}")
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
@click.option("--run-dir", default="runs/demo", show_default=True, help="Run folder of the demo model (reused when it holds one).")
@click.option("--config", "config", default="demo", show_default=True, help="Config file or shipped name.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the metrics here.")
@click.option("--resume", is_flag=True, help="Continue an interrupted demo run.")
@click.argument("overrides", nargs=-1)
def demo_command(run_dir, config, json_path, resume, overrides):
    """Train MambaDiff on the built-in paraphrase corpus, sample, and score it against copying the source."""
    from mambadiff.tasks.demo import run_demo
    try:
        run_demo(run_dir=run_dir, config=config, overrides=list(overrides), json_path=json_path, resume=resume)
    except (ConfigError, ValueError, OSError) as e:
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
        from mambadiff.tasks.ar.config import is_ar_config
        if is_ar_config(name):  # the autoregressive baselines, sized against qqp-cpu
            from mambadiff.tasks.ar import ARConfig, ar_parameter_report
            cfg = load_config(ARConfig, name)
            rep = ar_parameter_report(cfg)
        else:
            cfg = _load_cfg(name, [])
            rep = config_parameter_report(cfg)
        rows.append([name, cfg.model.backbone.name, rep["embedding"], rep["backbone"], rep["other"], rep["total"]])
    click.echo(tabulate(rows, headers=["config", "backbone", "embedding", "backbone params", "other", "total"], intfmt=","))
