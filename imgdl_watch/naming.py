"""File and job names from untrusted input: pure logic, no I/O.

A name must be safe on its own (no separators, no control characters, no
leading dot, at most 255 bytes) and deterministic: the same list always gives
the same names, whatever order the downloads finish in, so that a restart or
a re-dropped list finds the images it already has.

Distinct URLs that want the same name are told apart in list order: the first
URL that wants a name gets it, and each later one gets a short hash of its
own URL added to the stem (`a.jpg`, `a-3f9c2d1e.jpg`).

One name is known only once its response is: an extension-less name gets
its extension from the Content-Type (`final_name`), and may then be a name
another URL of the list was given (`pic` served as a PNG, beside `pic.png`).
The first of them to be published keeps it, and the other takes its
`wide_name` (`download.filesink.FileSink.rename`), where a resumed job looks
for it: the one name that depends on the order downloads finish in.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import unquote

# The longest file name most Linux filesystems accept, in bytes.
MAX_NAME_BYTES = 255
# Room kept free in an extension-less name for the extension that the
# Content-Type adds later (".jpeg" and ".tiff" are the longest we add).
EXTENSION_ROOM = 6
# An extension longer than this is part of the stem, not a type ("a.backup-2024").
MAX_EXTENSION_CHARS = 8
# Hex digits of the URL hash that tells colliding names apart: 32 bits, so a
# clash between two colliding URLs of one list is a one-in-four-billion event.
HASH_CHARS = 8
# Bytes a job's stem leaves free for the longest name the inbox builds from
# it: a number that keeps it unique in done/, and its report beside it
# ("cats.99999.report.jsonl"). The hidden part files (".cats.report.part")
# need less.
JOB_NAME_ROOM = len(".99999.report.jsonl")
# The suffix of a stem's lock file in an inbox's state folder (`inbox.locks`),
# which no category's name may end in: a category's locks are a folder of its name there.
LOCK_SUFFIX = ".lock"
# What a list's name ends with: its format, then optionally its compression
# (`cats.csv.gz`). Longest first, so that `.csv.gz` is found before `.gz`
# could be taken for anything.
LIST_FORMATS = (".txt", ".csv", ".tsv", ".jsonl")
LIST_COMPRESSIONS = (".gz", ".zst")
LIST_SUFFIXES = tuple(
    sorted(
        (fmt + comp for fmt in LIST_FORMATS for comp in ("", *LIST_COMPRESSIONS)),
        key=len,
        reverse=True,
    )
)
# The name used when nothing usable is left of the URL's last segment.
FALLBACK_NAME = "image"
FALLBACK_JOB = "list"

_IMAGE_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/pjpeg": ".jpg",
    "image/png": ".png",
    "image/apng": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/avif": ".avif",
    "image/heic": ".heic",
    "image/heif": ".heif",
    "image/bmp": ".bmp",
    "image/x-ms-bmp": ".bmp",
    "image/tiff": ".tiff",
    "image/x-icon": ".ico",
    "image/vnd.microsoft.icon": ".ico",
    "image/svg+xml": ".svg",
    "image/jxl": ".jxl",
}

# Every extension that `extension_for` may add, so that a caller can look for
# an extension-less name under each of them.
ADDED_EXTENSIONS = tuple(sorted(set(_IMAGE_EXTENSIONS.values())))

# Extensions of a server's pages and scripts, in lower case: they say how the
# server made its answer, not what the answer is. A name that ends in one is
# treated as a name with no extension, and gets the image's: the JPEG that
# `thumb.php?id=3` answers is saved as `thumb.php.jpg`, which a viewer opens.
PAGE_EXTENSIONS = frozenset(
    {
        *(".php", ".php3", ".php4", ".php5", ".phtml"),
        *(".asp", ".aspx", ".ashx", ".axd", ".asmx"),
        *(".jsp", ".jspx", ".do", ".action"),
        *(".cgi", ".fcgi", ".pl", ".py", ".rb", ".cfm"),
        *(".html", ".htm", ".shtml", ".xhtml"),
    }
)


def _is_unsafe_char(char: str) -> bool:
    # Cc: control characters, NUL included. Cf: invisible format characters
    # such as right-to-left overrides, which make a name lie about itself.
    # Zl, Zp: the line and paragraph separators, which break a name in two
    # for whatever reads names line by line.
    return char in "/\\" or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp")


def _truncate_utf8(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def split_extension(name: str) -> tuple[str, str]:
    """`("photo", ".jpg")` from `"photo.jpg"`; no extension gives `(name, "")`."""
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    ext = name[dot:]
    if len(ext) - 1 > MAX_EXTENSION_CHARS or not ext[1:].isalnum():
        return name, ""
    return name[:dot], ext


def safe_name(raw: str, *, fallback: str = FALLBACK_NAME, reserve: int = 0) -> str:
    """A name that is safe as one entry of a folder.

    `reserve` bytes are kept free below `MAX_NAME_BYTES` for a suffix the
    caller adds later.
    """
    if raw.isascii() and raw.isprintable() and "/" not in raw and "\\" not in raw:
        # Nearly every name: printable ASCII has no control, format or
        # surrogate character, so the loop below would change nothing.
        cleaned = raw.strip()
    else:
        cleaned = "".join("_" if _is_unsafe_char(c) else c for c in raw).strip()
    cleaned = cleaned.lstrip(".")
    if not cleaned:
        cleaned = fallback
    stem, ext = split_extension(cleaned)
    budget = MAX_NAME_BYTES - reserve - len(ext.encode("utf-8"))
    if not ext or ext.lower() in PAGE_EXTENSIONS:
        budget -= EXTENSION_ROOM
    if not (stem.isascii() and len(stem) <= budget):  # (ASCII: a character is a byte)
        stem = _truncate_utf8(stem, budget)
    stem = stem.rstrip() or fallback
    return stem + ext


def fingerprint(text: str) -> int:
    """A deterministic 60-bit fingerprint: small enough to be a 32-byte int."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()) >> 4


# A fingerprint of 60 bits: a Python int of 32 bytes (61 to 63 bits take 48).
KEY_MASK = (1 << 60) - 1


def key(text: str) -> int:
    """A 60-bit fingerprint that holds for this process only: Python's own
    string hash (SipHash, keyed at random when the process starts), cut to
    60 bits. A tenth of `fingerprint`'s cost (~0.05 µs against ~0.55 µs;
    `timeit` them again), with the same odds of a clash, and the string keeps
    it for any later set it goes in. For what a job remembers while it runs,
    never for what is stored for the next one (`fingerprint`): a clash, as
    rare as `fingerprint`'s, is then not the same from one run to the next.
    """
    return hash(text) & KEY_MASK


def keys(texts: Iterable[str]) -> list[int]:
    """`key` of each of `texts`, with no call a text (~0.1 µs each)."""
    return [hash(text) & KEY_MASK for text in texts]


def _digest64(url: str) -> str:
    return hashlib.blake2b(url.encode("utf-8"), digest_size=8).hexdigest()


def source_tag(url: str) -> bytes:
    """What a file says of the URL it came from (`filesink.SOURCE_XATTR`):
    64 bits of its hash, small enough to sit in the file's inode."""
    return _digest64(url).encode("ascii")


def url_hash(url: str) -> str:
    return _digest64(url)[:HASH_CHARS]


def url_path(url: str) -> str:
    """`urlsplit(url).path` of a URL the list parser accepted (`scheme://...`,
    no whitespace or control characters), by string search: a third of the cost."""
    start = url.find("://") + 3
    # The authority ends at the first of "/", "?" and "#"; only a "/" starts a path.
    cut = len(url)
    for sep in "/?#":
        at = url.find(sep, start, cut)
        if at >= 0:
            cut = at
    if cut == len(url) or url[cut] != "/":
        return ""
    end = len(url)
    for sep in "?#":
        at = url.find(sep, cut, end)
        if at >= 0:
            end = at
    return url[cut:end]


# A last path segment that is a safe name as it stands: letters, digits,
# "_", "-" and dots (not first), short enough to leave `HASH_CHARS + 1` and
# `EXTENSION_ROOM` free. The list parser's fast path (`job.listparse`)
# matches it in the same pass as the URL, so that most names cost no second
# match.
PLAIN_SEGMENT_PATTERN = (
    rf"[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{MAX_NAME_BYTES - HASH_CHARS - 1 - EXTENSION_ROOM - 1}}}"
)
# A URL whose last path segment is such a name: a scheme, an authority, a
# path ending in the segment, then any query or fragment. `safe_name` would
# give that segment back unchanged, so it is taken on one regular expression
# (~0.3 µs against ~1.5 µs for the full way; measure both again with
# `timeit` on a list's URL). `tests/test_naming.py` holds the property that
# both ways give the same name.
_PLAIN_SEGMENT = re.compile(
    rf"[^:/?#]*://[^/?#]*/(?:[^?#]*/)?({PLAIN_SEGMENT_PATTERN})(?:[?#].*)?",
    re.DOTALL,
)


def base_name(url: str) -> str:
    """The safe, percent-decoded last path segment of a URL."""
    plain = _PLAIN_SEGMENT.fullmatch(url)
    if plain is not None:
        return plain[1]
    return base_name_fully(url)


def base_name_fully(url: str) -> str:
    """`base_name` without its fast path."""
    segment = url_path(url).rsplit("/", 1)[-1]
    if "%" in segment:
        segment = unquote(segment, errors="replace")
    return safe_name(segment, reserve=HASH_CHARS + 1)


def hashed_name(name: str, url: str) -> str:
    """`name` told apart from its look-alikes by a short hash of `url`."""
    stem, ext = split_extension(name)
    return f"{stem}-{url_hash(url)}{ext}"


def wide_name(name: str, url: str) -> str:
    """`name` with a 128-bit hash of `url`: when even `hashed_name` clashes."""
    stem, ext = split_extension(name)
    wide = hashlib.blake2b(url.encode("utf-8"), digest_size=16).hexdigest()
    stem = _truncate_utf8(stem, MAX_NAME_BYTES - EXTENSION_ROOM - len(wide) - 1 - len(ext))
    return f"{stem}-{wide}{ext}"


def alias_name(name: str, file: str, url: str) -> str:
    """Where the download of `url`, named `name` and completed as `file`
    (`final_name`), goes when another URL's file took `file`: `name`'s
    `wide_name`, completed the same way, which is where a resumed job looks
    for it (`candidates` of `name`'s `wide_name`)."""
    return wide_name(name, url) + file[len(name) :]


def has_extension(name: str) -> bool:
    """Whether `name` ends in an extension that says what the file is: a
    page's (`PAGE_EXTENSIONS`) does not, so it gets the body's added."""
    ext = split_extension(name)[1]
    return bool(ext) and ext.lower() not in PAGE_EXTENSIONS


def mime_type(content_type: str | None) -> str:
    """A Content-Type's media type, in lower case, without its parameters
    ("" for none)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def extension_for(content_type: str | None) -> str:
    """The extension for an image MIME type, or "" when we do not know it."""
    return _IMAGE_EXTENSIONS.get(mime_type(content_type), "")


def final_name(name: str, content_type: str | None, sniffed: str | None) -> str:
    """The file name of a download named `name`, once its response is known.

    A name with an extension keeps it. One without (or with a page's, such
    as `.php`) gets the extension of its Content-Type when that is an image
    type, else of the type its first bytes show (`sniffed`), else none.
    """
    if has_extension(name):
        return name
    return name + (extension_for(content_type) or extension_for(sniffed))


def candidates(name: str) -> tuple[str, ...]:
    """Every file name that `final_name` may give `name`: where a download of
    it may already be in its folder."""
    if has_extension(name):
        return (name,)
    return (name, *(name + ext for ext in ADDED_EXTENSIONS))


def list_suffix(file_name: str) -> str | None:
    """The list suffix that `file_name` ends with, as spelled there
    (`cats.CSV.gz` → `.CSV.gz`), or None when it is not a list's name."""
    lower = file_name.lower()
    for suffix in LIST_SUFFIXES:
        if lower.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[-len(suffix) :]
    return None


def job_stem(file_name: str) -> str:
    """The job name for a list file: its stem, made safe (`cats.csv.gz` → `cats`).

    A long stem is cut short, so that every name built from it still fits.
    """
    suffix = list_suffix(file_name)
    stem = file_name[: -len(suffix)] if suffix else file_name
    return safe_name(stem, fallback=FALLBACK_JOB, reserve=JOB_NAME_ROOM)


# A failed list says in this attribute the job stem it failed in (`cats`),
# so that one published under a number (failed/cats.1.txt: failed/cats.txt
# was taken) and dropped again runs as that job, into the same folder.
STEM_XATTR = "user.imgdl-watch.stem"


def tagged_stem(file_name: str, tag: bytes | None) -> str:
    """The job stem of the list `file_name` whose attribute `STEM_XATTR` is
    `tag` (None: it has none): the tag's stem when the name is that stem's
    with a number (`cats.1.txt` of `cats`), else the name's (`job_stem`).
    So a tag can only take a number off, never rename a job."""
    stem = job_stem(file_name)
    suffix = list_suffix(file_name)
    if tag is None or suffix is None:
        return stem
    head, dot, number = file_name[: -len(suffix)].rpartition(".")
    if not (dot and number.isascii() and number.isdigit()):
        return stem
    try:
        told = tag.decode("utf-8")
    except UnicodeDecodeError:
        return stem
    return told if job_stem(head + suffix) == told else stem


class FingerprintSet:
    """A set of strings that keeps only their 60-bit fingerprints (`key`: small
    ints, for this process only).

    A million entries cost ~80 MB instead of the strings themselves. Two
    distinct strings share a fingerprint with a probability of about 4e-7
    in a million; the second is then taken for the first.
    """

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: set[int] = set()

    def add(self, text: str) -> bool:
        """Add `text`; True if it was not there yet."""
        fp = key(text)
        if fp in self._keys:
            return False
        self._keys.add(fp)
        return True


class NameRegistry:
    """Hands out one distinct name per URL, deterministically in list order.

    It remembers a fingerprint per name given out, not the name itself, so
    that memory stays small on lists of a million lines. This is the rule
    spelled one URL after another; a job's reader gives the same names a
    batch at a time, in bounded memory (`job.dedupe`, held to this by its
    tests).
    """

    __slots__ = ("_taken",)

    def __init__(self) -> None:
        self._taken = FingerprintSet()

    def _claim(self, name: str) -> bool:
        return self._taken.add(name)

    def assign(self, url: str) -> str:
        name = base_name(url)
        if self._claim(name):
            return name
        hashed = hashed_name(name, url)
        # A second clash means the list holds the same URL twice, which the
        # caller removes first, or a 32-bit hash clash: widen the hash then.
        if not self._claim(hashed):
            hashed = wide_name(name, url)
            self._claim(hashed)
        return hashed
