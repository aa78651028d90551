"""What a job remembers of its list: each URL seen, and each name given out."""

from __future__ import annotations

from ..naming import FingerprintSet, NameRegistry


class Dedupe:
    """Each URL seen, and each name given out, both as fingerprints.

    (`FingerprintSet`), so that a list of a million URLs costs ~160 bytes per
    URL (measured by `make bench`), not the URLs themselves. In the unlikely
    case of two distinct URLs sharing a fingerprint (~4e-7 for a million),
    the second is reported as a duplicate.
    """

    __slots__ = ("_names", "_seen")

    def __init__(self) -> None:
        self._seen = FingerprintSet()
        self._names = NameRegistry()

    def first_time(self, url: str) -> bool:
        """True the first time `url` is offered, False for a duplicate."""
        return self._seen.add(url)

    def name_for(self, url: str) -> str:
        return self._names.assign(url)
