"""Per host: the rules each host is downloaded by, and what it has seen of us.

The fetcher asks this one object everything that depends on the host:

- its limits: the adaptive slot limit (`hostlimits`, capped by its `[hosts]`
  entry), its rate and gap (`pacing`, with robots.txt's Crawl-delay), and its
  bandwidth cap (`bandwidth`);
- the headers its requests carry (a `[hosts]` entry's win over the job's);
- what to do when it answers: a Retry-After pauses it, an opt-out or a
  robots.txt refusal is counted;
- what `status` and the metrics show of it (`hoststats`).

The per-host rules (rate, gap, ceiling, bandwidth, headers) are those of the
listed URL's host, except bandwidth, which is the serving host's; a pause is
that of the host that asked for it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Mapping
from typing import Final

import httpx
import structlog

from .. import errors as err
from .. import metrics
from .bandwidth import Bandwidth, CappedBody
from .headers import RequestHeaders
from .hostlimits import HostLimits
from .hoststats import HostState, HostStats
from .options import FetchOptions
from .optout import agent_token
from .pacing import UNLIMITED, Pacer, PaceRule, Turn
from .retrypolicy import RETRY_AFTER_STATUSES, status_error
from .robots import Robots, WithSend
from .rules import DownloadRules
from .transports import Answer

# A pause that grows by less than this is not logged again (many downloads
# of a host get a Retry-After at nearly the same time).
_PAUSE_LOG_STEP_S: Final = 1.0

log = structlog.get_logger("imgdl_watch")

_HeadersKey = tuple[str, str, tuple[tuple[str, str], ...]]


@dataclasses.dataclass(frozen=True, slots=True)
class Sending:
    """A request on its way to `host`, and the turn it took on the host's
    schedule, if it took one (`pacing`): `sent` tells the pacer it ended."""

    host: str
    turn: Turn | None


class HostPolicy:
    """Each host's rules and state, shared by every download of the fetcher."""

    def __init__(self, options: FetchOptions, *, rand: random.Random) -> None:
        self.options = options
        self.limits = HostLimits(options.per_host, overrides=self._ceiling_override)
        self.token = agent_token(options.user_agent)
        self.robots = Robots(self.token) if options.robots else None
        self.pacer = Pacer(self.pace_rule, rand=rand)
        self.bandwidth = Bandwidth(options.max_rate, self._max_rate_of)
        self.stats = HostStats()
        # Downloads with a request out, by host (past their turn); at most
        # `concurrency` hosts, each gone at 0.
        self._sending: dict[str, int] = {}
        # Each `[hosts]` rule's headers with a job's, built on first use.
        self._rule_headers: dict[_HeadersKey, RequestHeaders] = {}

    def update(self, options: FetchOptions) -> None:
        """Follow a reloaded rate, gap, bandwidth cap and `[hosts]` table."""
        self.options = options
        self._rule_headers.clear()
        self.bandwidth.set_rate(options.max_rate)
        self.limits.set_ceiling(self.limits.ceiling)  # the overrides may have changed

    # -- the rules -----------------------------------------------------------

    def pace_rule(self, host: str) -> PaceRule:
        options = self.options
        rule = options.hosts.match(host)
        rate, gap = options.rate_per_host, options.min_gap
        if rule is not None:
            rate = rate if rule.rate is None else rule.rate
            gap = gap if rule.min_gap is None else rule.min_gap
        if self.robots is not None:
            gap = max(gap, self.robots.crawl_delay(host))
        if not rate and not gap:  # a rate of 0 is none (a `[hosts]` entry's exemption)
            return UNLIMITED
        return PaceRule(rate or None, gap)

    def _ceiling_override(self, host: str) -> int | None:
        rule = self.options.hosts.match(host)
        return None if rule is None else rule.per_host

    def _max_rate_of(self, host: str) -> int:
        rule = self.options.hosts.match(host)
        return 0 if rule is None or rule.max_rate is None else rule.max_rate

    def headers_for(self, host: str, rules: DownloadRules) -> RequestHeaders:
        """A job's headers (global, then its category's), then the host's `[hosts]`
        entry's, which win for a name: they are the most particular to it."""
        rule = self.options.hosts.match(host)
        if rule is None or not rule.header:
            return rules.headers
        key = (rule.name, rules.user_agent, rules.header)
        headers = self._rule_headers.get(key)
        if headers is None:
            headers = self._rule_headers[key] = RequestHeaders(
                user_agent=rules.user_agent, extra=rules.header + rule.header
            )
        return headers

    def capped(self, host: str, answer: Answer) -> tuple[Answer, CappedBody | None]:
        """`answer` with its body read no faster than the host's and the process's
        bandwidth caps allow; the reader, to close, when there is a cap."""
        if not self.bandwidth.capped(host):
            return answer, None
        reader = self.bandwidth.reader(host, answer.body)
        return dataclasses.replace(answer, body=reader), reader

    # -- a request's life ----------------------------------------------------

    def sending(self, host: str, turn: Turn | None) -> Sending:
        """A request to `host` is about to go out (its turn and a global slot are held)."""
        sending = self._sending
        sending[host] = sending.get(host, 0) + 1
        self.stats.get(host).requests += 1
        metrics.recorder.request(host)
        return Sending(host, turn)

    def sent(self, request: Sending) -> None:
        """The request's attempt is over, however it ended."""
        if request.turn is not None:
            # The host's schedule counts it from now: the server saw it by then.
            self.pacer.answered(request.turn, request.host)
        host, sending = request.host, self._sending
        if sending[host] == 1:
            del sending[host]
        else:
            sending[host] -= 1

    def refusal(self, host: str, status: int, headers: Mapping[str, str]) -> err.HttpStatusError:
        """The error for a status that is neither an image nor a redirect. A
        Retry-After pauses the host: no download asks it again before then."""
        if status in RETRY_AFTER_STATUSES:
            metrics.recorder.throttled(host, status)
        error = status_error(status, headers, now=dt.datetime.now(dt.UTC))
        if error.retry_after is not None:
            self._pause(host, error)
        return error

    def _pause(self, host: str, exc: err.HttpStatusError) -> None:
        assert exc.retry_after is not None
        seconds = min(exc.retry_after, self.options.backoff.retry_after_cap_s)
        was_paused = self.pacer.paused_for(host) > 0
        added = self.pacer.pause(host, seconds)
        if added <= 0:
            return
        self.stats.get(host).paused_s += added
        metrics.recorder.paused(host, added)
        if not was_paused or added >= _PAUSE_LOG_STEP_S:
            log.info(
                "host_paused",
                host=host,
                reason="retry_after",
                status=exc.status,
                pause_s=round(seconds, 3),
            )

    @property
    def opt_out_token(self) -> str | None:
        """The token an X-Robots-Tag opts us out by; None when opt-outs are ignored."""
        return None if self.options.ignore_opt_outs else self.token

    def opted_out(self, host: str, exc: err.OptedOut) -> None:
        """`host`'s answer opted out of us (`exchange` raised `exc`)."""
        self._refused(host, exc)

    async def check_robots(self, url: httpx.URL, with_send: WithSend) -> None:
        """Raise unless `--robots` is off or `url`'s robots.txt allows it."""
        if self.robots is None:
            return
        try:
            await self.robots.check(url, with_send)
        except err.RobotsDisallowed as exc:
            self._refused(url.host, exc)
            raise

    def _refused(self, host: str, exc: err.DownloadError) -> None:
        """A URL that the host's publisher opted out, or robots.txt disallowed."""
        if not isinstance(exc, err.RobotsUnavailable):
            self.stats.get(host).opt_outs += 1
        metrics.recorder.opted_out(host, exc.reason)

    # -- what status shows ---------------------------------------------------

    def busy(self, host: str) -> bool:
        """Whether a download of `host` would wait for one of its slots now (every
        one is taken: by downloads in flight, or waiting for the host's turn)."""
        return self.limits.saturated(host)

    def states(self, count: int) -> list[HostState]:
        """The hosts `status` shows: those with downloads in flight first, then
        those seen last, `count` at most."""
        limits = self.limits
        shown = sorted(limits.busy_hosts(), key=limits.in_flight, reverse=True)[:count]
        for host in self.stats.recent(count):
            if len(shown) >= count:
                break
            if host not in shown:
                shown.append(host)
        return [self._state(host) for host in shown]

    def _state(self, host: str) -> HostState:
        rule, counts = self.pace_rule(host), self.stats.peek(host)
        sending = self._sending.get(host, 0)
        return HostState(
            host=host,
            in_flight=sending,
            waiting=max(0, self.limits.in_flight(host) - sending),
            limit=self.limits.limit_of(host),
            ceiling=self.limits.ceiling_of(host),
            rate=rule.rate,
            min_gap_s=rule.min_gap,
            requests=counts.requests,
            paused_s=round(counts.paused_s, 3),
            paused_for_s=round(self.pacer.paused_for(host), 3),
            opt_outs=counts.opt_outs,
        )
