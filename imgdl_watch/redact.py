"""Untrusted text made safe to log: pure logic, no I/O.

A log line may echo a list's bad line or a URL, but never a password, and
never so much that a hostile input floods the log.
"""

from __future__ import annotations

import re

# How much of a bad line a log event may echo. Enough to recognise the line,
# never enough for a hostile input to flood the log.
EXCERPT_CHARS = 60
# Longest URL a log line carries; the report has the whole URL.
LOG_URL_CHARS = 300
# The password in `scheme://user:password@host`: logs show `***` instead.
# (Neither part may hold a raw `@`, `/`, `?` or `#`, so the first `@` ends it.)
_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#@]*@")
# The same, anywhere in a list's line or row (a row has other cells around
# its URL, a bad line may have anything before it, and jsonl may write each
# `/` as `\/`). A user part ends at a quote, a comma, a semicolon or a space;
# a password only where a URL's would, since it may hold any of those.
_SCHEME_USER = r"([A-Za-z][A-Za-z0-9+.-]*:(?:\\?/){2}[^/\\?#@:\s\"',;]*)"
# (A backslash may be in a password, but not as jsonl's `\/`.)
_USERINFO_REST = r":(?:[^/\\?#@]|\\(?!/))*"
_PASSWORDS_ANYWHERE = re.compile(_SCHEME_USER + _USERINFO_REST + "@")
# A password that the end of the text cut before its `@` (an overlong line's
# head): hidden to the end. (A port there, with no path after it, is hidden
# too: an excerpt loses nothing that matters by it.)
_PASSWORD_CUT = re.compile(_SCHEME_USER + _USERINFO_REST + "$")


def excerpt(text: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable excerpt of untrusted input, safe to log."""
    if isinstance(text, bytes):
        text = text[: limit * 4].decode("utf-8", "backslashreplace")
    cut = text[:limit]
    shown = cut.encode("unicode_escape").decode("ascii") if not cut.isprintable() else cut
    if len(shown) > limit:
        shown = shown[:limit]
    return shown + ("…" if len(text) > limit or len(shown) < len(cut) else "")


def line_excerpt(text: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """`excerpt` of a list's line or row, every password in it shown as
    `***`, found before the line is cut (a cut could leave the password and
    take the `@` that marks it)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    if ":" in text:
        # A line that starts with its URL: its userinfo as `redact` reads it
        # (its user may hold a comma); then any other, anywhere.
        text = _PASSWORDS_ANYWHERE.sub(r"\1:***@", redact(text))
        text = _PASSWORD_CUT.sub(r"\1:***", text)
    return excerpt(text, limit)


def printable(text: str) -> str:
    """`text` with each character that a terminal would act on or that hides
    what follows (control characters, ESC's sequences, bidi overrides, line
    separators) written as Python escapes it, for a person's terminal. A
    list's name or URL may hold any of them (a JSON line escapes them by
    itself: `service.logs`)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def redact(url: str) -> str:
    """`url` with the password of its userinfo, if any, replaced by `***`."""
    if "@" not in url:
        return url
    return _PASSWORD.sub(r"\1:***@", url, count=1)


def log_url(url: str) -> str:
    """A URL as a log line carries it: no password, at most `LOG_URL_CHARS`."""
    url = redact(url)
    return url if len(url) <= LOG_URL_CHARS else excerpt(url, LOG_URL_CHARS)
