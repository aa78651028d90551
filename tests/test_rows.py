"""Structured lists (csv, tsv, jsonl; gz, zst) read from real files, hostile rows
included, and the failures' list read back as it was written."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgdl_watch.job import listformat
from imgdl_watch.job.listformat import FailedList, ListFormat, ListUnreadable, read_entries
from imgdl_watch.job.listparse import InvalidLine, ListedUrl
from imgdl_watch.job.rows import MAX_ROW_BYTES, MAX_ROW_LINES, Header, ListError, Row

zstandard = pytest.importorskip("zstandard", reason="the zstd extra is not installed")


def _write(path: Path, data: bytes) -> Path:
    fmt = ListFormat.of(path.name)
    if fmt.compression == "gz":
        data = gzip.compress(data)
    elif fmt.compression == "zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def _entries(path: Path, url_column: str | None = None) -> list[ListedUrl | InvalidLine]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(read_entries(fd, ListFormat.of(path.name), url_column=url_column))
    finally:
        os.close(fd)


def _summary(entries: list[ListedUrl | InvalidLine]) -> list[tuple[int, str, object]]:
    out: list[tuple[int, str, object]] = []
    for e in entries:
        if isinstance(e, InvalidLine):
            out.append((e.line, "invalid", e.reason))
        else:
            out.append((e.line, e.url, e.row.columns() if e.row is not None else None))
    return out


CSV = (
    b"id,url,caption\r\n"
    b"1,http://a.example/1.jpg,a cat\r\n"
    b'2,http://a.example/2.jpg,"two\nlines, and ""quotes"""\r\n'
    b"\r\n"
    b"3, http://a.example/3.jpg ,\r\n"
)


@pytest.mark.parametrize("name", ["l.csv", "l.csv.gz", "l.csv.zst", "L.CSV.GZ"])
def test_a_csv_list_carries_its_other_columns(tmp_path: Path, name: str) -> None:
    entries = _entries(_write(tmp_path / name, CSV))
    assert _summary(entries) == [
        (2, "http://a.example/1.jpg", {"id": "1", "caption": "a cat"}),
        (3, "http://a.example/2.jpg", {"id": "2", "caption": 'two\nlines, and "quotes"'}),
        (6, "http://a.example/3.jpg", {"id": "3", "caption": ""}),
    ]


def test_a_tsv_list_and_its_url_column_by_name(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbfImage_URL\tlicence\nhttp://a.example/x.png\tCC-BY\n"
    entries = _entries(_write(tmp_path / "l.tsv.gz", data))
    assert _summary(entries) == [(2, "http://a.example/x.png", {"licence": "CC-BY"})]
    # --url-column names another column, exactly.
    data = b"link,url\nhttp://a.example/y.png,not a url\n"
    entries = _entries(_write(tmp_path / "m.csv", data), url_column="link")
    assert _summary(entries) == [(2, "http://a.example/y.png", {"url": "not a url"})]


def test_a_csv_list_without_a_url_column_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ListError, match="names no url or image_url column"):
        _entries(_write(tmp_path / "l.csv", b"link,caption\nhttp://a.example/1.jpg,x\n"))
    with pytest.raises(ListError, match="no 'src' column"):
        _entries(_write(tmp_path / "m.csv", b"url\nhttp://a.example/1.jpg\n"), url_column="src")
    with pytest.raises(ListError, match=r"names the column 'a' twice"):
        _entries(_write(tmp_path / "n.csv", b"url,a,a\nhttp://a.example/1.jpg,1,2\n"))


def test_hostile_rows_cost_only_themselves(tmp_path: Path) -> None:
    good = [f"{n},http://a.example/{n}.jpg,ok {n}\n".encode() for n in range(8)]
    data = b"".join(
        [
            b"n,url,caption\n",  # line 1
            good[0],  # 2
            b"1,http://a.example/big.jpg," + b"x" * (10 * 1024 * 1024) + b"\n",  # 3: a 10 MB field
            good[1],  # 4
            b'2,http://a.example/open.jpg,"never closed\n',  # 5: an unterminated quote
            good[2],  # 6 .. read again after line 5 is given up
            good[3],  # 7
            b"3,http://a.example/n\x00ul.jpg,a\n",  # 8: NUL in the URL
            b"4,http://a.example/nul.jpg,a\x00b\n",  # 9: NUL in a caption: carried
            b"\xff\xfe\x00binary\x9c junk,\x01\x02\n",  # 10: binary junk
            good[4],  # 11
            b"5,http://a.example/few.jpg\n",  # 12: a field short
            good[5],  # 13
            b'6,http://a.example/q.jpg,"a"b\n',  # 14: a stray quote
            good[6],  # 15
            b'7,http://a.example/long.jpg,"'
            + b"line\n" * (MAX_ROW_LINES + 5),  # 16: too many lines
            good[7],  # 16 + MAX_ROW_LINES + 5 + 1
        ]
    )
    entries = _entries(_write(tmp_path / "hostile.csv.gz", data))
    got = _summary(entries)
    last = 16 + MAX_ROW_LINES + 5
    # Every good row is there, with its own line number, whatever came before it.
    found = {url: line for line, url, _ in got if url != "invalid"}
    good_lines = [2, 4, 6, 7, 11, 13, 15, last]
    assert {u: found.get(u) for u in (f"http://a.example/{n}.jpg" for n in range(8))} == {
        f"http://a.example/{n}.jpg": line for n, line in enumerate(good_lines)
    }
    assert (9, "http://a.example/nul.jpg", {"n": "4", "caption": "a\x00b"}) in got
    invalid = {line: reason for line, what, reason in got if what == "invalid"}
    assert invalid[3] == "row_too_long"  # the 10 MB field, never held whole
    assert invalid[5] == "bad_row"  # the unterminated quote, which swallowed 6 to 10
    assert invalid[8] == "bad_characters"
    assert invalid[10] == "not_utf8"
    assert invalid[12] == "bad_row"
    assert invalid[14] == "bad_row"
    assert invalid[16] == "row_too_long"
    # The lines a too long row swallowed are read again, each on its own (as
    # rows of one field, they are bad rows), and nothing else is invalid.
    assert set(invalid) == {3, 5, 8, 10, 12, 14, *range(16, last)}
    assert len(got) == len(good_lines) + 1 + len(invalid)


def test_a_row_may_be_as_large_as_the_bound(tmp_path: Path) -> None:
    caption = "c" * (MAX_ROW_BYTES - 200)
    data = f"url,caption\nhttp://a.example/1.jpg,{caption}\n".encode()
    entries = _entries(_write(tmp_path / "l.csv", data))
    assert _summary(entries) == [(2, "http://a.example/1.jpg", {"caption": caption})]


def test_jsonl_lists_and_their_bad_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"url": "http://a.example/1.jpg", "caption": "é", "tags": ["a", 1.5]}),
        json.dumps({"URL": "http://a.example/2.jpg"}),
        "",
        '["not", "an object"]',
        '{"url": "http://a.example/3.jpg", "n": NaN}',
        '{"url": "http://a.example/4.jpg", "n": 1e999}',
        '{"url": "http://a.example/5.jpg", "s": "\\ud800"}',
        '{"caption": "no url"}',
        '{"url": 5}',
        "[" * 100_000,
        '{"url": "http://a.example/6.jpg"',
        '{"url": "ftp://a.example/7.jpg"}',
        json.dumps({"image_url": "http://a.example/8.jpg", "id": 8}),
    ]
    entries = _entries(_write(tmp_path / "l.jsonl.zst", "\n".join(lines).encode()))
    assert _summary(entries) == [
        (1, "http://a.example/1.jpg", {"caption": "é", "tags": ["a", 1.5]}),
        (2, "http://a.example/2.jpg", {}),
        (4, "invalid", "bad_row"),
        (5, "invalid", "bad_row"),
        (6, "invalid", "bad_row"),
        (7, "invalid", "bad_row"),
        (8, "invalid", "no_url"),
        (9, "invalid", "no_url"),
        (10, "invalid", "row_too_long"),
        (11, "invalid", "bad_row"),
        (12, "invalid", "unsupported_scheme"),
        (13, "http://a.example/8.jpg", {"id": 8}),
    ]


def test_a_corrupt_or_cut_compressed_list_is_unreadable(tmp_path: Path) -> None:
    whole = gzip.compress(CSV * 100)
    (tmp_path / "cut.csv.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ListUnreadable):
        _entries(tmp_path / "cut.csv.gz")
    (tmp_path / "junk.csv.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"junk" * 100)
    with pytest.raises(ListUnreadable):
        _entries(tmp_path / "junk.csv.zst")


def test_a_zst_list_without_the_library_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "l.csv.zst", CSV)
    monkeypatch.setattr(listformat, "_zstandard", lambda: None)
    with pytest.raises(ListUnreadable, match=r"pip install 'imgdl-watch\[zstd\]'"):
        _entries(path)


# -- what the failures' list writes, the parser reads back -------------------

# Any text a cell can hold: anything but a lone surrogate (not UTF-8); NUL,
# quotes, delimiters and line ends included.
_cell = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**18), 10**18)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _cell,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_cell, inner, max_size=4),
    max_leaves=10,
)
_URLS = st.sampled_from(["http://a.example/1.jpg", "https://b.example/x/y.png?q=1"])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(["f.csv", "f.tsv", "f.csv.gz", "f.tsv.zst"]),
    extra=st.lists(_cell.filter(lambda c: c.strip() and c.strip() == c), max_size=3, unique=True),
    rows=st.lists(st.tuples(_URLS, st.lists(_cell, min_size=3, max_size=3)), min_size=1),
    line_end=st.sampled_from(["\n", "\r\n"]),
)
def test_any_row_the_writer_emits_reads_back_identically(
    tmp_path: Path, name: str, extra: list[str], rows: list[tuple[str, list[str]]], line_end: str
) -> None:
    names = ("url", *[e for e in extra if e.lower() not in ("url", "image_url")])
    header = Header(names, 0, line_end)
    written = [Row(header, (url, *cells[: len(names) - 1])) for url, cells in rows]
    path = tmp_path / name
    failed = FailedList(str(path), ListFormat.of(name), buffering=4096)
    for row in written:
        failed.add(row.cells[0], row)
    failed.close()
    read = [e for e in _entries(path) if isinstance(e, ListedUrl)]
    assert [e.row.cells if e.row else None for e in read] == [r.cells for r in written]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(["f.jsonl", "f.jsonl.gz"]),
    rows=st.lists(
        st.tuples(_URLS, st.dictionaries(_cell.filter(lambda k: k.lower() != "url"), _json)),
        min_size=1,
        max_size=8,
    ),
)
def test_any_jsonl_row_the_writer_emits_reads_back_identically(
    tmp_path: Path, name: str, rows: list[tuple[str, dict[str, object]]]
) -> None:
    written = [Row(None, record={"url": url, **data}, url_key="url") for url, data in rows]
    path = tmp_path / name
    failed = FailedList(str(path), ListFormat.of(name), buffering=4096)
    for row in written:
        failed.add(str(row.record["url"]), row)
    failed.close()
    read = [e for e in _entries(path) if isinstance(e, ListedUrl)]
    assert [e.row.record if e.row else None for e in read] == [r.record for r in written]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
@pytest.mark.parametrize("name", ["f.csv", "f.tsv"])
def test_the_failed_list_ends_its_lines_as_the_list_did(
    tmp_path: Path, name: str, ending: bytes
) -> None:
    # A csv's failed rows came back with CRLF line ends (the csv module's
    # default) whatever the list had.
    sep = b"," if name.endswith(".csv") else b"\t"
    rows = [b"url" + sep + b"caption", b"http://a.example/1.jpg" + sep + b"one"]
    listed = _write(tmp_path / name, b"".join(r + ending for r in rows))
    (entry,) = [e for e in _entries(listed) if isinstance(e, ListedUrl)]
    failed_path = tmp_path / f"failed-{name}"
    failed = FailedList(str(failed_path), ListFormat.of(name), buffering=4096)
    failed.add(entry.url, entry.row)
    failed.close()
    assert failed_path.read_bytes() == b"".join(r + ending for r in rows)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("pw.csv", b'url,caption\n"http://hank:pw4hank@h.example/1.jpg,x\n'),
        ("pw.jsonl", b'{"url": "http://ivan:pw4ivan@h.example/1.jpg", bad\n'),
        ("pw.csv", b"url,caption\nhttp://hank:pw4hank@h.example/1.jpg," + b"c" * 70_000 + b"\n"),
        # A quoted cell whose password holds a comma, in a row one field short.
        ("pw.csv", b'url,caption,id\n"http://hank:pw4,hank@h.example/1.jpg",x\n'),
        # jsonl as PHP writes it (each / as \/), with no url key.
        ("pw.jsonl", b'{"link": "http:\\/\\/ivan:pw4ivan@h\\/a.jpg"}\n'),
    ],
)
def test_a_bad_row_does_not_echo_its_password(tmp_path: Path, name: str, data: bytes) -> None:
    invalid = [e for e in _entries(_write(tmp_path / name, data)) if isinstance(e, InvalidLine)]
    assert invalid, "the row should be invalid"
    for entry in invalid:
        assert "pw4" not in entry.excerpt and ":***@" in entry.excerpt, entry


def test_a_row_with_an_empty_url_cell_has_no_url(tmp_path: Path) -> None:
    data = (
        b"id,url,caption\n1,,\n2, ,x\n3,http://a.example/3.jpg,c\n"  # a row of commas, a blank cell
    )
    got = _summary(_entries(_write(tmp_path / "empty.csv", data)))
    assert got[:2] == [(2, "invalid", "no_url"), (3, "invalid", "no_url")]
    assert got[2][:2] == (4, "http://a.example/3.jpg")
