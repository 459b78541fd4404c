"""`mambadiff bench scan`: the selective-scan backends (or the SSD algorithms), forward and forward+backward
(mambadiff.bench.scan)."""
from __future__ import annotations

import click
import torch

from mambadiff.bench.scan import KERNELS, run_scan_benchmark

from .options import click_errors, device_option, json_option, threads_option, timing_options


@click.command("scan")
@click.option("--backend", "backends", multiple=True, help="Backends to time (default: every available one); "
              "reference is always timed for the speed-up column.")
@click.option("--case", "cases", multiple=True, help="BxLxDxN, e.g. 64x128x256x16 (repeatable). Default: "
              "64x128x256x16 fwd and fwd+bwd, 8x1024x256x16 and 8x4096x256x16 fwd.")
@timing_options(repeats=5, warmup=2)
@threads_option(0, "torch threads (0: torch's default).")
@click.option("--dtype", default="float32", show_default=True, help="Input dtype of the scans (float32, float64, ...).")
@device_option()
@click.option("--kernel", type=click.Choice(KERNELS), default="s6", show_default=True,
              help="s6: the selective scan's backends; ssd: the Mamba-2 SSD algorithms (reference, "
              "chunked, cpu), D = heads x --head-dim.")
@click.option("--head-dim", default=64, show_default=True, help="SSD head dim p (D must be a multiple).")
@json_option()
def scan_command(backends, cases, repeats, warmup, threads, dtype, device, kernel, head_dim, json_path):
    """Time the selective-scan backends (or the SSD algorithms), forward and forward+backward."""
    parsed = None
    if cases:
        parsed = []
        for c in cases:
            try:
                b, l, d, n = (int(v) for v in c.lower().split("x"))
            except ValueError:
                raise click.BadParameter(f"{c!r}: expected BxLxDxN, e.g. 64x128x256x16", param_hint="--case") from None
            parsed.append((b, l, d, n))
    if threads > 0:
        torch.set_num_threads(threads)
    with click_errors():
        run_scan_benchmark(list(backends) or None, parsed, repeats, warmup, json_path, dtype=dtype,
                           device=device, kernel=kernel, head_dim=head_dim)
