"""When a dropped list is complete: unchanged for `settle` seconds. Pure logic, no I/O.

watchfiles reports a file as `added` while it is still being written, so
completeness is ours to decide. A file is taken once its size and mtime
have not changed for `settle` seconds. A list renamed in with an old mtime
(`mv` from the same filesystem) is therefore taken at once, having been
quiet that long already; a list still being written, with pauses shorter
than `settle`, is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Seen:
    """What a stat of an inbox candidate showed."""

    size: int
    mtime_ns: int


@dataclass(slots=True)
class SettleTracker:
    """Decides when a candidate is complete: unchanged for `settle_s` seconds.

    Pure logic: the caller feeds it observations and the current time.
    """

    settle_s: float
    _since: dict[str, tuple[Seen, float]] = field(default_factory=dict)

    def observe(self, name: str, seen: Seen, now: float, mtime_age_s: float) -> None:
        previous = self._since.get(name)
        if previous is not None and previous[0] == seen:
            return
        # Unchanged since its mtime: a file last written `mtime_age_s` ago has
        # already been quiet that long, even if we only now notice it.
        self._since[name] = (seen, now - max(mtime_age_s, 0.0))

    def forget_missing(self, present: set[str]) -> None:
        for name in [n for n in self._since if n not in present]:
            del self._since[name]

    def forget(self, name: str) -> None:
        self._since.pop(name, None)

    def ready(self, now: float) -> list[str]:
        """Settled names, oldest first."""
        settled = [(t, n) for n, (_, t) in self._since.items() if now - t >= self.settle_s]
        return [n for _, n in sorted(settled)]

    def next_deadline(self, now: float) -> float | None:
        """When the next name that is not settled yet will be, if unchanged."""
        pending = [t + self.settle_s for _, t in self._since.values() if t + self.settle_s > now]
        return min(pending, default=None)
