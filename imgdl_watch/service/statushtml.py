"""The status page: one self-contained HTML page, rendered from the status document.

The server renders the page whole from `status.collect()` (the document of
`status --json` and `/status.json`), so that it reads as a plain page with
JavaScript off; a `<noscript>` refresh reloads it every
`NO_SCRIPT_REFRESH_S`. With JavaScript on, the page's own script polls
`/status.json` every `POLL_MS` and rebuilds the same sections in place.

Nothing here trusts the document: job names, queued file names and host
names come from lists that users drop. The server side escapes every value
(`html.escape`, quotes included); the script builds its DOM with
`textContent` and attributes, never with markup. The server also sends a
Content-Security-Policy that lets only this page's own script and style run
(`CSP`), which would stop an injected handler even if an escape were missed.

Pure, but for reading its own style and script (`static/`) once, at import.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import time
from importlib import resources
from typing import Any
from urllib.parse import quote

# Seconds between reloads of the page with JavaScript off.
NO_SCRIPT_REFRESH_S = 5
# Milliseconds between two polls of /status.json by the page's script.
POLL_MS = 1000
# Queued lists shown by name; the rest are counted.
QUEUE_SHOWN = 50
# Per-host rows shown; the rest are counted.
HOSTS_SHOWN = 100
# The headings of the per-host fields the daemon sends (`download.hoststats`);
# any other field is headed by its name, its underscores as spaces.
HOST_LABELS = {
    "in_flight": "in flight",
    "waiting": "waiting for a turn",
    "rate": "rate limit (req/s)",
    "min_gap_s": "min gap (s)",
    "paused_s": "paused in all (s)",
    "paused_for_s": "paused for (s)",
    "opt_outs": "opt-outs",
    "req_s": "req/s now",
}


def _static(name: str) -> str:
    return (resources.files("imgdl_watch.service") / "static" / name).read_text(encoding="utf-8")


# The counts of a finished job, in this order first; any other whole-number
# field of a finished job (one a later version adds) follows them.
COUNTS = ("ok", "reused", "skipped", "failed", "invalid", "duplicates")
# Fields of a finished job that are not counts.
NOT_COUNTS = frozenset({"job", "finished_at", "report", "bytes", "elapsed_s"})

# The page's style and script, inlined into it: the page loads nothing else.
STYLE = _static("status.css")
SCRIPT = _static("status.js")


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


# Only this page's own script and style run; the script may fetch only from
# this server; nothing else loads, and no other site may frame the page.
CSP = (
    "default-src 'none'; "
    f"script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _e(value: Any) -> str:
    """A value as escaped text (quotes too: it may end up in an attribute)."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False)
    return html.escape(str(value), quote=True)


def _size(n: float) -> str:
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60} min"


def _table(head: list[str], rows: list[str]) -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table><tr>{cells}</tr>{''.join(rows)}</table>"


def _health(doc: dict[str, Any]) -> str:
    alive = bool(doc.get("daemon_alive"))
    stopping = alive and all(
        d.get("state") == "stopping" for d in doc.get("daemons") or [] if d.get("alive")
    )
    badge = (
        '<span class="bad">daemon stopping</span>'
        if stopping
        else '<span class="ok">daemon running</span>'
        if alive
        else '<span class="bad">no daemon is running</span>'
    )
    parts = [f'<p>{badge} on <span class="name">{_e(doc.get("inbox"))}</span></p>']
    rows = []
    for d in doc.get("daemons") or []:
        state = d.get("state") if d.get("alive") else f"{d.get('state')}, not alive"
        free = d.get("output_free_bytes")
        rows.append(
            "<tr>"
            f"<td>{_e(d.get('host'))}</td><td>{_e(d.get('pid'))}</td>"
            f'<td class="{"ok" if d.get("alive") else "bad"}">{_e(state)}</td>'
            f"<td>{_e(d.get('started_at'))}</td><td>{_e(d.get('updated_at'))}</td>"
            f"<td>{_e(d.get('in_flight'))}</td>"
            f"<td>{_e('-' if free is None else _size(free))}</td>"
            "</tr>"
        )
    if rows:
        head = ["host", "pid", "state", "started", "updated", "in flight", "free disk"]
        parts.append(_table(head, rows))
    return "".join(parts)


def _running(doc: dict[str, Any]) -> str:
    jobs = doc.get("running") or []
    if not jobs:
        return '<p class="muted">No job is running.</p>'
    rows = []
    for j in jobs:
        total, finished = j.get("total", 0), j.get("done", 0) + j.get("failed", 0)
        bar = (
            f'<progress class="bar" max="{_e(total)}" value="{_e(finished)}"></progress>'
            if total
            else '<progress class="bar"></progress>'
        )
        pct = f" ({100 * finished // total}%)" if total else ""
        failed = f", {j.get('failed')} failed" if j.get("failed") else ""
        rate = f"{j.get('rate_img_s', 0):.1f} img/s, {_size(j.get('rate_bytes_s', 0))}/s"
        rows.append(
            '<tr class="job">'
            f'<td class="name">{_e(j.get("job"))}</td><td>{bar}</td>'
            f'<td class="done">{_e(j.get("done"))}/{_e(total)}{_e(pct)}{_e(failed)}</td>'
            f"<td>{_e(rate)}</td><td>{_e(_span(j.get('eta_s')))}</td>"
            "</tr>"
        )
    return _table(["job", "progress", "done", "rate", "ETA"], rows)


def _queue(doc: dict[str, Any]) -> str:
    names = doc.get("queued") or []
    if not names:
        return '<p class="muted">No list is waiting.</p>'
    items = [f'<li class="name">{_e(n)}</li>' for n in names[:QUEUE_SHOWN]]
    if len(names) > QUEUE_SHOWN:
        items.append(f'<li class="muted">and {len(names) - QUEUE_SHOWN} more</li>')
    return f"<ul>{''.join(items)}</ul>"


def counts(job: dict[str, Any]) -> str:
    """A finished job's counts, as `60 ok, 0 failed, ...`."""
    keys = [k for k in COUNTS if isinstance(job.get(k), int)]
    keys += [
        k
        for k, v in job.items()
        if k not in keys and k not in NOT_COUNTS and isinstance(v, int) and not isinstance(v, bool)
    ]
    return ", ".join(f"{job[k]} {k}" for k in keys)


def _recent(doc: dict[str, Any]) -> str:
    jobs = doc.get("recent") or []
    if not jobs:
        return '<p class="muted">No job has finished yet.</p>'
    rows = []
    for j in jobs:
        report = j.get("report")
        link = (
            f'<a href="report/{_e(quote(str(report), safe=""))}">report</a>'
            if report
            else '<span class="muted">-</span>'
        )
        rows.append(
            "<tr>"
            f'<td class="name">{_e(j.get("job"))}</td><td>{_e(j.get("finished_at"))}</td>'
            f"<td>{_e(counts(j))}</td><td>{_e(_size(j.get('bytes') or 0))}</td>"
            f"<td>{_e(_span(j.get('elapsed_s')))}</td><td>{link}</td>"
            "</tr>"
        )
    return _table(["job", "finished", "counts", "size", "took", "report"], rows)


def host_rows(doc: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Per-host rows from the document, if it has any per-host section: its
    `hosts` (a list of objects, or an object keyed by host), or else each
    daemon's. None when there is none at all."""
    hosts = doc.get("hosts")
    if hosts is None:
        found = [d["hosts"] for d in doc.get("daemons") or [] if d.get("hosts") is not None]
        if not found:
            return None
        return [row for h in found for row in _as_rows(h)]
    return _as_rows(hosts)


def _as_rows(hosts: Any) -> list[dict[str, Any]]:
    if isinstance(hosts, list):
        return [h for h in hosts if isinstance(h, dict)]
    if isinstance(hosts, dict):
        rows = []
        for name, value in hosts.items():
            if isinstance(value, dict):
                rows.append({"host": name, **{k: v for k, v in value.items() if k != "host"}})
            else:
                rows.append({"host": name, "value": value})
        return rows
    return []


def _hosts(doc: dict[str, Any]) -> str:
    rows = host_rows(doc)
    if rows is None:
        return '<p class="muted">This daemon reports no per-host data.</p>'
    if not rows:
        return '<p class="muted">No host is being throttled or paced.</p>'
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    keys.sort(key=lambda k: k != "host")
    body = []
    for row in rows[:HOSTS_SHOWN]:
        cells = "".join(
            f'<td class="{"name" if k == "host" else ""}">{_host_cell(row, k)}</td>' for k in keys
        )
        body.append(f"<tr>{cells}</tr>")
    more = (
        f'<p class="muted">and {len(rows) - HOSTS_SHOWN} more hosts</p>'
        if len(rows) > HOSTS_SHOWN
        else ""
    )
    return _table([host_label(k) for k in keys], body) + more


def host_label(key: str) -> str:
    return HOST_LABELS.get(key, key.replace("_", " "))


def _host_cell(row: dict[str, Any], key: str) -> str:
    # A field sent as null (a host with no rate limit) reads as "-".
    if key in row and row[key] is None:
        return "-"
    return _e(row.get(key))


def render_page(doc: dict[str, Any], *, now: float | None = None) -> str:
    """The whole page for the status document `doc`."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    sections = (
        ("health", "Daemon", _health(doc)),
        ("running", "Running jobs", _running(doc)),
        ("queue", "Queue", _queue(doc)),
        ("recent", "Last finished", _recent(doc)),
        ("hosts", "Hosts", _hosts(doc)),
    )
    body = "".join(
        f'<section><h2>{_e(title)}</h2><div id="{sid}">{content}</div></section>'
        for sid, title, content in sections
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>imgdl-watch</title>"
        f'<noscript><meta http-equiv="refresh" content="{NO_SCRIPT_REFRESH_S}"></noscript>'
        f"<style>{STYLE}</style></head>"
        f'<body data-poll-ms="{POLL_MS}" data-queue-shown="{QUEUE_SHOWN}" '
        f'data-hosts-shown="{HOSTS_SHOWN}" data-counts="{_e(list(COUNTS))}" '
        f'data-not-counts="{_e(sorted(NOT_COUNTS))}" data-host-labels="{_e(HOST_LABELS)}">'
        f'<h1>imgdl-watch</h1><p id="updated" class="muted small">as of {_e(stamp)}'
        f"; this page refreshes every {NO_SCRIPT_REFRESH_S} s</p>"
        f"{body}"
        f"<script>{SCRIPT}</script>"
        "</body></html>\n"
    )
