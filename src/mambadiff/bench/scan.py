"""Scan benchmark: forward and forward+backward time per backend, with speed-up vs reference.

Glossary: b batch, d channels (d_inner), l length (seq_len), n state size (d_state), h heads,
p head dim (SSD: d = h * p).

``kernel="s6"`` times the selective scan's backends (``selective_scan(backend=)``); inputs follow the
Mamba block: A = -(1..n) per channel (S4D-real init), dt bias drawn so that softplus(bias) lies in
[1e-3, 1e-1], delta_softplus, D and z gating on. ``kernel="ssd"`` times the Mamba-2 SSD algorithms
(``ssd(algorithm=)``: reference, chunked, cpu) with heads of ``head_dim`` channels; inputs follow the
Mamba-2 block: A = -U(1, 16) per head, dt in [1e-3, 1e-1] log-uniform, D on.

Timing: the median of ``repeats`` runs after ``warmup`` runs. Forward-only runs use inputs without
grad under ``torch.no_grad``; forward+backward runs call ``y.backward(g)``. The reference's fwd+bwd
is ~100x slower than the other backends, so it gets at most 1 warm-up and 3 repeats (its spread is
far below that gap).

Peak memory is measured in one extra run after the timed ones: on CUDA the growth of
``torch.cuda.max_memory_allocated``; on CPU the growth of the peak RSS (Linux: free heap memory is
first handed back with ``malloc_trim`` so the run's allocations show up in RSS, then the kernel's
high-water mark VmHWM is reset through /proc/self/clear_refs and read after the run; elsewhere the
growth of ``ru_maxrss``). Nothing here changes malloc settings: forcing every allocation through
mmap (as ``bench.common`` does for its RSS readings) costs page faults and, with several threads,
TLB shootdowns on every free, which slows the timed runs several-fold on a VM.
"""
from __future__ import annotations

import math

import torch

from .. import kernels
from ..ssm.scan import available_backends, selective_scan
from ..ssm.ssd import ssd
from .common import time_and_peak, write_json

KERNELS = ("s6", "ssd")
SSD_BACKENDS = ("reference", "chunked", "cpu")

DEFAULT_CASES = (
    {"batch": 64, "seq_len": 128, "d_inner": 256, "d_state": 16, "modes": ("fwd", "fwd+bwd")},
    {"batch": 8, "seq_len": 1024, "d_inner": 256, "d_state": 16, "modes": ("fwd",)},
    {"batch": 8, "seq_len": 4096, "d_inner": 256, "d_state": 16, "modes": ("fwd",)},
)
MODES = ("fwd", "fwd+bwd")
# The reference's backward costs O(l) full-size gradient buffers per step (select backward);
# beyond this length a single fwd+bwd run takes minutes, so it is skipped and marked.
REFERENCE_MAX_BWD_LEN = 2048
# Runs allowed for the slow reference fwd+bwd (warm-up, repeats).
REFERENCE_BWD_RUNS = (1, 3)


def make_inputs(batch: int, seq_len: int, d_inner: int, d_state: int, dtype=torch.float32,
                device="cpu", requires_grad: bool = False, seed: int = 0) -> dict:
    """Mamba-like random inputs for ``selective_scan`` as keyword arguments."""
    b, l, d, n = batch, seq_len, d_inner, d_state
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    dt = torch.exp(torch.rand(d, generator=g) * (math.log(0.1) - math.log(1e-3))
                   + math.log(1e-3))  # (d,) target softplus(bias) in [1e-3, 1e-1]
    bias = (dt + torch.log(-torch.expm1(-dt))).to(device=device, dtype=dtype)  # softplus^-1(dt)
    A = -torch.arange(1, n + 1, dtype=dtype).repeat(d, 1).to(device)  # (d, n)
    args = {
        "u": randn(b, d, l), "delta": randn(b, d, l, scale=0.1), "A": A,
        "B": randn(b, n, l), "C": randn(b, n, l), "D": torch.ones(d, dtype=dtype, device=device),
        "z": randn(b, d, l), "delta_bias": bias,
    }
    if requires_grad:
        for t in args.values():
            t.requires_grad_(True)
    args["delta_softplus"] = True
    return args


def make_ssd_inputs(batch: int, seq_len: int, d_inner: int, d_state: int, head_dim: int,
                    dtype=torch.float32, device="cpu", requires_grad: bool = False, seed: int = 0) -> dict:
    """Mamba-2-like random inputs for ``ssd`` as keyword arguments (h = d_inner / head_dim heads)."""
    if d_inner % head_dim:
        raise ValueError(f"d_inner ({d_inner}) must be a multiple of head_dim ({head_dim})")
    b, l, h, p, n = batch, seq_len, d_inner // head_dim, head_dim, d_state
    g = torch.Generator().manual_seed(seed)

    def to(t):
        return t.to(device=device, dtype=dtype)

    dt = torch.exp(torch.rand(b, l, h, generator=g) * (math.log(0.1) - math.log(1e-3))
                   + math.log(1e-3))  # (b, l, h) in [1e-3, 1e-1]
    args = {"x": to(torch.randn(b, l, h, p, generator=g)), "dt": to(dt),
            "A": to(-1 - 15 * torch.rand(h, generator=g)),  # (h,)
            "B": to(torch.randn(b, l, n, generator=g)), "C": to(torch.randn(b, l, n, generator=g)),
            "D": to(torch.ones(h))}
    if requires_grad:
        for t in args.values():
            t.requires_grad_(True)
    return args


# --------------------------------------------------------------------------------------------------
# timing and peak memory


def _runner(backend: str, mode: str, case: dict, dtype, device, kernel: str = "s6", head_dim: int = 64):
    grad = mode == "fwd+bwd"
    if kernel == "ssd":
        args = make_ssd_inputs(case["batch"], case["seq_len"], case["d_inner"], case["d_state"], head_dim,
                               dtype=dtype, device=device, requires_grad=grad)
        call = lambda: ssd(**args, algorithm=backend)  # noqa: E731
        out_shape = args["x"].shape  # (b, l, h, p)
    else:
        args = make_inputs(case["batch"], case["seq_len"], case["d_inner"], case["d_state"],
                           dtype=dtype, device=device, requires_grad=grad)
        call = lambda: selective_scan(**args, backend=backend)  # noqa: E731
        out_shape = args["u"].shape  # (b, d, l)
    if mode == "fwd":
        def fwd():
            with torch.no_grad():
                call()
        return fwd

    g = torch.Generator().manual_seed(1)
    gy = torch.randn(out_shape, generator=g).to(device=device, dtype=dtype)
    leaves = [t for t in args.values() if isinstance(t, torch.Tensor)]

    def fwd_bwd():
        for t in leaves:
            t.grad = None
        call().backward(gy)
    return fwd_bwd


def _normalise_case(case) -> dict:
    if isinstance(case, dict):
        out = dict(case)
    else:
        b, l, d, n = case
        out = {"batch": b, "seq_len": l, "d_inner": d, "d_state": n}
    missing = {"batch", "seq_len", "d_inner", "d_state"} - set(out)
    if missing:
        raise ValueError(f"benchmark case {case!r} is missing {sorted(missing)}")
    modes = tuple(out.get("modes", MODES))
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"benchmark case modes must be among {MODES}, got {bad}")
    out["modes"] = modes
    return out


def run_scan_benchmark(backends=None, cases=None, repeats=5, warmup=2, json_path=None, *,
                       dtype=torch.float32, device="cpu", print_table=True, kernel: str = "s6",
                       head_dim: int = 64) -> list[dict]:
    """Times each backend on each case; prints a table and returns one record per
    (case, mode, backend). ``cases``: dicts with batch, seq_len, d_inner, d_state and optional
    modes (subset of ("fwd", "fwd+bwd")), or (b, l, d, n) tuples. ``kernel``: "s6" (the selective
    scan's backends) or "ssd" (the SSD algorithms, heads of ``head_dim`` channels). ``backends``
    defaults to every available backend; ``reference`` is always timed, for the speed-up column.
    ``threads`` in the records is ``torch.get_num_threads()``, which the caller sets. Writes the
    records as JSON (atomically) to ``json_path`` when given."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    device = torch.device(device)
    if isinstance(dtype, str):  # e.g. "float32" from a command line
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"dtype must name a torch dtype, got {dtype!r}")  # noqa: TRY004
        dtype = getattr(torch, dtype)
    if kernel == "ssd":
        usable = tuple(a for a in SSD_BACKENDS if a != "cpu" or kernels.is_available())
    else:
        usable = available_backends()
    if backends is None:
        backends = list(usable)
    else:
        backends = list(dict.fromkeys(backends))
        for name in backends:
            if name not in ("auto", *usable):
                raise ValueError(f"backend {name!r} is not available here; available: {usable}")
    if "reference" not in backends:
        backends = ["reference", *backends]  # baseline for the speed-up column
    if device.type != "cpu":
        backends = [b for b in backends if b != "cpu"]
    if device.type != "cuda":
        backends = [b for b in backends if b != "triton"]  # CUDA tensors only
    cases = [_normalise_case(c) for c in (cases if cases is not None else DEFAULT_CASES)]
    dtype_name = str(dtype).replace("torch.", "")

    records = []
    for case in cases:
        for mode in case["modes"]:
            group = []
            for backend in backends:
                rec = {"model": "scan" if kernel == "s6" else "ssd", "backend": backend, "mode": mode, "batch": case["batch"],
                           "seq_len": case["seq_len"], "d_inner": case["d_inner"],
                           "d_state": case["d_state"], "dtype": dtype_name, "device": str(device),
                           "threads": torch.get_num_threads(), "seconds": None, "tokens_per_s": None,
                           "peak_mem_mb": None, "speedup_vs_reference": None, "skipped": None}
                if (backend == "reference" and mode == "fwd+bwd"
                        and case["seq_len"] > REFERENCE_MAX_BWD_LEN):
                    rec["skipped"] = f"reference fwd+bwd too slow at l > {REFERENCE_MAX_BWD_LEN}"
                else:
                    fn = _runner(backend, mode, case, dtype, device, kernel, head_dim)
                    w, r = warmup, repeats
                    if backend == "reference" and mode == "fwd+bwd":
                        w, r = min(w, REFERENCE_BWD_RUNS[0]), min(r, REFERENCE_BWD_RUNS[1])
                    try:
                        sec, mem = time_and_peak(fn, device, repeats=r, warmup=w)
                    except torch.cuda.OutOfMemoryError:
                        # on a GPU the torch backend's autograd graph can outgrow the card at
                        # large b * l * d; record it and go on with the other backends
                        rec["skipped"] = "out of GPU memory"
                    else:
                        rec.update(seconds=sec, tokens_per_s=case["batch"] * case["seq_len"] / sec,
                                   peak_mem_mb=mem)
                    del fn
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                group.append(rec)
            ref = next((r["seconds"] for r in group if r["backend"] == "reference"), None)
            for rec in group:
                if ref and rec["seconds"]:
                    rec["speedup_vs_reference"] = ref / rec["seconds"]
            records.extend(group)

    if print_table:
        print(format_table(records))
    write_json(json_path, records)  # atomic (temp file + os.replace)
    return records


def format_table(records: list[dict]) -> str:
    from tabulate import tabulate

    rows = []
    for r in records:
        skipped = r.get("skipped")
        rows.append([
            f"{r['batch']}x{r['seq_len']}x{r['d_inner']}x{r['d_state']}", r["mode"], r["backend"],
            "skipped" if skipped else f"{r['seconds'] * 1e3:.1f}",
            "" if skipped else f"{r['tokens_per_s']:,.0f}",
            "" if skipped or r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}",
            "" if r["speedup_vs_reference"] is None else f"{r['speedup_vs_reference']:.1f}x",
        ])
    head = ["b x l x d x n", "mode", "backend", "ms", "tokens/s", "peak MB", "vs reference"]
    threads = records[0]["threads"] if records else torch.get_num_threads()
    what = "SSD" if records and records[0]["model"] == "ssd" else "selective scan"
    title = f"{what} ({records[0]['dtype'] if records else ''}, {threads} threads)"
    return title + "\n" + tabulate(rows, headers=head, colalign=("left", "left", "left"))
