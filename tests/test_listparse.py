from __future__ import annotations

import threading

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from imgdl_watch.hostnames import dns_can_carry
from imgdl_watch.job.listparse import (
    MAX_LINE_BYTES,
    InvalidLine,
    ListedUrl,
    OverlongLine,
    as_utf8,
    check_url,
    check_url_fully,
    parse_chunks,
    parse_line,
    split_lines,
)
from imgdl_watch.naming import _PLAIN_SEGMENT, base_name
from imgdl_watch.redact import EXCERPT_CHARS, log_url

# Far beyond what the lines of the backtracking test take (~0.1 s), and far
# below what a matcher that backtracks over every split of a host would
# (minutes: the old pattern took ~5 s for one of those lines).
HANG_S = 10


def listed(line: int, url: str) -> ListedUrl:
    return ListedUrl(line, url, httpx.URL(url), httpx.URL(url).host)


def entries(text: bytes, chunk: int = 7) -> list[ListedUrl | InvalidLine]:
    return list(parse_chunks(text[i : i + chunk] for i in range(0, len(text), chunk)))


def test_blank_comments_whitespace_crlf_and_bom() -> None:
    text = b"\xef\xbb\xbfhttp://a.example/1.jpg\r\n\r\n   # note\r\n  https://b.example/2.png  \r\n"
    assert entries(text) == [
        listed(1, "http://a.example/1.jpg"),
        listed(4, "https://b.example/2.png"),
    ]


def test_invalid_lines_have_reasons_and_line_numbers() -> None:
    text = (
        b"ftp://x.example/a.jpg\n"
        b"file:///etc/passwd\n"
        b"javascript:alert(1)\n"
        b"not a url\n"
        b"http:///nohost.jpg\n"
        b"\xff\xfe\x00junk\n"
        b"http://ok.example/a.jpg\n"
        b"http://x.example:99999/a.jpg\n"
    )
    got = entries(text)
    assert [(e.line, getattr(e, "reason", None)) for e in got] == [
        (1, "unsupported_scheme"),
        (2, "unsupported_scheme"),
        (3, "not_a_url"),
        (4, "bad_characters"),
        (5, "missing_host"),
        (6, "not_utf8"),
        (7, None),
        (8, "malformed_url"),
    ]


def test_overlong_line_is_cut_and_not_held() -> None:
    huge = b"http://x.example/" + b"a" * 10_000_000
    got = entries(huge + b"\nhttp://ok.example/a.jpg\n", chunk=65536)
    assert isinstance(got[0], InvalidLine)
    assert got[0].reason == "line_too_long"
    assert len(got[0].excerpt) <= EXCERPT_CHARS + 1
    assert got[1] == listed(2, "http://ok.example/a.jpg")


def test_split_lines_keeps_only_the_head_of_long_lines() -> None:
    lines = list(split_lines([b"x" * (MAX_LINE_BYTES + 1), b"\nshort"]))
    assert isinstance(lines[0][1], OverlongLine)
    assert lines[1] == (2, b"short")


def test_fragment_is_dropped() -> None:
    assert parse_line(b"http://a.example/x.jpg#frag", 1) == listed(1, "http://a.example/x.jpg")


def test_the_parsed_url_travels_with_the_line() -> None:
    # A URL that httpx parsed to check it, in the reader's thread: the download
    # reuses the parse. A plain one was not parsed: the download parses it.
    entry = parse_line(b"https://[::1]:8443/p/x.jpg?s=2#frag", 3)
    assert isinstance(entry, ListedUrl) and entry.parsed is not None
    assert entry.parsed == httpx.URL(entry.url) == httpx.URL("https://[::1]:8443/p/x.jpg?s=2")
    assert entry.host == "::1"
    plain = parse_line(b"https://A.example:8443/p/x.jpg?s=2#frag", 3)
    assert isinstance(plain, ListedUrl) and plain.parsed is None
    assert (plain.url, plain.host) == ("https://A.example:8443/p/x.jpg?s=2", "a.example")


@given(st.lists(st.binary(max_size=200), max_size=30), st.integers(min_value=1, max_value=50))
def test_any_bytes_parse_without_error_and_keep_line_numbers(
    lines: list[bytes], chunk: int
) -> None:
    text = b"\n".join(line.replace(b"\n", b"") for line in lines)
    got = entries(text, chunk)
    numbers = [e.line for e in got]
    assert numbers == sorted(numbers)
    assert all(1 <= n <= max(len(lines), 1) for n in numbers)
    for entry in got:
        if isinstance(entry, ListedUrl):
            assert entry.url.lower().startswith(("http://", "https://"))
        else:
            assert len(entry.excerpt) <= EXCERPT_CHARS + 1


# Lines of URLs, junk and comments, without line breaks of their own.
_list_lines = st.lists(
    st.one_of(
        st.sampled_from(["http://a.example/1.jpg", "https://b.example/ä/ö.png", "# c", "", " x "]),
        st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=["Cs"])),
    ),
    max_size=20,
)


@given(_list_lines, st.sampled_from(["utf-16-le", "utf-16-be"]), st.integers(1, 9))
def test_a_utf16_list_reads_as_its_utf8_twin(lines: list[str], encoding: str, chunk: int) -> None:
    # Windows PowerShell's `>` writes UTF-16 with a byte-order mark.
    text = "\r\n".join(lines)
    as_utf16 = ("\ufeff" + text).encode(encoding)
    assert entries(as_utf16, chunk) == entries(text.encode("utf-8"), chunk)


def test_what_cannot_be_utf16_is_not_utf8() -> None:
    lone_surrogate = "\ud800".encode("utf-16-le", "surrogatepass")
    text = "\ufeffhttp://a.example/1.jpg\n".encode("utf-16-le") + lone_surrogate
    text += "\nhttp://b.example/2.jpg".encode("utf-16-le") + b"h"  # an odd last byte
    got = entries(text, 3)
    assert [(e.line, getattr(e, "reason", None)) for e in got] == [
        (1, None),
        (2, "not_utf8"),
        (3, "not_utf8"),
    ]


def test_bytes_that_only_look_like_a_bom_later_are_not_utf16() -> None:
    got = entries(b"http://a.example/1.jpg\n\xff\xfeh\x00\n", 1)
    assert [getattr(e, "reason", None) for e in got] == [None, "not_utf8"]


@given(st.text(max_size=300))
def test_excerpts_are_short_and_printable(text: str) -> None:
    entry = parse_line(("ftp://" + text).encode("utf-8", "surrogatepass"), 1)
    if isinstance(entry, InvalidLine):
        assert len(entry.excerpt) <= EXCERPT_CHARS + 1
        assert entry.excerpt.isprintable()


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("http://alice:s3cret@h.example/x.jpg", "http://alice:***@h.example/x.jpg"),
        ("https://alice:p%40ss:word@h.example:8443/x", "https://alice:***@h.example:8443/x"),
        ("http://alice@h.example/x.jpg", "http://alice@h.example/x.jpg"),  # no password
        ("http://h.example/a@b.jpg", "http://h.example/a@b.jpg"),
        ("http://h.example:80/a:b@c.jpg", "http://h.example:80/a:b@c.jpg"),
        ("http://h.example/x?u=a:b@c", "http://h.example/x?u=a:b@c"),
    ],
)
def test_logs_never_show_a_password(url: str, logged: str) -> None:
    assert log_url(url) == logged


def test_an_invalid_line_does_not_echo_its_password() -> None:
    entry = parse_line(b"ftp://alice:s3cret@h.example/x.jpg", 1)
    assert isinstance(entry, InvalidLine) and entry.reason == "unsupported_scheme"
    assert "s3cret" not in entry.excerpt and "alice:***@" in entry.excerpt


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"http://alice:s3cret@h.example/x.jpg\xff", "not_utf8"),
        (b"http://alice:s3cret@h.example/x.jpg?" + b"q" * 70_000, "line_too_long"),
        # A password longer than the excerpt: cut before its @, it would show.
        (b"http://alice:" + b"s3cret" * 20 + b"@h.example/x.jpg?" + b"q" * 9000, "line_too_long"),
        (b"junk before http://alice:s3cret@h.example/x.jpg", "bad_characters"),
        # A password may hold a comma, a semicolon, a quote or a space.
        (b"http://alice:s3cret,;'@h.example:99999999/a.jpg", "malformed_url"),
        (b"http://alice:s3 cret@h.example/a.jpg", "bad_characters"),
        # A user with a comma in it, as `redact` reads a URL's userinfo.
        (b"http://x,alice:s3cret@h.example:99999999/a.jpg", "malformed_url"),
        # A password longer than the head an overlong line keeps: no @ is left.
        (b"http://alice:s3cret" + b"p" * 9000 + b"@h.example/x.jpg", "line_too_long"),
    ],
)
def test_no_invalid_line_echoes_its_password(line: bytes, reason: str) -> None:
    (entry,) = entries(line + b"\n", chunk=4096)
    assert isinstance(entry, InvalidLine) and entry.reason == reason, entry
    assert "s3cret" not in entry.excerpt and "alice:***" in entry.excerpt


# -- the fast path of check_url ------------------------------------------

_LABEL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
# Short labels, and labels around DNS's bound of 63 (`hostnames`).
_LABEL = st.one_of(
    st.text(_LABEL_CHARS, max_size=12), st.text(_LABEL_CHARS, min_size=60, max_size=66)
)
_PRINTABLE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)
# URLs shaped like the fast path's, and near misses: any of these may or may
# not take it, and the property below must hold either way.
_PLAINISH = st.builds(
    lambda scheme, labels, rest: f"{scheme}://{'.'.join(labels)}{rest}",
    st.sampled_from(["http", "https", "HTTP", "hTtPs", "ftp"]),
    st.lists(_LABEL, min_size=1, max_size=4),
    st.one_of(
        st.just(""),
        st.builds(lambda c, t: c + t, st.sampled_from("/?#:@."), _PRINTABLE),
        st.builds(lambda p, t: f":{p}{t}", st.integers(0, 99999), _PRINTABLE),
    ),
)


@given(st.one_of(_PLAINISH, st.text(max_size=80)))
def test_the_fast_path_accepts_nothing_the_full_checks_refuse(text: str) -> None:
    fast, full = check_url(text, 3), check_url_fully(text, 3)
    if isinstance(fast, ListedUrl) and fast.parsed is None:  # the fast path took it
        assert isinstance(full, ListedUrl), (text, full)
        assert (fast.url, fast.host) == (full.url, full.host)
        assert httpx.URL(fast.url).host == fast.host
    else:
        assert fast == full and type(fast) is type(full)


def test_plain_urls_take_the_fast_path_and_others_the_full_checks() -> None:
    for text in (
        "http://a.example/1.jpg",
        "HTTPS://Img.Example.COM/a/b.png?x=1&y=%20#frag",
        "http://localhost",
        "http://a-b.c0/x",
        "http://localhost:8080/a.jpg",
    ):
        entry = check_url(text, 1)
        assert isinstance(entry, ListedUrl) and entry.parsed is None, text
    for text in (
        "http://127.0.0.1/a.jpg",  # digits and dots: httpx checks it as IPv4
        "http://xn--fiqs8s.example/a.jpg",  # IDNA: httpx decodes the host
        "http://user:pw@a.example/a.jpg",
        "http://a.example:65535/a.jpg",  # past the fast path's ports, not past httpx's
        "http://[::1]/a.jpg",
        "http://a_b.example/a.jpg",
        "http://例え.jp/a.jpg",
    ):
        entry = check_url(text, 1)
        assert isinstance(entry, ListedUrl) and entry.parsed is not None, text
        assert entry.host == entry.parsed.host
    for text in ("http://a.example:0/a.jpg", "http://a.example:65536/a.jpg"):
        assert check_url(text, 1) == check_url_fully(text, 1)
        assert isinstance(check_url(text, 1), InvalidLine), text


def _split_lines_one_by_one(chunks: list[bytes], max_line_bytes: int) -> list[tuple[int, object]]:
    """split_lines as it was, a line at a time: the oracle of `split_blocks`."""
    out: list[tuple[int, object]] = []
    number, pending, overlong = 0, bytearray(), None
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if overlong is None:
                pending += piece
                if len(pending) > max_line_bytes:
                    overlong = OverlongLine(bytes(pending[:EXCERPT_CHARS]))
                    pending.clear()
            if end < 0:
                break
            number += 1
            out.append((number, overlong if overlong is not None else bytes(pending)))
            pending.clear()
            overlong = None
            start = end + 1
    if pending or overlong is not None:
        out.append((number + 1, overlong if overlong is not None else bytes(pending)))
    return out


# Lines of a list as they come: plain URLs with blanks about them, URLs the
# fast path must leave to the full checks, comments, junk and long lines.
_RAW_LINES = st.lists(
    st.one_of(
        st.sampled_from([
            b"http://a.example/1.jpg", b"  HTTPS://B.Example:80/x.png?q=1#frag \r", b"\tHttp://c.example\x0b",
            b"http://xn--fiqs8s.example/a.jpg", b"http://127.0.0.1/a.jpg", b"\xef\xbb\xbfhttp://a.example/b",
            b"# http://a.example/c", b"", b"\r", b"http://a.example/\xc3\xa4.jpg", b"http://a.example/\xff",
            b"http://a.example/" + b"x" * 40, b"\x1chttp://a.example/y\x1f", b"http://a.example:0/z",
        ]),
        st.binary(max_size=30),
    ).map(lambda line: line.replace(b"\n", b"")),
    max_size=25,
)  # fmt: skip


@given(_RAW_LINES, st.integers(1, 60), st.sampled_from([16, 48, MAX_LINE_BYTES]))
def test_lines_and_entries_are_those_of_a_line_at_a_time(
    lines: list[bytes], chunk: int, longest: int
) -> None:
    text = b"\n".join(lines)
    chunks = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    reference = _split_lines_one_by_one(list(as_utf8(chunks)), longest)
    assert list(split_lines(as_utf8(chunks), max_line_bytes=longest)) == reference
    if longest == MAX_LINE_BYTES:
        expected = [e for n, raw in reference if (e := parse_line(raw, n)) is not None]  # type: ignore[arg-type]
        got = list(parse_chunks(chunks))
        assert got == expected
        assert [(type(e), getattr(e, "host", None), getattr(e, "parsed", None)) for e in got] == [
            (type(e), getattr(e, "host", None), getattr(e, "parsed", None)) for e in expected
        ]
        for e in got:
            if isinstance(e, ListedUrl) and e.base is not None:
                assert e.base == base_name(e.url)


# Paths made mostly of what decides whether a last segment is a name as it
# stands: its own characters, and what ends or splits a path.
_PATHS = st.text(st.sampled_from("aZ09_-.") | st.sampled_from("/?#%:@!~"), max_size=60)


@given(
    st.builds(lambda lead, rest: lead + rest, st.sampled_from("/?#"), _PATHS),
    st.integers(0, 300),
    st.sampled_from(["", " ", "\t", " \r"]),
)
@example("/a.jpg?x=/b.png", 0, "")
@example("/a/b.jpg#c/d.png", 0, "")
@example("?x=/b.png", 0, "")
@example("/" + "x" * 236 + ".jpg", 0, "")
@example("/" + "x" * 237 + ".jpg", 0, "")
def test_the_parser_finds_a_plain_base_name_as_base_name_does(
    path: str, pad: int, blank: str
) -> None:
    head, _, tail = path.rpartition("/")
    path = f"{head}/{'y' * pad}{tail}" if pad and "/" in path else path
    (entry,) = entries(f"{blank}https://a.example{path}{blank}\n".encode())
    assert isinstance(entry, ListedUrl) and entry.parsed is None
    # Found exactly where `base_name`'s own fast path would find it, and equal.
    assert (entry.base is not None) == (_PLAIN_SEGMENT.fullmatch(entry.url) is not None)
    assert entry.base is None or entry.base == base_name(entry.url)


def test_lines_built_to_make_the_matcher_backtrack_do_not_hang_the_reader() -> None:
    # Long hosts that end in what the fast path refuses: a byte that is not
    # UTF-8 (refused on the line's bytes), or a letter that is not ASCII
    # (then refused again on its text, by `check_url`, before the full
    # checks). A pattern that can split a host two ways backtracks over every
    # split: seconds a line at 8 KiB, minutes for these; they take a few
    # milliseconds. Not a timing: the bound only makes a regression fail
    # rather than hang the suite.
    hosts = [b"a" * 8100, b"a." * 4050, b"1-" * 4050 + b"a"]
    lines = [b"http://" + host + end for host in hosts for end in (b"\x80", "é".encode())] * 4
    done: list[list[ListedUrl | InvalidLine]] = []
    reader = threading.Thread(target=lambda: done.append(entries(b"\n".join(lines), 8192)))
    reader.daemon = True
    reader.start()
    reader.join(HANG_S)
    assert done, f"{len(lines)} lines took more than {HANG_S} s"
    assert [getattr(e, "reason", None) for e in done[0]] == ["not_utf8", "malformed_url"] * 12


@pytest.mark.parametrize(
    ("host", "carried"),
    [
        ("a" * 63 + ".example", True),
        ("a" * 64 + ".example", False),
        ("a..b", False),
        (".a.example", False),
        ("a.example.", True),
        (".".join(["a" * 63] * 4), False),  # 255 characters
        (".".join(["a" * 62] * 4), True),  # 251
        ("[::1]", True),
    ],
)
def test_a_host_that_dns_cannot_carry_is_a_bad_host(host: str, carried: bool) -> None:
    url = f"http://{host}/x.jpg"
    got = entries(url.encode() + b"\n")
    assert len(got) == 1
    for entry in (got[0], check_url(url, 1), check_url_fully(url, 1)):
        if carried:
            assert isinstance(entry, ListedUrl), entry
        else:
            assert isinstance(entry, InvalidLine) and entry.reason == "bad_host", entry
    assert dns_can_carry(host.strip("[]")) is carried


@pytest.mark.parametrize(
    ("host", "readable"),
    [
        ("xn--zz.example", False),  # not valid punycode: httpx's .host raised IDNAError
        ("XN--ZZ.example", False),
        ("xn--", False),
        ("xn--a.example", False),
        ("xn--nxasmq6b.com", True),
    ],
)
def test_a_host_httpx_cannot_spell_is_a_bad_host(host: str, readable: bool) -> None:
    # Once a ListedUrl, its host is read everywhere: the IDNAError ended the job.
    url = f"http://{host}/x.jpg"
    for entry in (*entries(url.encode() + b"\n"), check_url(url, 1), check_url_fully(url, 1)):
        if readable:
            assert isinstance(entry, ListedUrl) and entry.host == "βόλοσ.com", entry
        else:
            assert isinstance(entry, InvalidLine) and entry.reason == "bad_host", entry
