"""What a job remembers of its list: each name given out, and to which URL.

One structure answers both questions a job asks of a URL, "is it a
duplicate?" and "what is its name?": the names given out so far, each with
a fingerprint of the URL it went to. A URL wants its base name, else that
name with a hash of the URL (`a-3f9c2d1e.jpg`), else a wider hash: so a URL
seen before holds one of those three (or, when all three are other URLs',
a mark of its own), and a URL holds one of them only if it was seen before.
It is a duplicate exactly when one of them is given to it, and its base name
not given out at all (nearly every URL of a real list) means at once that it
is new, with one look-up.

Exact, and in bounded memory whatever the list's length:

- Up to `MEMORY_URLS` distinct URLs, the names are kept in memory as a dict
  of 60-bit fingerprints (`naming.key`), name to URL: ~110 bytes a URL.
- Past that, they move to a `namestore.NameStore`: a filter of fixed size
  in memory that settles nearly every new name at once, and the pairs
  themselves in a scratch file in the job folder, read only for a name the
  filter may know (its notes say how, and what each costs). The file is
  removed when the job ends, and a resumed job starts a new one, since it
  reads its list again from the start.

A URL is taken for a duplicate only if another URL of the list shares both
its fingerprint and one of its names' (fingerprints are 60 bits: far rarer
than 4e-7 for a million URLs). The fingerprints are this process's
(`naming.key`): such a clash is not repeated by the next run.

Names are given in list order, exactly as `naming.NameRegistry.assign` gives
them one URL after another to the URLs that `naming.FingerprintSet` finds
new: the first URL that wants a name gets it. A batch is settled in that
same order, so that names never depend on where batches begin or where the
list moved to disk: a resumed job finds the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..naming import base_name, hashed_name, key, keys, wide_name
from .namestore import NameStore

# Distinct URLs kept in memory before the list moves to disk: ~28 MB.
# A list below it (nearly every list) never touches the disk.
MEMORY_URLS = 250_000

# Before a URL, the key that marks it as seen when none of its names can.
_SEEN_MARK = "\0seen\0"
# What a name is given to: the URL's fingerprint, or None when it is free.
Owner = Callable[[int], "int | None"]


def settle(
    url: str,
    url_fp: int,
    base: str,
    base_fp: int,
    *,
    owner: Owner,
    give: Callable[[int, int], None],
) -> str | None:
    """The name `url` gets: its base name if free, else its hashed name, else
    its wide one; None when one of them is its own (a duplicate)."""
    held = owner(base_fp)
    if held is None:  # nearly every URL: new, and its base is free
        give(base_fp, url_fp)
        return base
    if held == url_fp:
        return None
    name = base
    for named in (hashed_name, wide_name):
        name = named(base, url)
        fp = key(name)
        held = owner(fp)
        if held is None:
            give(fp, url_fp)
            return name
        if held == url_fp:
            return None
    # Its wide name is another URL's too: a URL whose plain name spells it
    # (or a clash of 128-bit hashes). It is given all the same, as one URL
    # after another gives it; what marks this URL as seen is then a key of
    # its own, which no name can be (a name holds no NUL).
    mark = key(_SEEN_MARK + url)
    if owner(mark) == url_fp:
        return None
    give(mark, url_fp)
    return name


class Dedupe:
    """Each name given out, and to which URL (see the module's notes).

    `spill_dir_fd`: the job folder, where the state moves past `memory_urls`;
    None keeps everything in memory. `store` makes the state on disk, in that
    folder.
    """

    def __init__(
        self,
        *,
        spill_dir_fd: int | None = None,
        memory_urls: int = MEMORY_URLS,
        store: Callable[[int], NameStore] = NameStore,
    ) -> None:
        # Name fingerprint -> the fingerprint of the URL it went to.
        self._given: dict[int, int] = {}
        self._spill_dir_fd = spill_dir_fd
        self._memory_urls = memory_urls
        self._make_store = store
        self._store: NameStore | None = None

    def classify(
        self, urls: Sequence[str], bases: Sequence[str | None] | None = None
    ) -> list[str | None]:
        """For each URL, in order: the name it gets, or None when it is a
        duplicate of an earlier one in the list. Blocking: call from a thread.

        `bases`: each URL's `base_name` where the caller has it already (the
        list parser's fast path finds most), None where it has not."""
        bases = _base_names(urls, bases)
        if self._store is not None:
            return self._classify_stored(urls, bases, self._store)
        given = self._given
        owner, give = given.get, given.__setitem__
        names: list[str | None] = list(bases)
        for at, (base_fp, url_fp) in enumerate(zip(keys(bases), keys(urls), strict=True)):
            # `settle`'s first step, inline: nearly every URL ends here, and
            # the call it saves is ~0.3 µs of the ~4 a line costs.
            if base_fp not in given:
                given[base_fp] = url_fp
                continue
            names[at] = settle(urls[at], url_fp, bases[at], base_fp, owner=owner, give=give)
        if self._spill_dir_fd is not None and len(given) > self._memory_urls:
            self._store = store = self._make_store(self._spill_dir_fd)
            for pair in given.items():
                store.give(*pair)
            self._given = {}
        return names

    def close(self) -> None:
        """Remove the disk state, if there is one."""
        store, self._store = self._store, None
        if store is not None:
            store.close()

    @staticmethod
    def _classify_stored(
        urls: Sequence[str], bases: list[str], store: NameStore
    ) -> list[str | None]:
        base_fps, url_fps = keys(bases), keys(urls)
        names: list[str | None] = list(bases)
        at, end = 0, len(urls)
        # Runs of URLs whose base name the store's filter has not got (nearly
        # every one) are given their base names in one call; each other URL
        # is settled alone, in its place in the list's order.
        while (at := store.give_while_free(base_fps, url_fps, at)) < end:
            names[at] = settle(
                urls[at], url_fps[at], bases[at], base_fps[at], owner=store.owner, give=store.give
            )
            at += 1
        return names


def _base_names(urls: Sequence[str], known: Sequence[str | None] | None) -> list[str]:
    if known is None:
        return [base_name(url) for url in urls]
    return [base_name(url) if base is None else base for url, base in zip(urls, known, strict=True)]
