"""The inbox: which files are lists, when they are whole, and where they go.

    watcher    watchfiles tells *that* something changed (never trusted for what)
    intake     scan, settle, claim, resume and hold back: when a list is taken
    settle     when a dropped list is complete (pure)
    lifecycle  the inbox and its categories: scan, and a list's way through them
    layout     the folders, and which names are lists (pure)
    claims     claim: into processing/ under the stem's lock; leftovers resumed
    publish    finish and fail: to done/ and failed/, under names never taken
    locks      the flocks that daemons sharing an inbox take

Nothing is re-exported here, so that the `status` command, which reads the
inbox, does not import the watcher and its Rust library.
"""
