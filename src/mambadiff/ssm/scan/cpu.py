"""``cpu`` backend: the fused C kernels in csrc/, built on first use and loaded with ctypes.

Glossary: b batch, d channels (inner width), l length, n state size, g d-group (backward task split).

The library holds the selective scan (csrc/selective_scan.c, used here), the Mamba block's fused
causal conv1d + SiLU (csrc/causal_conv1d.c, used by ``mambadiff.ssm.conv``), the Mamba-2 SSD
recurrence (csrc/ssd_scan.c, used by ``mambadiff.ssm.ssd``), the fused (gated) RMSNorm
(csrc/rms_norm.c, used by ``mambadiff.ssm.norm``), plus csrc/runtime.c (the
flush-to-zero switch of ``mambadiff.runtime``); all include csrc/ss_math.h.

Build: the system C compiler (``$CC``, else ``cc``, else ``gcc``) compiles each file twice (float32,
float64) and links one shared library into ``$MAMBADIFF_CACHE`` (default ``~/.cache/mambadiff``).
The file name is a hash of the sources + compiler + flags + machine, so a changed kernel, compiler or
CPU gets a fresh build. The library is linked to a temporary name then ``os.replace``d into place, so
processes racing to build it are safe. Flag sets are tried from fastest to most portable
(``-march=native``, OpenMP); when none works the backend is simply unavailable.
``$MAMBADIFF_CFLAGS`` replaces them with one set, the optimisation flags plus its words: e.g.
``"-march=native -mno-avx512f -fopenmp"`` builds the AVX2 paths on an AVX-512 machine (the test suite
checks the kernels built that way and without AVX at all, as other machines build them).

The kernel is built without ``-ffast-math``: its inlined exp / log1p rely on exact IEEE evaluation,
and linking a shared library with ``-ffast-math`` (gcc < 13) would add crtfastmath.o, which flips the
whole process (torch included) to flush-denormals-to-zero when the library is loaded.

Autograd: the forward stores its inputs and, when a gradient will be needed and l > 128, the state at
the start of every 128-step chunk (1/128 of the states); the backward recomputes the states per
block of 16 channels, chunk by chunk from those checkpoints, so its scratch is O(n) per channel and
O(chunk) per thread, never (b, l, d, n).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

CSRC = Path(__file__).with_name("csrc")
SOURCES = (CSRC / "selective_scan.c", CSRC / "causal_conv1d.c", CSRC / "ssd_scan.c",
           CSRC / "rms_norm.c", CSRC / "runtime.c")  # each compiled per element type
HEADERS = (CSRC / "ss_math.h",)

# Tried in order; the first set that compiles, links and loads wins.
# No -ffast-math: the kernel's inlined exp / log1p need exact IEEE evaluation order (see the .c).
_FAST = ("-O3", "-fno-math-errno", "-fno-trapping-math")
FLAG_SETS = (
    (*_FAST, "-march=native", "-mprefer-vector-width=512", "-fopenmp"),  # x86 with AVX-512
    (*_FAST, "-march=native", "-fopenmp"),
    (*_FAST, "-fopenmp"),
    (*_FAST, "-march=native", "-fopenmp-simd"),  # no OpenMP runtime: single-threaded
    (*_FAST, "-fopenmp-simd"),
    ("-O2",),
)
COMMON_FLAGS = ("-fPIC", "-std=gnu11")


def _flag_sets() -> tuple[tuple[str, ...], ...]:
    """FLAG_SETS, or the single set that ``$MAMBADIFF_CFLAGS`` asks for (see the module docstring)."""
    extra = os.environ.get("MAMBADIFF_CFLAGS", "").strip()
    return ((*_FAST, *shlex.split(extra)),) if extra else FLAG_SETS
TYPES = (("0", "f32"), ("1", "f64"))  # (-DSS_DOUBLE=, symbol suffix)

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None
_info: dict = {}


def cache_dir() -> Path:
    """Folder holding built kernels: ``$MAMBADIFF_CACHE`` or ``~/.cache/mambadiff``."""
    env = os.environ.get("MAMBADIFF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mambadiff"


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or (cc if os.path.isfile(cc) else None)
    return shutil.which("cc") or shutil.which("gcc")


def _machine_id() -> str:
    """CPU identity for the cache key: -march=native code must not run on a different CPU."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    parts.append(line.strip())
                if len(parts) >= 4:
                    break
    except OSError:
        parts.append(platform.processor())
    return "|".join(parts)


def _compiler_version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30,
                              check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _build(cc: str, flags: tuple[str, ...], out: Path) -> None:
    """Compile both element types (in parallel) and link ``out`` atomically. Raises on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-", dir=out.parent) as tmp:
        jobs = []
        for source in SOURCES:
            for is_double, suffix in TYPES:
                obj = Path(tmp) / f"{source.stem}_{suffix}.o"
                cmd = [cc, *flags, *COMMON_FLAGS, f"-DSS_DOUBLE={is_double}",
                       "-c", str(source), "-o", str(obj)]
                jobs.append((cmd, obj, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                        stderr=subprocess.PIPE, text=True)))
        errors = []
        for cmd, _, proc in jobs:
            try:
                _, err = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                err = "timed out\n" + err
            if proc.returncode != 0:
                errors.append(f"{' '.join(cmd)}\n{err.strip()[-2000:]}")
        if errors:
            raise RuntimeError("\n".join(errors))
        link_flags = [f for f in flags if f == "-fopenmp"]
        tmp_lib = Path(tmp) / out.name
        _run([cc, "-shared", *link_flags, *(str(obj) for _, obj, _ in jobs), "-o", str(tmp_lib)])
        # Same file system as the target, so os.replace is an atomic rename.
        os.replace(tmp_lib, out)


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{res.stderr.strip()[-2000:]}")


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for _, suffix in TYPES:
        fwd = getattr(lib, f"ss_fwd_{suffix}")
        fwd.argtypes = [p] * 13 + [i64] * 4 + [i32, i32]  # 12 tensors, strides, sizes, flags
        fwd.restype = i32
        bwd = getattr(lib, f"ss_bwd_{suffix}")
        bwd.argtypes = [p] * 22 + [i64] * 5 + [i32, i32]  # 21 tensors, strides, sizes, flags
        bwd.restype = i32
        getattr(lib, f"ss_abi_version_{suffix}").restype = i32
        cfwd = getattr(lib, f"cc_fwd_{suffix}")
        cfwd.argtypes = [p] * 5 + [i64] * 5 + [i32] * 2  # x, w, bias, y, strides; sizes, chunk; anti, threads
        cfwd.restype = i32
        cbwd = getattr(lib, f"cc_bwd_{suffix}")
        cbwd.argtypes = [p] * 8 + [i64] * 5 + [i32] * 2  # 7 tensors + strides; sizes, chunk; anti, threads
        cbwd.restype = i32
        sfwd = getattr(lib, f"ssd_fwd_{suffix}")
        sfwd.argtypes = [p] * 9 + [i64] * 6 + [i32]  # 8 tensors, strides; b, l, h, p, n, q; threads
        sfwd.restype = i32
        sbwd = getattr(lib, f"ssd_bwd_{suffix}")
        sbwd.argtypes = [p] * 15 + [i64] * 7 + [i32]  # 14 tensors, strides; sizes, q, g; threads
        sbwd.restype = i32
        eps_type = ctypes.c_float if suffix == "f32" else ctypes.c_double
        rfwd = getattr(lib, f"rn_fwd_{suffix}")
        rfwd.argtypes = [p] * 6 + [i64] * 2 + [eps_type, i32]  # x, z, w, y, rstd, strides; rows, e
        rfwd.restype = i32
        rbwd = getattr(lib, f"rn_bwd_{suffix}")
        rbwd.argtypes = [p] * 9 + [i64] * 3 + [i32]  # 8 tensors, strides; rows, e, tasks; threads
        rbwd.restype = i32
        flush = getattr(lib, f"md_flush_denormals_{suffix}")
        flush.argtypes = [i32]
        flush.restype = i32


def load() -> ctypes.CDLL | None:
    """Build (once per cache key) and load the kernel library; None if it cannot be built."""
    global _lib, _error
    if _lib is not None or _error is not None:
        return _lib
    with _lock:
        if _lib is not None or _error is not None:
            return _lib
        cc = _compiler()
        if cc is None:
            _error = "no C compiler found (set $CC or install cc/gcc)"
            return None
        source = b"\0".join(path.read_bytes() for path in (*SOURCES, *HEADERS))
        version = _compiler_version(cc)
        errors = []
        for flags in _flag_sets():
            key = hashlib.sha256(b"\0".join(
                [source, cc.encode(), version.encode(), " ".join(flags + COMMON_FLAGS).encode(),
                 _machine_id().encode()])).hexdigest()[:20]
            path = cache_dir() / f"selective_scan-{key}.so"
            try:
                cached = path.exists()
                if not cached:
                    _build(cc, flags, path)
                try:
                    lib = ctypes.CDLL(str(path))
                except OSError:
                    if not cached:
                        raise
                    _build(cc, flags, path)  # an unusable cached file: build it afresh once
                    lib = ctypes.CDLL(str(path))
                _declare(lib)
            except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as exc:
                errors.append(f"[{' '.join(flags)}] {exc}")
                continue
            _lib = lib
            _info.update(path=str(path), flags=flags, compiler=cc,
                         openmp=lib.ss_abi_version_f32() >= 2000)
            return _lib
        _error = "could not build the selective-scan C kernel:\n" + "\n".join(errors)
        return None


def is_available() -> bool:
    return load() is not None


def unavailable_reason() -> str | None:
    load()
    return _error


def build_info() -> dict:
    """Path, flags, compiler and OpenMP status of the loaded kernel (empty if not loaded)."""
    load()
    return dict(_info)


# --------------------------------------------------------------------------------------------------


# ---- helpers shared by every wrapper of this library (here, ssm/conv.py, ssm/ssd.py, ssm/norm.py)


def ptr(t: torch.Tensor | None) -> int | None:
    """The tensor's data pointer, or None (NULL) for an absent optional input."""
    return None if t is None else t.data_ptr()


def threads_for(work: int, min_work_per_thread: int) -> int:
    """torch.get_num_threads(), fewer when a thread would get less than ``min_work_per_thread``:
    below that, waking and joining threads costs more than they save."""
    return max(1, min(torch.get_num_threads(), work // min_work_per_thread))


def batch_time_strides(*tensors: torch.Tensor, reverse: bool = False) -> ctypes.Array:
    """(batch, time) element strides of each time-major (b, l, c) tensor, flattened (channels: 1).

    reverse=True negates the time strides: with ``time_origin`` pointers the kernels then walk every
    sequence from its last step to its first, which is the causal kernel run on the time-flipped
    tensors, without making the flipped copies."""
    vals = [v for t in tensors for v in (t.stride(0), -t.stride(1) if reverse else t.stride(1))]
    return (ctypes.c_int64 * len(vals))(*vals)


def time_origin(t: torch.Tensor, reverse: bool = False) -> int:
    """Data pointer of a time-major (b, l, c) tensor at the kernel's step 0: the tensor's first time
    step, or with reverse=True its last one (see ``batch_time_strides``)."""
    return t.data_ptr() + (t.stride(1) * (t.shape[1] - 1) * t.element_size() if reverse else 0)


def unit_last_stride(t: torch.Tensor) -> torch.Tensor:
    """The kernels read any leading strides but need a unit stride on the last axis."""
    return t if t.stride(-1) == 1 else t.contiguous()


# ---- the selective scan


def _strides(*tensors) -> ctypes.Array:
    """(b, d, l) element strides of each tensor, flattened, for the kernel (zeros for None)."""
    vals = []
    for t in tensors:
        vals.extend(t.stride() if t is not None else (0, 0, 0))
    return (ctypes.c_int64 * len(vals))(*vals)


def _time_major(t: torch.Tensor) -> bool:
    """A (b, d, l) tensor whose channels are adjacent (a transposed (b, l, d) one)."""
    return t.stride(1) == 1 and t.stride(2) != 1


def _kernel_layout(t: torch.Tensor | None) -> torch.Tensor | None:
    """The kernel reads channel-major (b, d, l) and time-major (b, l, d)-backed tensors in place;
    anything else is made contiguous."""
    if t is None or t.stride(2) == 1 or t.stride(1) == 1:
        return t
    return t.contiguous()


def _empty_like_layout(t: torch.Tensor) -> torch.Tensor:
    """Uninitialised (b, d, l) tensor with t's layout (time-major or channel-major), so gradients
    come back in the layout their consumers use."""
    b, d, l = t.shape
    if _time_major(t):
        return t.new_empty(b, l, d).transpose(1, 2)  # (b, d, l) view of (b, l, d)
    return t.new_empty(b, d, l)


LANES = 16  # SS_W in the C file: channels per SIMD block
CHUNK = 128  # SS_T in the C file: time steps per chunk


# Below this much work per thread (b * d * l * n state updates, ~0.1 ms) extra threads cost more in
# wake-ups and barriers than they save, especially on a busy machine.
MIN_WORK_PER_THREAD = 1 << 18


def _num_threads(b: int, d: int, l: int, n: int) -> int:
    return threads_for(b * d * l * n, MIN_WORK_PER_THREAD)


def _num_groups(b: int, d: int, threads: int) -> int:
    """d-groups for the backward: enough (b, g) tasks to keep every thread busy (>= 4 per thread)
    while keeping the (g, b, l, n) partial buffers for dB, dC few (each group sums its channels'
    contributions in-kernel)."""
    blocks = -(-d // LANES)  # ceil(d / LANES)
    want = -(-4 * threads // b)  # ceil(4 * threads / b)
    return max(1, min(blocks, want))


class _SelectiveScanCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, Bt, Ct, D, z, bias, h0, softplus, return_last_state):
        # all inputs: same dtype (float32 / float64), on CPU; u, delta, z channel- or time-major
        # (see _kernel_layout), the others contiguous; Bt, Ct are (b, l, n)
        lib = load()
        b, d, l = u.shape
        n = A.shape[1]
        suffix = "f32" if u.dtype == torch.float32 else "f64"
        threads = _num_threads(b, d, l, n)
        out = _empty_like_layout(delta)  # (b, d, l) laid out like delta (Mamba: time-major)
        hlast = u.new_empty(b, d, n) if return_last_state else None  # (b, d, n)
        nchunks = -(-l // CHUNK)
        # chunk-start states for the backward (it skips its own state pass): 1/CHUNK of the states
        ckpt = (u.new_empty(b, -(-d // LANES), nchunks, n, LANES)
                if nchunks > 1 and any(ctx.needs_input_grad) else None)  # (b, d/w, chunks, n, w)
        # (no gradient needed: backward never runs; one chunk: the backward starts from h0)
        rc = getattr(lib, f"ss_fwd_{suffix}")(
            ptr(u), ptr(delta), ptr(A), ptr(Bt), ptr(Ct), ptr(D), ptr(z), ptr(bias),
            ptr(h0), ptr(out), ptr(hlast), ptr(ckpt), _strides(u, delta, z, out), b, d, l, n,
            int(softplus), threads)
        if rc != 0:
            raise MemoryError("selective_scan cpu kernel: scratch allocation failed")
        ctx.save_for_backward(u, delta, A, Bt, Ct, D, z, bias, h0, ckpt)
        ctx.softplus = softplus
        ctx.set_materialize_grads(False)
        return (out, hlast) if return_last_state else out

    @staticmethod
    @once_differentiable  # the backward is a kernel call: no double backward
    def backward(ctx, gout, ghlast=None):
        u, delta, A, Bt, Ct, D, z, bias, h0, ckpt = ctx.saved_tensors
        b, d, l = u.shape
        n = A.shape[1]
        gout = torch.zeros_like(u) if gout is None else _kernel_layout(gout)  # (b, d, l)
        if ghlast is not None:
            ghlast = ghlast.to(u.dtype).contiguous()  # (b, d, n)
        threads = _num_threads(b, d, l, n)
        g = _num_groups(b, d, threads)
        gu = _empty_like_layout(u)  # (b, d, l)
        gdelta = _empty_like_layout(delta)  # (b, d, l)
        gA_part = u.new_empty(b, d, n)  # (b, d, n) summed over b below
        gB_part = u.new_zeros(g, b, l, n)  # (g, b, l, n) summed over g below
        gC_part = u.new_zeros(g, b, l, n)  # (g, b, l, n)
        gD_part = u.new_empty(b, d) if D is not None else None  # (b, d)
        gbias_part = u.new_empty(b, d) if bias is not None else None  # (b, d)
        gz = _empty_like_layout(z) if z is not None else None  # (b, d, l)
        gh0 = u.new_empty(b, d, n) if (h0 is not None and ctx.needs_input_grad[8]) else None
        suffix = "f32" if u.dtype == torch.float32 else "f64"
        rc = getattr(load(), f"ss_bwd_{suffix}")(
            ptr(u), ptr(delta), ptr(A), ptr(Bt), ptr(Ct), ptr(D), ptr(z), ptr(bias),
            ptr(h0), ptr(gout), ptr(ghlast), ptr(gu), ptr(gdelta), ptr(gA_part),
            ptr(gB_part), ptr(gC_part), ptr(gD_part), ptr(gz), ptr(gbias_part), ptr(gh0),
            ptr(ckpt), _strides(u, delta, z, gout, gu, gdelta, gz), b, d, l, n, g, int(ctx.softplus),
            threads)
        if rc == -2:
            raise RuntimeError("selective_scan cpu kernel: backward without the forward's checkpoints")
        if rc != 0:
            raise MemoryError("selective_scan cpu kernel: scratch allocation failed")
        gB = gB_part[0] if g == 1 else gB_part.sum(0)  # (b, l, n)
        gC = gC_part[0] if g == 1 else gC_part.sum(0)  # (b, l, n)
        return (gu, gdelta, gA_part.sum(0), gB, gC,
                None if gD_part is None else gD_part.sum(0),
                gz, None if gbias_part is None else gbias_part.sum(0), gh0, None, None)


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                       initial_state=None, return_last_state=False):
    """Fused CPU selective scan; inputs already validated by ``selective_scan``.

    Computes in float32 (float16 / bfloat16 inputs are upcast) or float64; returns y in u's dtype.
    """
    if load() is None:
        raise RuntimeError(f"selective_scan backend 'cpu' is unavailable: {_error}")
    dtype = u.dtype
    ct = torch.float64 if dtype == torch.float64 else torch.float32  # compute dtype

    def prep(t):
        return None if t is None else t.to(ct).contiguous()

    def prep_seq(t):  # (b, d, l) inputs keep a kernel-readable layout: no transposing copies
        return None if t is None else _kernel_layout(t.to(ct))

    Bt = B.to(ct).transpose(1, 2).contiguous()  # (b, l, n)
    Ct = C.to(ct).transpose(1, 2).contiguous()  # (b, l, n)
    res = _SelectiveScanCPU.apply(prep_seq(u), prep_seq(delta), prep(A), Bt, Ct, prep(D),
                                  prep_seq(z), prep(delta_bias), prep(initial_state),
                                  bool(delta_softplus), bool(return_last_state))
    if return_last_state:
        y, h = res
        return y.to(dtype), h.to(dtype)
    return res.to(dtype)
