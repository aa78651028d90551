"""The wire between the fetcher and its download workers (`workers`, `worker`).

One Unix stream socket per worker, made with `socketpair` before the worker
starts, so nothing else can connect to it. A message is a 4-byte length and
a pickle: both ends are this package, in processes the daemon started, so
pickle's trust is the daemon's own. A job folder's descriptor rides along
with the message that names it (SCM_RIGHTS), so the worker writes through
the very folder the job opened, never a path that could be swapped for a
symlink meanwhile.

Sending does not wait: `post` writes at once when the socket takes it, and
only what it does not take waits for `flush`, a task of the caller's. A
message thus leaves in the task that posts it, with no hand-over to a writer
task first (one scheduling round of the event loop less per message, on
each side of every download).

Descriptors arrive with the first byte of their write, so the receiver
queues them as they come, and a message that carries `n` of them takes the
first `n` of the queue.
"""

from __future__ import annotations

import array
import os
import pickle
import socket
import struct
from collections import deque
from collections.abc import Sequence
from typing import Final

import trio

_LENGTH: Final = struct.Struct("!I")
# Bytes asked of the socket at a time. A download's answer is a few hundred
# bytes, so one read takes many at once.
_READ_BYTES: Final = 256 * 1024
# Descriptors one read can bring at most: a write carries those of one
# message only, and a folder message carries one.
_MAX_FDS: Final = 4


class Wire:
    """Whole messages, and the descriptors that come with them, over `sock`."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._buffer = bytearray()
        self._fds: deque[int] = deque()
        # What the socket has not taken yet: (bytes, descriptors to send with them).
        self._unsent: deque[tuple[memoryview, list[int]]] = deque()
        self._more = trio.Event()
        self.closed = False

    def post(self, message: object, fds: Sequence[int] = ()) -> None:
        """Send `message` (and `fds` with it) now, or as soon as `flush` can.

        The descriptors are duplicated here: the caller may close its own
        before the message leaves, and its number may then be reused."""
        if self.closed:
            return
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(_LENGTH.pack(len(data)) + data)
        owned = [os.dup(fd) for fd in fds]
        if not self._unsent:
            try:
                view = view[self._write(view, owned) :]
            except BlockingIOError:
                pass
            except OSError:  # the other end is gone
                self._broken(owned)
                return
            else:
                owned = self._sent(owned)
            if not view:
                return
        self._unsent.append((view, owned))
        self._more.set()

    def _write(self, view: memoryview, fds: Sequence[int]) -> int:
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            return self._sock.sendmsg([view], ancillary)
        return self._sock.send(view)

    @staticmethod
    def _sent(fds: list[int]) -> list[int]:
        """The descriptors went with the first byte: ours are closed."""
        for fd in fds:
            os.close(fd)
        return []

    def _broken(self, fds: list[int]) -> None:
        """The wire cannot send: `receive` ends (None), and nothing else goes."""
        self.closed = True
        self._sent(fds)
        while self._unsent:
            self._sent(list(self._unsent.popleft()[1]))
        trio.lowlevel.notify_closing(self._sock)

    async def flush(self) -> None:
        """Send what `post` could not, for as long as the wire is open."""
        unsent = self._unsent
        while not self.closed:
            if not unsent:
                self._more = trio.Event()
                await self._more.wait()
                continue
            await trio.lowlevel.wait_writable(self._sock)
            view, fds = unsent[0]
            try:
                sent = self._write(view, fds)
            except BlockingIOError:
                continue
            except OSError:  # the other end is gone
                self._broken([])
                return
            rest = self._sent(list(fds))
            if sent == len(view):
                unsent.popleft()
            else:
                unsent[0] = (view[sent:], rest)

    async def receive(self) -> object | None:
        """The next message, or None once the other end has closed."""
        while True:
            buffer = self._buffer
            if len(buffer) >= _LENGTH.size:
                (length,) = _LENGTH.unpack_from(buffer)
                end = _LENGTH.size + length
                if len(buffer) >= end:
                    # Our own processes' messages, on a socketpair (see above).
                    message: object = pickle.loads(buffer[_LENGTH.size : end])  # noqa: S301
                    del buffer[:end]
                    return message
            if self.closed:
                return None
            try:
                await trio.lowlevel.wait_readable(self._sock)
            except trio.ClosedResourceError:
                return None
            try:
                data, ancillary, _flags, _address = self._sock.recvmsg(
                    _READ_BYTES, socket.CMSG_SPACE(_MAX_FDS * 4)
                )
            except BlockingIOError:
                continue
            except ConnectionResetError:
                return None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    self._fds.extend(fds)
            if not data:
                return None
            buffer += data

    def take_fd(self) -> int:
        """The oldest descriptor received and not yet taken."""
        return self._fds.popleft()

    def close(self) -> None:
        """Close the socket, every descriptor received and never taken, and
        every one still to send."""
        if not self.closed:
            self._broken([])
        while self._fds:
            fd = self._fds.popleft()
            try:
                os.close(fd)
            except OSError:
                pass
        self._sock.close()
