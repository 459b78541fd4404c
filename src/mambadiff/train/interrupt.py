"""Ctrl-C (SIGINT) and SIGTERM stop a run at a step boundary.

Inside ``deferred_interrupt()`` the first SIGINT or SIGTERM only records the request: the current
step (or the start-up, or the evaluation) finishes, then the trainer saves a checkpoint whose data
position and RNG states are those of a completed step, so ``--resume`` continues bit-for-bit. SIGTERM
is what Slurm, Kubernetes and ``timeout`` send before they kill a job, so a preempted run keeps every
step it finished. The CLI then exits 130 (SIGINT) or 143 (SIGTERM), 128 + the signal number.

A second signal stops at once, nothing more is saved (the last complete checkpoint stays intact
because every write is atomic): a second SIGINT restores the previous handler and raises
``KeyboardInterrupt``; a second SIGTERM restores the previous handler and delivers itself again,
which ends the process as an unhandled SIGTERM does.

The guard nests (an outer one around start-up, an inner one in ``Trainer.fit`` share the request)
and does nothing outside the main thread, where signals cannot be handled; there a SIGINT is an
ordinary ``KeyboardInterrupt``.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

__all__ = ["deferred_interrupt", "stop_requested", "stop_signal", "request_stop", "forced", "exit_code",
           "HANDLED_SIGNALS"]

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    depth = 0              # nesting level of active guards
    requested = False      # a first signal arrived (or request_stop was called)
    signum = 0             # which signal asked to stop (0: none, or request_stop)
    forced = False         # a second one did: KeyboardInterrupt was raised
    previous: dict = {}    # the handlers before the outermost guard, by signal


_state = _State()


def _restore_handlers() -> None:
    for signum in HANDLED_SIGNALS:
        if signal.getsignal(signum) is _handler:
            previous = _state.previous.get(signum)
            if previous is None:
                previous = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, previous)


def _handler(signum, frame) -> None:
    if _state.requested:
        _state.forced = True
        _restore_handlers()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.raise_signal(signum)  # the previous handler (by default: the process ends)
        return
    _state.requested, _state.signum = True, signum
    name = "interrupt" if signum == signal.SIGINT else signal.Signals(signum).name
    again = "press Ctrl-C again" if signum == signal.SIGINT else f"send {name} again"
    print(f"\n{name}: finishing the current step, then saving a checkpoint "
          f"({again} to stop at once without saving)", file=sys.stderr, flush=True)


def stop_requested() -> bool:
    """Whether a SIGINT or SIGTERM asked the run to stop (inside a ``deferred_interrupt`` guard)."""
    return _state.requested


def stop_signal() -> int:
    """The signal number that asked the run to stop (0 when none did, or ``request_stop`` did)."""
    return _state.signum


def exit_code(signum: int) -> int:
    """The exit status of a run stopped by ``signum``: 128 + its number (130 for SIGINT, 143 for
    SIGTERM), as a shell reports a process the signal ended; 130 for a stop without a signal."""
    return 128 + (signum or signal.SIGINT)


def request_stop() -> None:
    """Ask the active guard's run to stop at the next step boundary, as a first Ctrl-C does."""
    _state.requested = True


def forced() -> bool:
    """Whether the current KeyboardInterrupt came from a second SIGINT (stop without saving)."""
    return _state.forced


@contextlib.contextmanager
def deferred_interrupt():
    """Defer SIGINT and SIGTERM to step boundaries while active (main thread only; nests)."""
    main = threading.current_thread() is threading.main_thread()
    if _state.depth == 0:
        _state.requested = _state.forced = False
        _state.signum = 0
        if main:
            _state.previous = {signum: signal.signal(signum, _handler) for signum in HANDLED_SIGNALS}
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            if main:
                _restore_handlers()
            _state.previous = {}
            _state.requested = _state.forced = False
            _state.signum = 0
