"""SIGINT and SIGTERM, handled the same way by every long-running tool.

`stop_on_signals()` (entered by every binary through `icnet.exits.run`) turns either signal into
an `Interrupted` exception raised in the main thread at the next Python instruction: work in
progress unwinds through its `with` blocks (staging directories are removed, resumable work is
kept) and the binary exits with `icnet.exits.INTERRUPTED`. A training loop that must finish its
step and save a checkpoint first uses `deferred()`: inside it the signal only sets a flag, which
the loop checks between steps.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived.

    Args:
      signum: the signal.
      detail: what was kept, e.g. where a checkpoint was saved (for the one-line message).
    """

    def __init__(self, signum: int, detail: str = ""):
        self.signum, self.detail = signum, detail
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}" + (f": {detail}" if detail else ""))

    def with_detail(self, detail: str) -> "Interrupted":
        """The same interruption, saying what was kept."""
        return Interrupted(self.signum, detail)


class _State:
    deferring = 0  # depth of `deferred()` blocks
    received: int | None = None


def _handle(signum, frame) -> None:
    del frame
    if _State.deferring:
        _State.received = signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted`."""
    previous = {sig: signal.signal(sig, _handle) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Deferred:
    """The flag a training loop checks between steps."""

    @property
    def received(self) -> int | None:
        """The signal that arrived, or None."""
        return _State.received

    def consume(self) -> int:
        """The signal that arrived, cleared (the caller raises `Interrupted` for it)."""
        signum, _State.received = _State.received, None
        return signum


@contextlib.contextmanager
def deferred() -> Iterator[Deferred]:
    """Within the block a signal only sets `Deferred.received` (the caller stops at a safe
    point and raises `Interrupted` itself). Works whether or not `stop_on_signals` is active;
    a signal still pending when the block ends normally is raised then."""
    installed = {}
    if signal.getsignal(signal.SIGTERM) is not _handle:
        installed = {sig: signal.signal(sig, _handle) for sig in SIGNALS}
    _State.deferring += 1
    _State.received = None
    try:
        yield Deferred()
    finally:
        _State.deferring -= 1
        pending, _State.received = _State.received, None
        for sig, handler in installed.items():
            signal.signal(sig, handler)
    if pending is not None:
        raise Interrupted(pending)
