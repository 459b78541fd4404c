"""`mambadiff bench synthetic`: selective copying, induction heads and MQAR, each model trained and scored
(mambadiff.bench.synthetic)."""
from __future__ import annotations

import click

from mambadiff.bench.synthetic import (DEFAULT_D_MODEL, DEFAULT_LAYERS, DEFAULT_MQAR_LR, DEFAULT_MQAR_NUM_SYMBOLS,
                                       DEFAULT_MQAR_SETTINGS, DEFAULT_MQAR_STEPS, DEFAULT_NUM_THREADS,
                                       DEFAULT_SEQ_LEN, DEFAULT_STEPS, DEFAULT_TASKS, run_synthetic_benchmark,
                                       validate_args)
from mambadiff.data.synthetic import TASKS

from .options import json_option, parse_int_pairs, split_names, threads_option


@click.command("synthetic", help="Selective copying, induction heads and multi-query associative recall: "
                                 "selective and attention models vs time-invariant ones (S4D, S4).")
@click.option("--task", "tasks", multiple=True, type=click.Choice(TASKS),
              help="Task (repeatable). Default: all three.")
@click.option("--model", "models", multiple=True, help="Backbone (repeatable). Default: mamba and s4d.")
@click.option("--d-model", type=int, default=DEFAULT_D_MODEL, show_default=True, help="Model width d.")
@click.option("--layers", "n_layers", type=int, default=DEFAULT_LAYERS, show_default=True, help="Layers per model.")
@click.option("--steps", type=int, default=DEFAULT_STEPS, show_default=True,
              help="Training steps of selective copying and induction heads.")
@click.option("--seq-len", type=int, default=DEFAULT_SEQ_LEN, show_default=True,
              help="Sequence length of selective copying and induction heads.")
@click.option("--mqar", "mqar", default=",".join(f"{l}x{n}" for l, n in DEFAULT_MQAR_SETTINGS), show_default=True,
              help="MQAR settings LxN: sequence length x key-value pairs, comma separated.")
@click.option("--mqar-steps", type=int, default=DEFAULT_MQAR_STEPS, show_default=True, help="Training steps of each MQAR run.")
@click.option("--mqar-lr", type=float, default=DEFAULT_MQAR_LR, show_default=True, help="Learning rate of each MQAR run.")
@click.option("--mqar-symbols", "mqar_num_symbols", type=int, default=DEFAULT_MQAR_NUM_SYMBOLS, show_default=True,
              help="Size of MQAR's key alphabet and of its value alphabet.")
@click.option("--mqar-shared-shape", is_flag=True,
              help="Give every model the shared --d-model x --layers on MQAR (by default Mamba trades depth "
                   "for width there: half the layers, 1.75x the width).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data and the models.")
@json_option("Write the records to this JSON file (atomically).")
@threads_option(DEFAULT_NUM_THREADS, "torch CPU threads (0: torch's default).", dest="num_threads",
                type=click.IntRange(min=0))
def synthetic_command(tasks, models, d_model, n_layers, steps, seq_len, mqar, mqar_steps, mqar_lr,
                      mqar_num_symbols, mqar_shared_shape, seed, json_path, num_threads):
    tasks = tasks or DEFAULT_TASKS
    models = split_names(models) or ("mamba", "s4d")
    mqar_settings = parse_int_pairs(mqar, "LxN (sequence length x key-value pairs), e.g. 64x8", "--mqar")
    kw = dict(d_model=d_model, n_layers=n_layers, steps=steps, seq_len=seq_len, seed=seed,
              mqar_settings=mqar_settings, mqar_num_symbols=mqar_num_symbols, mqar_steps=mqar_steps,
              mqar_lr=mqar_lr)
    try:
        validate_args(tasks, models, **kw)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    run_synthetic_benchmark(tasks=tasks, models=models, json_path=json_path, num_threads=num_threads,
                            mqar_shapes={} if mqar_shared_shape else None, **kw)
