from __future__ import annotations

import os
from urllib.parse import urlsplit

from hypothesis import example, given
from hypothesis import strategies as st

from imgdl_watch.naming import (
    EXTENSION_ROOM,
    FALLBACK_NAME,
    JOB_NAME_ROOM,
    MAX_NAME_BYTES,
    NameRegistry,
    _is_unsafe_char,
    base_name,
    base_name_fully,
    candidates,
    extension_for,
    final_name,
    job_stem,
    safe_name,
    split_extension,
    url_path,
)


def assert_safe(name: str) -> None:
    assert name
    assert name not in (".", "..")
    assert not name.startswith(".")
    assert "/" not in name and "\\" not in name and "\0" not in name
    assert all(ord(c) >= 32 and c != "\x7f" for c in name)
    assert "\u2028" not in name and "\u2029" not in name and "\u202e" not in name
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert os.path.basename(os.path.normpath(os.path.join("/job", name))) == name
    assert os.path.dirname(os.path.normpath(os.path.join("/job", name))) == "/job"


def test_names_from_urls() -> None:
    assert base_name("http://x/a/b/cat%20one.jpg?x=1") == "cat one.jpg"
    assert base_name("http://x/") == "image"
    assert base_name("http://x/..%2F..%2Fetc%2Fpasswd") == "_.._etc_passwd"
    assert base_name("http://x/%2e%2e") == "image"
    assert base_name("http://x/.hidden.png") == "hidden.png"
    assert base_name("http://x/a%00b%0a.jpg") == "a_b_.jpg"
    # The line and paragraph separators would break the name in two.
    assert base_name("http://x/p0.png%E2%80%A8x%E2%80%A9.jpg") == "p0.png_x_.jpg"


def test_long_names_keep_their_extension() -> None:
    name = base_name("http://x/" + "é" * 300 + ".jpeg")
    assert name.endswith(".jpeg")
    assert len(name.encode()) <= MAX_NAME_BYTES


def test_look_alikes_get_distinct_deterministic_names() -> None:
    urls = [
        "http://x/a.jpg?size=1",
        "http://x/a.jpg?size=2",
        "http://y/other/a.jpg",
        "http://x/b.jpg",
    ]
    first = [NameRegistry().assign(u) for u in urls[:1]]
    registry = NameRegistry()
    names = [registry.assign(u) for u in urls]
    assert names[0] == "a.jpg" == first[0]
    assert len(set(names)) == 4
    assert all(n.endswith(".jpg") for n in names)
    again = NameRegistry()
    assert [again.assign(u) for u in urls] == names


def test_extension_from_content_type() -> None:
    assert extension_for("image/png; charset=binary") == ".png"
    assert extension_for("image/jpeg") == ".jpg"
    assert extension_for("text/html") == ""
    assert extension_for(None) == ""


def test_a_pages_extension_gets_the_images() -> None:
    # `thumb.php?id=3` answers a JPEG: a viewer should know it is one.
    assert final_name("thumb.php", "image/jpeg", None) == "thumb.php.jpg"
    assert final_name("Thumb.ASPX", None, "image/png") == "Thumb.ASPX.png"
    assert final_name("index.html", "image/gif", None) == "index.html.gif"
    # A file type's extension is kept, whatever the body is; so is a page's
    # when the body's type is not known (--any-type, a text answer).
    assert final_name("photo.jpg", "image/png", None) == "photo.jpg"
    assert final_name("logo.svg", "image/svg+xml", None) == "logo.svg"
    assert final_name("thumb.php", "text/html", None) == "thumb.php"
    # Where a download of it may be: a file saved before page extensions
    # took the image's is found under the name as it was.
    found = candidates("thumb.php")
    assert found[0] == "thumb.php" and "thumb.php.jpg" in found
    assert candidates("photo.jpg") == ("photo.jpg",)


def test_a_long_pages_name_leaves_room_for_the_images_extension() -> None:
    url = "http://x/" + "a" * 400 + ".php?id=1"
    registry = NameRegistry()
    for name in (registry.assign(url), registry.assign(url + "2")):
        assert name.endswith(".php")
        assert len(final_name(name, "image/jpeg", None).encode("utf-8")) <= MAX_NAME_BYTES


def test_job_stems_are_safe() -> None:
    assert job_stem("cats.txt") == "cats"
    assert job_stem("..txt") == "list"
    assert_safe(job_stem("\x1b[31mred.txt"))


@given(st.text(min_size=1, max_size=260))
def test_a_job_stem_leaves_room_for_every_name_built_from_it(raw: str) -> None:
    # Up to 251 bytes before ".txt" is a name the inbox can hold; the inbox
    # then adds a number and ".report.jsonl" to the stem.
    name = os.fsdecode(os.fsencode(raw)[:251]) + ".txt"
    stem = job_stem(name)
    assert_safe(stem)
    assert len(stem.encode("utf-8")) + JOB_NAME_ROOM <= MAX_NAME_BYTES


@given(st.text(max_size=400))
@example("a/b.jpg")
@example("..\\..\\x")
@example("a\u2028b\u2029.jpg")
def test_safe_name_is_always_safe(raw: str) -> None:
    assert_safe(safe_name(raw))


@given(st.text(max_size=300), st.text(max_size=40))
def test_any_url_path_gives_a_safe_name_inside_the_folder(path: str, query: str) -> None:
    from urllib.parse import quote

    url = "http://x.example/" + quote(path, safe="/%") + "?" + quote(query)
    registry = NameRegistry()
    assert_safe(registry.assign(url))
    assert_safe(registry.assign(url + "&again"))


# URLs as the list parser accepts them: a scheme, "://", and no whitespace or
# control characters (it refuses those as bad_characters). Mostly the
# characters that end an authority or a path, so that their orders are tried.
_URL_CHARS = st.characters(
    blacklist_categories=("Cc", "Zs", "Zl", "Zp"), blacklist_characters="\x85\xa0"
)
_URLS = st.builds(
    lambda scheme, rest: f"{scheme}://{rest}",
    st.sampled_from(["http", "https", "HTTP"]),
    st.text(st.sampled_from("ab/?#:@%.") | _URL_CHARS, max_size=40),
)


@given(_URLS)
@example("http://host?q/x.jpg")
@example("http://host#f/x.jpg")
@example("http://host")
@example("http://u:p@host:80/a/b.jpg?x=/y#z")
def test_the_fast_url_path_is_urlsplits(url: str) -> None:
    try:
        expected = urlsplit(url).path
    except ValueError:
        return  # the parser refuses it as malformed_url first
    assert url_path(url) == expected


def _safe_name_by_the_loop(raw: str, reserve: int) -> str:
    """safe_name as it was, character by character: the oracle of its fast path."""
    cleaned = "".join("_" if _is_unsafe_char(c) else c for c in raw).strip().lstrip(".")
    cleaned = cleaned or FALLBACK_NAME
    stem, ext = split_extension(cleaned)
    budget = MAX_NAME_BYTES - reserve - len(ext.encode("utf-8"))
    if not ext:
        budget -= EXTENSION_ROOM
    stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip() or FALLBACK_NAME
    return stem + ext


# Printable ASCII, which takes the fast path unless it holds a separator, and
# mostly the characters that matter to it; then any text at all.
_NAMES = st.text(st.sampled_from("/\\. ab") | st.characters(min_codepoint=32, max_codepoint=126),
                 max_size=300) | st.text(max_size=300)  # fmt: skip


@given(_NAMES, st.sampled_from([0, 9, 20]))
@example("a/b.jpg", 0)
@example("a\\b.jpg", 0)
@example(" ..hidden.png ", 9)
@example("x" * 300 + ".jpg", 9)
def test_the_fast_safe_name_is_the_loops(raw: str, reserve: int) -> None:
    assert safe_name(raw, reserve=reserve) == _safe_name_by_the_loop(raw, reserve)


# A URL's tail made mostly of what the fast path of `base_name` decides on:
# the segment's own characters, and what ends or splits a path.
_TAILS = st.text(st.sampled_from("aZ09_-.") | st.sampled_from("/?#%:@ é"), max_size=60)


@given(_URLS | st.builds(lambda a, b: f"http://{a}/{b}", _TAILS, _TAILS), st.integers(0, 300))
@example("http://h/" + "x" * 240, 0)
@example("http://h/" + "x" * 241, 0)
@example("http://h/" + "x" * 236 + ".jpg", 0)
@example("http://h/" + "x" * 237 + ".jpg", 0)
@example("http://h/a.jpg?x=/b.png", 0)
@example("http://h?x=/b.png", 0)
@example("http://h/.a.jpg", 0)
def test_the_fast_base_name_is_the_full_ways(url: str, pad: int) -> None:
    if "://" not in url:
        return
    head, tail = url.rsplit("/", 1) if url.count("/") > 2 else (url, "")
    long = f"{head}/{'y' * pad}{tail}" if tail else url  # names about the length limit
    for each in (url, long):
        assert base_name(each) == base_name_fully(each)


def test_a_tag_can_take_a_lists_number_off_and_nothing_else() -> None:
    from imgdl_watch.naming import tagged_stem

    assert tagged_stem("cats.1.txt", b"cats") == "cats"
    assert tagged_stem("cats.12.csv.gz", b"cats") == "cats"
    assert tagged_stem("cats.1.txt", None) == "cats.1"
    assert tagged_stem("cats.1.txt", b"dogs") == "cats.1"  # never another job
    assert tagged_stem("cats.txt", b"cat") == "cats"  # no number to take off
    assert tagged_stem("cats.x.txt", b"cats") == "cats.x"
    assert (
        tagged_stem("cats.\u0661.txt", b"cats") == "cats.\u0661"
    )  # an Arabic-Indic one is no number
    assert tagged_stem("cats.1.txt", b"\xff") == "cats.1"
