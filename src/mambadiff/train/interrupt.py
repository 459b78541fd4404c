"""Ctrl-C that stops a run at a step boundary.

Inside ``deferred_interrupt()`` the first SIGINT only records the request: the current step (or the
start-up, or the evaluation) finishes, then the trainer saves a checkpoint whose data position and
RNG states are those of a completed step, so ``--resume`` continues bit-for-bit. A second SIGINT
restores the previous handler and raises ``KeyboardInterrupt`` at once (nothing more is saved; the
last complete checkpoint stays intact because every write is atomic).

The guard nests (an outer one around start-up, an inner one in ``Trainer.fit`` share the request)
and does nothing outside the main thread, where signals cannot be handled; there a SIGINT is an
ordinary ``KeyboardInterrupt``.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

__all__ = ["deferred_interrupt", "stop_requested", "request_stop", "forced"]


class _State:
    depth = 0              # nesting level of active guards
    requested = False      # a first SIGINT arrived
    forced = False         # a second one did: KeyboardInterrupt was raised
    previous = None        # the SIGINT handler before the outermost guard


_state = _State()


def _handler(signum, frame) -> None:
    if _state.requested:
        _state.forced = True
        signal.signal(signal.SIGINT, _state.previous or signal.default_int_handler)
        raise KeyboardInterrupt
    _state.requested = True
    print("\ninterrupt: finishing the current step, then saving a checkpoint "
          "(press Ctrl-C again to stop at once without saving)", file=sys.stderr, flush=True)


def stop_requested() -> bool:
    """Whether a SIGINT asked the run to stop (inside a ``deferred_interrupt`` guard)."""
    return _state.requested


def request_stop() -> None:
    """Ask the active guard's run to stop at the next step boundary, as a first Ctrl-C does."""
    _state.requested = True


def forced() -> bool:
    """Whether the current KeyboardInterrupt came from a second SIGINT (stop without saving)."""
    return _state.forced


@contextlib.contextmanager
def deferred_interrupt():
    """Defer SIGINT to step boundaries while active (main thread only; nests)."""
    main = threading.current_thread() is threading.main_thread()
    if _state.depth == 0:
        _state.requested = _state.forced = False
        if main:
            _state.previous = signal.signal(signal.SIGINT, _handler)
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            if main and signal.getsignal(signal.SIGINT) is _handler:
                signal.signal(signal.SIGINT, _state.previous or signal.default_int_handler)
            _state.previous = None
            _state.requested = _state.forced = False
