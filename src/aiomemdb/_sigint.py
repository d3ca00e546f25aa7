"""Ctrl-C cannot split a write made on the main thread.

Python runs a SIGINT handler on the main thread between any two bytecodes; the default one raises
``KeyboardInterrupt``, which could leave a kernel commit half done (applied but not marked dirty, say). While the
main thread commits, :class:`SigintGuard` holds the signal back and calls the handler it stands in for once the
commit is whole.

Swapping handlers around every commit costs two ``signal.signal`` calls (~11 µs, mostly the stdlib's enum
conversion), more than the write itself. So where the installed handler is Python's default one (scripts, the
common case), the guard's handler *stays* installed and stands for that default: outside a commit it calls
``signal.default_int_handler`` at once, so the program behaves as before. It never stands for any other handler:
one that would be remembered goes stale as soon as its owner restores whatever it had saved (ipykernel does so
around every cell; a test or a library may too), and Ctrl-C would then go to a handler nobody installed any more.
Where another handler is installed (Jupyter, a running ``asyncio.Runner``, the user's own), the guard stands in
front of it for one commit only and puts it back afterwards.

A guarded commit checks (``signal.getsignal``, ~3 µs) which handler is installed; the check is skipped when the
main thread returns within 0.1 ms of the last guarded commit while ours stayed installed (a burst of calls, where
no other code ran long enough to have swapped handlers). Side effect, documented in docs/getting-started.md:
``signal.getsignal(SIGINT)`` returns the guard's handler after the first write on the main thread, so
``asyncio.run`` started afterwards raises ``KeyboardInterrupt`` on Ctrl-C instead of cancelling its main task.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["GUARD", "SigintGuard"]

Handler = Callable[[int, FrameType | None], Any]
# A handler can only be replaced by code running on the main thread between two of our commits. If the main
# thread came back within this long (a burst of calls), that code ran for under 0.1 ms and the last check stands.
_RECHECK_NS = 100_000


class SigintGuard:
    """Defers SIGINT on the main thread between :meth:`enter` and :meth:`exit` (nestable; main thread only)."""

    def __init__(self) -> None:
        self.main = threading.main_thread().ident
        self._depth = 0
        self._pending: tuple[int, FrameType | None] | None = None
        self._handler: Handler = self._on_sigint  # one bound method, so identity checks work
        self._forward: Handler = signal.default_int_handler  # what a SIGINT outside a commit goes to
        self._sticky = False  # ours stays installed (standing for the default handler), as of _verified_at
        self._swapped: Handler | None = None  # the foreign handler ours stands in front of for this commit
        self._verified_at = -_RECHECK_NS

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._depth:
            self._pending = (signum, frame)
            return
        self._forward(signum, frame)

    def enter(self) -> bool:
        """On the main thread, start deferring SIGINT; False (and nothing to undo) elsewhere or when not needed."""
        if threading.get_ident() != self.main:
            return False
        if self._depth == 0 and not (self._sticky and time.perf_counter_ns() - self._verified_at <= _RECHECK_NS):
            current = signal.getsignal(signal.SIGINT)
            self._sticky = current is self._handler
            if current is signal.default_int_handler:
                self._forward = signal.default_int_handler
                signal.signal(signal.SIGINT, self._handler)
                self._sticky = True
            elif not callable(current):
                return False  # SIG_DFL / SIG_IGN act in C, never between two bytecodes
            elif not self._sticky:
                self._forward = current  # a foreign handler: stand in front of it for this commit only
                self._swapped = current
                signal.signal(signal.SIGINT, self._handler)
            else:
                self._forward = signal.default_int_handler
        self._depth += 1
        return True

    def exit(self) -> None:
        """Stop deferring; deliver a SIGINT that arrived meanwhile to the handler it was meant for."""
        self._depth -= 1
        if self._depth:
            return
        forward = self._forward
        if self._swapped is not None:
            signal.signal(signal.SIGINT, self._swapped)
            self._swapped = None
            self._forward = signal.default_int_handler
        else:
            self._verified_at = time.perf_counter_ns()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            forward(*pending)  # the default handler raises KeyboardInterrupt: the commit is whole

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` with SIGINT deferred (on the main thread)."""
        if not self.enter():
            return fn(*args)
        try:
            return fn(*args)
        finally:
            self.exit()


GUARD = SigintGuard()  # one per process: there is one SIGINT handler
