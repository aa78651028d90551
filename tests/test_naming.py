from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from imgdl_watch.naming import (
    JOB_NAME_ROOM,
    MAX_NAME_BYTES,
    NameRegistry,
    base_name,
    extension_for,
    job_stem,
    safe_name,
)


def assert_safe(name: str) -> None:
    assert name
    assert name not in (".", "..")
    assert not name.startswith(".")
    assert "/" not in name and "\\" not in name and "\0" not in name
    assert all(ord(c) >= 32 and c != "\x7f" for c in name)
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
def test_safe_name_is_always_safe(raw: str) -> None:
    assert_safe(safe_name(raw))


@given(st.text(max_size=300), st.text(max_size=40))
def test_any_url_path_gives_a_safe_name_inside_the_folder(path: str, query: str) -> None:
    from urllib.parse import quote

    url = "http://x.example/" + quote(path, safe="/%") + "?" + quote(query)
    registry = NameRegistry()
    assert_safe(registry.assign(url))
    assert_safe(registry.assign(url + "&again"))
