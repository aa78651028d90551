"""The inbox: which files are lists, when they are whole, and where they go.

    watcher    watchfiles tells *that* something changed (never trusted for what)
    intake     scan, settle, claim, resume and hold back: when a list is taken
    settle     when a dropped list is complete (pure)
    lifecycle  the folders, and a list's way through them: claim, finish, fail
    locks      the flocks that daemons sharing an inbox take

Nothing is re-exported here, so that the `status` command, which reads the
inbox, does not import the watcher and its Rust library.
"""
