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
        self._unsent: deque[tuple[memoryview, Sequence[int]]] = deque()
        self._more = trio.Event()
        self.closed = False

    def post(self, message: object, fds: Sequence[int] = ()) -> None:
        """Send `message` (and `fds` with it) now, or as soon as `flush` can."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(_LENGTH.pack(len(data)) + data)
        if self.closed:
            return
        if not self._unsent:
            try:
                view = view[self._write(view, fds) :]
                fds = ()
            except BlockingIOError:
                pass
            except OSError:  # the other end is gone: `receive` tells
                self.closed = True
                return
            if not view:
                return
        self._unsent.append((view, fds))
        self._more.set()

    def _write(self, view: memoryview, fds: Sequence[int]) -> int:
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            return self._sock.sendmsg([view], ancillary)
        return self._sock.send(view)

    async def flush(self) -> None:
        """Send what `post` could not, for as long as the wire is open."""
        unsent = self._unsent
        while True:
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
            except OSError:  # the other end is gone: `receive` tells
                self.closed = True
                unsent.clear()
                return
            if sent == len(view):
                unsent.popleft()
            else:
                unsent[0] = (view[sent:], ())

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
            await trio.lowlevel.wait_readable(self._sock)
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
        """Close the socket, and every descriptor received and never taken."""
        self.closed = True
        while self._fds:
            fd = self._fds.popleft()
            try:
                os.close(fd)
            except OSError:
                pass
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()
