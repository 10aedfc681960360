"""Change detection for the online least-squares fits (the trainer's output layer, a payload).

A recursive least-squares fit with forgetting adapts slowly when the dynamics change at once
(a new tool, a heavier flask): the old data still weighs. :class:`ChangeDetector` keeps a
running mean of the fit's error per window; two windows in a row whose error exceeds
``factor`` times that mean are a change (one alone could be a motion not seen lately), and the
caller restarts its fit from the first of them. The two fits share it so that they agree on
what a change is.
"""

from __future__ import annotations

from typing import Any, Optional

#: Weight of the newest window in the running mean of the error (~10 windows).
ERR_SMOOTHING = 0.1


class ChangeDetector:
    """See the module docstring. ``factor`` 0: never a change."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        #: Running mean of the error of windows seen without a change (None before the first).
        self.level: Optional[float] = None
        self._held: Any = None

    def observe(self, err: float, window_stats: Any, warm: bool = True) -> Any:
        """One window's error (before the fit takes it) and its statistics. Returns None, or,
        when this window confirms a change, the statistics of the window before it (the first
        of the change), from which the caller restarts its fit. ``warm`` False (a window
        right after a sequence start, whose error says nothing about the dynamics) changes
        nothing."""
        if not warm:
            return None
        if self.level is None:
            self.level = err
            return None
        if self.factor > 0 and err > self.factor * self.level:
            if self._held is None:
                self._held = window_stats
                return None
            held, self._held = self._held, None
            self.level = err
            return held
        self.level += ERR_SMOOTHING * (err - self.level)
        self._held = None
        return None
