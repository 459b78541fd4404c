"""Build, cache and load the C kernel library (csrc/): one shared library, compiled on first use.

Build: the system C compiler (``$CC``, else ``cc``, else ``gcc``) compiles each source twice (float32,
float64) and links one shared library into ``$MAMBADIFF_CACHE`` (default ``~/.cache/mambadiff``).
The file name is a hash of the sources + compiler + flags + machine, so a changed kernel, compiler or
CPU gets a fresh build. The library is linked to a temporary name then ``os.replace``d into place, so
processes racing to build it are safe. Flag sets are tried from fastest to most portable
(``-march=native``, OpenMP); when none works the kernels are simply unavailable.
``$MAMBADIFF_CFLAGS`` replaces them with one set, the optimisation flags plus its words: e.g.
``"-march=native -mno-avx512f -fopenmp"`` builds the AVX2 paths on an AVX-512 machine (the test suite
checks the kernels built that way and without AVX at all, as other machines build them).

The kernels are built without ``-ffast-math``: their inlined exp / log1p rely on exact IEEE
evaluation, and linking a shared library with ``-ffast-math`` (gcc < 13) would add crtfastmath.o,
which flips the whole process (torch included) to flush-denormals-to-zero when the library is loaded.
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

from .bindings import TYPES, declare

__all__ = ["CSRC", "SOURCES", "HEADERS", "FLAG_SETS", "COMMON_FLAGS", "build_info", "cache_dir",
           "flag_sets", "is_available", "load", "machine_id", "unavailable_reason"]

CSRC = Path(__file__).with_name("csrc")
SOURCES = (CSRC / "selective_scan.c", CSRC / "causal_conv1d.c", CSRC / "ssd_scan.c",
           CSRC / "rms_norm.c", CSRC / "runtime.c")  # each compiled per element type
HEADERS = (CSRC / "ss_math.h",)

# Tried in order; the first set that compiles, links and loads wins.
# No -ffast-math: the kernels' inlined exp / log1p need exact IEEE evaluation order (see ss_math.h).
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

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None
_info: dict = {}


def flag_sets() -> tuple[tuple[str, ...], ...]:
    """FLAG_SETS, or the single set that ``$MAMBADIFF_CFLAGS`` asks for (see the module docstring)."""
    extra = os.environ.get("MAMBADIFF_CFLAGS", "").strip()
    return ((*_FAST, *shlex.split(extra)),) if extra else FLAG_SETS


def cache_dir() -> Path:
    """Folder holding built kernels: ``$MAMBADIFF_CACHE`` or ``~/.cache/mambadiff``."""
    env = os.environ.get("MAMBADIFF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mambadiff"


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or (cc if os.path.isfile(cc) else None)
    return shutil.which("cc") or shutil.which("gcc")


def machine_id() -> str:
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
        for flags in flag_sets():
            key = hashlib.sha256(b"\0".join(
                [source, cc.encode(), version.encode(), " ".join(flags + COMMON_FLAGS).encode(),
                 machine_id().encode()])).hexdigest()[:20]
            path = cache_dir() / f"kernels-{key}.so"
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
                declare(lib)
            except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as exc:
                errors.append(f"[{' '.join(flags)}] {exc}")
                continue
            _lib = lib
            _info.update(path=str(path), flags=flags, compiler=cc,
                         openmp=lib.ss_abi_version_f32() >= 2000)
            return _lib
        _error = "could not build the C kernels:\n" + "\n".join(errors)
        return None


def is_available() -> bool:
    return load() is not None


def unavailable_reason() -> str | None:
    load()
    return _error


def build_info() -> dict:
    """Path, flags, compiler and OpenMP status of the loaded library (empty if not loaded)."""
    load()
    return dict(_info)
