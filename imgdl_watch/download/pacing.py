"""How often a host may be asked, set in advance: a rate, a minimum gap, a pause.

    PaceRule     what a host is allowed: its rate, burst and minimum gap (a value)
    HostPace     one host's schedule: when it may next be asked (pure logic)
    Pacer        every host's schedule, and the waits for a turn (trio's clock)

**Rate.** At most `burst` requests in any window of `burst / rate` seconds
(and `RATE_SLACK` more), where the burst is a second's worth of requests
(`ceil(rate)`), at most `MAX_BURST`. So `--rate-per-host 5` never puts more
than 5 requests in any second, and 200 requests take about 41 s; a host
that was idle gets up to a second's worth at once instead of waiting 1/rate
before each.

**Minimum gap.** `--min-gap` seconds at least between two requests to a host
(from the last one's answer, as below), each gap drawn anew between the gap
and `1 + GAP_JITTER` times it, so that requests do not tick like a clock.
Both apply; the tighter wins.

**Pause.** A host that answered with Retry-After is paused until then: no
request of any download reaches it before (the fetcher caps the length).

The fetcher takes a host's turn (`Pacer.wait`, then `Pacer.take`) as the
last thing before a request, so the rule holds on the times requests are
really sent. Waiting here holds no global download slot.

**Counted until the attempt ends.** A request counts from its turn until
its attempt ends (`Pacer.answered`: its answer whole, or its failure), and
from then on; while it is out, it counts as now. The server saw it somewhere
in between, so no window of the server's can hold more than the rule
allows, whenever within the attempt the server saw or logged it (nginx's
`$msec` is when the answer was sent). A request on a new connection reaches
the server a handshake later than one on a kept connection: counted from
the turn alone, a first burst that met TCP and TLS handshakes came so late
that the next burst, on kept connections, fell within the same second of
the server's log (7 in a second under `--rate-per-host 5`, on nginx:
benchmarks/README, "Pacing on a real server's log"). The price: a paced
host has at most a burst of requests out at once, and a window's turns wait
for the previous window's attempts to end.

Only hosts with a rule, a pause or a recent request have a schedule; one at
rest (a fresh schedule would act the same) is forgotten, so many hosts do not
grow the table.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

# The largest burst: a host that allows 100 requests a second still gets
# them spread over the second in tens, not a hundred at once.
MAX_BURST = 10
# Each window is this much longer than burst/rate: a margin for the clocks
# (ours and the server's log stamp each request a little apart), so that a
# server's log never shows the next burst's first request within a second
# of the last one's, R + 1 in a second. 5% costs 5% of the rate.
RATE_SLACK = 0.05
# Each gap is drawn between --min-gap and (1 + GAP_JITTER) times it.
GAP_JITTER = 0.5
# Schedules kept before those at rest are swept out.
SWEEP_AT = 256


@dataclass(frozen=True, slots=True)
class PaceRule:
    """What a host is allowed. The default allows anything."""

    # Requests per second, or None for no rate.
    rate: float | None = None
    # The least seconds between two requests (before jitter); 0 for none.
    min_gap: float = 0.0

    @property
    def limited(self) -> bool:
        return self.rate is not None or self.min_gap > 0

    @property
    def burst(self) -> int:
        if self.rate is None:
            return MAX_BURST
        return max(1, min(MAX_BURST, math.ceil(self.rate)))

    @property
    def window(self) -> float:
        """Seconds in which at most `burst` requests go."""
        return 0.0 if self.rate is None else self.burst / self.rate * (1 + RATE_SLACK)


UNLIMITED = PaceRule()


@dataclass(slots=True)
class HostPace:
    """One host's schedule, in seconds of whatever clock the caller uses."""

    # The times of the last requests (MAX_BURST at most), in the order they
    # went: when each went, or when its attempt ended once it ended.
    sent: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_BURST))
    # How many of the newest in `sent` are still out (they count as now)...
    unanswered: int = 0
    # ... and how many more, pushed out of `sent` by newer ones, are out too
    # (only a host with no rate has that many out: a rate caps them at a burst).
    lost: int = 0
    # The gap (jitter drawn) that must follow the last request.
    gap: float = 0.0
    paused_until: float = -math.inf

    @property
    def out(self) -> int:
        """Requests still out: their attempts have not ended."""
        return self.unanswered + self.lost

    def last(self, now: float) -> float:
        """When the last request counts from: now, while any is out."""
        return now if self.out else max(self.sent, default=-math.inf)

    def ready_at(self, rule: PaceRule, now: float) -> float:
        """The earliest time, `now` or later, at which the host may be asked,
        if no attempt ends meanwhile (an end may make it sooner)."""
        ready = max(now, self.paused_until, self.last(now) + self.gap)
        burst = rule.burst
        if rule.rate is not None and len(self.sent) + self.lost >= burst:
            # The requests out are the newest in `sent` (see `answered`).
            ended = sorted(itertools.islice(self.sent, len(self.sent) - self.unanswered))
            times = ended + [now] * self.out  # a request still out counts as now
            ready = max(ready, times[-burst] + rule.window)
        return ready

    def take(self, rule: PaceRule, now: float, draw: float) -> None:
        """A request goes now; `draw` (0 to 1) picks the jitter of the gap after it."""
        if self.unanswered == MAX_BURST:
            self.lost += 1  # the oldest request out falls out of `sent`
        else:
            self.unanswered += 1
        self.sent.append(now)
        self.gap = rule.min_gap * (1 + GAP_JITTER * draw)

    def answered(self, now: float) -> None:
        """A request's attempt ended now: the oldest request out counts from
        now. Attempts end in any order, but which request out moves does not
        change how many times fall in a window."""
        if self.lost:
            self.lost -= 1
        elif self.unanswered:
            oldest = len(self.sent) - self.unanswered
            self.sent[oldest] = max(self.sent[oldest], now)
            self.unanswered -= 1

    def pause(self, until: float) -> bool:
        """Pause until `until`. True when that makes the pause longer."""
        if until <= self.paused_until:
            return False
        self.paused_until = until
        return True

    def at_rest(self, rule: PaceRule, now: float) -> bool:
        """A fresh schedule would act the same from now on."""
        if self.out:
            return False
        return now >= max(self.paused_until, self.last(now) + max(self.gap, rule.window))


@dataclass(slots=True)
class _Entry:
    pace: HostPace = field(default_factory=HostPace)
    # One download at a time takes the host's turn, in order of arrival.
    lock: trio.Lock = field(default_factory=trio.Lock)
    users: int = 0
    # Where the one waiting for the turn waits for an attempt to end.
    ends: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)


# A turn taken on a host's schedule: what `Pacer.answered` must hear of.
Turn = _Entry


class Pacer:
    """Every host's schedule. `rule_of(host)` says what a host is allowed."""

    def __init__(
        self, rule_of: Callable[[str], PaceRule], *, rand: random.Random | None = None
    ) -> None:
        self.rule_of = rule_of
        self._rand = rand or random.Random()
        self._hosts: dict[str, _Entry] = {}

    def active(self, host: str) -> bool:
        """Whether `host` has anything to wait for (else the fetcher skips the pacer)."""
        return host in self._hosts or self.rule_of(host).limited

    def paused_for(self, host: str) -> float:
        """Seconds left of the host's pause (0 when it is not paused)."""
        entry = self._hosts.get(host)
        if entry is None:
            return 0.0
        return max(0.0, entry.pace.paused_until - trio.current_time())

    def pause(self, host: str, seconds: float) -> float:
        """Pause `host` for `seconds` from now. Returns the seconds this adds to its pause."""
        now = trio.current_time()
        entry = self._entry(host)
        before = max(now, entry.pace.paused_until)
        added = now + seconds - before if entry.pace.pause(now + seconds) else 0.0
        self._forget_if_idle(host, entry, now)
        return added

    def enter(self, host: str) -> _Entry:
        """Join the host's queue: `await wait(...)`, then `take` or `leave`."""
        entry = self._entry(host)
        entry.users += 1
        return entry

    async def wait(self, entry: _Entry, host: str) -> None:
        """Sleep until the host may be asked (the caller holds the entry's lock)."""
        while True:
            now = trio.current_time()
            ready = entry.pace.ready_at(self.rule_of(host), now)
            if ready <= now:
                return
            # Until then, or until an attempt ends: that may free the turn sooner.
            with trio.move_on_at(ready):
                await entry.ends.park()

    def take(self, entry: _Entry, host: str) -> bool:
        """Take the turn now, if it is still free (a pause may have come meanwhile)."""
        now, rule = trio.current_time(), self.rule_of(host)
        if entry.pace.ready_at(rule, now) > now:
            return False
        entry.pace.take(rule, now, self._rand.random())
        return True

    def answered(self, entry: _Entry, host: str) -> None:
        """The attempt of a request that took its turn on `entry` ended: it
        counts from now (see "Counted until the attempt ends")."""
        now = trio.current_time()
        entry.pace.answered(now)
        entry.ends.unpark_all()
        self._forget_if_idle(host, entry, now)

    def leave(self, entry: _Entry, host: str) -> None:
        entry.users -= 1
        self._forget_if_idle(host, entry, trio.current_time())

    def _entry(self, host: str) -> _Entry:
        entry = self._hosts.get(host)
        if entry is None:
            if len(self._hosts) >= SWEEP_AT:
                self._sweep(trio.current_time())
            entry = self._hosts[host] = _Entry()
        return entry

    def _forget_if_idle(self, host: str, entry: _Entry, now: float) -> None:
        # A host with no rule and no pause needs no schedule once nobody waits.
        idle = entry.users == 0 and not self.rule_of(host).limited
        if idle and entry.pace.at_rest(UNLIMITED, now):
            self._hosts.pop(host, None)

    def _sweep(self, now: float) -> None:
        for host, entry in list(self._hosts.items()):
            if entry.users == 0 and entry.pace.at_rest(self.rule_of(host), now):
                del self._hosts[host]
