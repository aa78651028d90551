"""The fetcher against a real server on 127.0.0.1 that misbehaves on purpose."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from imgdl_watch import errors as err
from imgdl_watch.download.addressguard import (
    AddressRefused,
    PublicOnlyResolver,
    literal_is_refused,
)
from imgdl_watch.download.fetcher import Fetcher
from imgdl_watch.download.filesink import TEMP_PREFIX
from imgdl_watch.download.options import FetchOptions
from imgdl_watch.download.retrypolicy import Backoff
from imgdl_watch.download.workers import Link, Workers
from tests.helpers import fetch_options
from tests.imageserver import GZIP_BOMB, ImageServer, image_bytes

# Backoff small enough that retries cost milliseconds against a real server.
FAST = Backoff(base_s=0.001, cap_s=0.002, retry_after_cap_s=0.01)


# Download workers for the fetchers of the test running now (see `workers`).
_running = {"workers": 0}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    only_here = metafunc.definition.get_closest_marker("in_process") is not None
    modes = [0] if only_here else [0, 1]
    ids = ["in-process", "worker"][: len(modes)]
    metafunc.parametrize("workers", modes, ids=ids, indirect=True)


@pytest.fixture(autouse=True)
def workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Every test here twice: each request in the test's own process, and each
    in a download worker (`download.workers`): its share of the slots made
    all of them, once it is ready."""
    if request.param:

        def every_slot(pool: Workers, slot: int) -> Link | None:
            link = pool.links[0]
            return link if link.ready else None

        monkeypatch.setattr(Workers, "for_slot", every_slot)
    _running["workers"] = request.param
    yield request.param
    _running["workers"] = 0


def options(**changes: Any) -> FetchOptions:
    base: dict[str, Any] = {
        "retries": 2,
        "backoff": FAST,
        "connect_timeout": 2,
        "read_timeout": 2,
        "workers": _running["workers"],
    }
    return fetch_options(**(base | changes))


async def get(server: ImageServer, out_fd: int, path: str, **opts: Any) -> str:
    async with Fetcher(options(**opts)) as fetcher:
        result = await fetcher.download(
            server.base + path, dir_fd=out_fd, name=path.rsplit("/", 1)[-1]
        )
    return result.file


async def fails(server: ImageServer, out_fd: int, path: str, **opts: Any) -> err.DownloadError:
    with pytest.raises(err.DownloadError) as info:
        await get(server, out_fd, path, **opts)
    return info.value


def files(out_fd: int) -> list[str]:
    return sorted(os.listdir(out_fd))


async def test_saves_exact_bytes_and_sends_polite_headers(server: ImageServer, out_fd: int) -> None:
    assert await get(server, out_fd, "/img/a/cat.jpg") == "cat.jpg"
    with open(f"/proc/self/fd/{out_fd}/cat.jpg", "rb") as handle:
        assert handle.read() == image_bytes("/img/a/cat.jpg")
    headers = server.headers_seen[-1]
    assert headers["Accept-Encoding"] == "identity"
    assert headers["User-Agent"].startswith("imgdl-watch")


async def test_404_is_asked_once(server: ImageServer, out_fd: int) -> None:
    exc = await fails(server, out_fd, "/status/404/x.jpg")
    assert isinstance(exc, err.HttpStatusError) and exc.status == 404
    assert server.counts["/status/404/x.jpg"] == 1
    assert files(out_fd) == []


async def test_500_is_retried_then_fails(server: ImageServer, out_fd: int) -> None:
    exc = await fails(server, out_fd, "/status/500/x.jpg", retries=3)
    assert isinstance(exc, err.HttpStatusError) and exc.status == 500
    assert server.counts["/status/500/x.jpg"] == 4
    assert exc.attempts == 4


@pytest.mark.parametrize(
    "path", ["/flaky/2/503/a.jpg", "/flaky/1/429/b.jpg?ra=1", "/flaky/1/408/c.jpg"]
)
async def test_busy_then_ok(server: ImageServer, out_fd: int, path: str) -> None:
    await get(server, out_fd, path)
    assert len(files(out_fd)) == 1


async def test_a_real_server_saying_when_to_come_back_uses_up_no_retry(
    server: ImageServer, out_fd: int
) -> None:
    # Three 429s with a Retry-After (of 0 s, to keep the test quick) and one
    # retry allowed: all three are waited out, and the image is saved.
    async with Fetcher(options(retries=1)) as fetcher:
        got = await fetcher.download(
            server.base + "/flaky/3/429/w.jpg?ra=0", dir_fd=out_fd, name="w.jpg"
        )
    assert got.file == "w.jpg" and got.attempts == 4
    assert server.counts["/flaky/3/429/w.jpg?ra=0"] == 4
    # Without a Retry-After, a 429 is a failure like any other.
    exc = await fails(server, out_fd, "/flaky/3/429/v.jpg", retries=1)
    assert isinstance(exc, err.HttpStatusError) and exc.attempts == 2


async def test_redirects_are_followed_with_a_limit(server: ImageServer, out_fd: int) -> None:
    assert await get(server, out_fd, "/redirect/3/r.jpg") == "r.jpg"
    exc = await fails(server, out_fd, "/redirect/5/s.jpg", max_redirects=3)
    assert exc.reason == "too_many_redirects"


async def test_redirect_loop_and_bad_scheme(server: ImageServer, out_fd: int) -> None:
    assert (await fails(server, out_fd, "/loop/a.jpg")).reason == "redirect_loop"
    assert server.counts["/loop/a.jpg"] == 1  # permanent: not retried
    assert (await fails(server, out_fd, "/badredirect/x.jpg")).reason == "bad_redirect"
    # A host that urllib cannot split raised a plain ValueError, which
    # ended the whole job: it is a bad redirect like any other.
    for location in ("http:////a]/", "img:////[zz]/"):
        exc = await fails(server, out_fd, f"/to/v.jpg?url={location}")
        assert exc.reason == "bad_redirect", location


async def test_a_host_that_dns_cannot_carry_fails_before_the_resolver(
    server: ImageServer, out_fd: int
) -> None:
    # The resolver would raise UnicodeError for a label over 63 characters,
    # which no HTTP layer translates: behind a redirect, and given directly.
    far = f"http://{'c' * 64}.example/far.jpg"
    exc = await fails(server, out_fd, f"/to/x.jpg?url={far}")
    assert exc.reason == "bad_redirect" and "DNS" in exc.detail
    with pytest.raises(err.UnknownHost, match="not a name DNS can carry"):
        await get_url(far, out_fd)
    # Nor one httpx cannot spell: reading its host raised IDNAError.
    spelled = "http://xn--zz.example/spelled.jpg"
    exc = await fails(server, out_fd, f"/to/y.jpg?url={spelled}")
    assert exc.reason == "bad_redirect" and "DNS" in exc.detail
    with pytest.raises(err.UnknownHost, match=r"xn--zz\.example is not a name DNS can carry"):
        await get_url(spelled, out_fd)
    # And a port no TCP connection has: bad_redirect, not a connect_error tried again.
    exc = await fails(server, out_fd, "/to/z.jpg?url=http://127.0.0.1:99999/z.jpg")
    assert exc.reason == "bad_redirect" and exc.attempts == 1
    assert files(out_fd) == []


async def test_html_served_as_200_is_not_an_image(server: ImageServer, out_fd: int) -> None:
    exc = await fails(server, out_fd, "/html/x.jpg")
    assert exc.reason == "not_an_image"
    assert server.counts["/html/x.jpg"] == 1
    assert files(out_fd) == []
    assert await get(server, out_fd, "/html/y.jpg", any_type=True) == "y.jpg"


async def test_a_page_that_claims_to_be_an_image_is_not_one(
    server: ImageServer, out_fd: int
) -> None:
    exc = await fails(server, out_fd, "/liar/gone.jpg")
    assert exc.reason == "not_an_image" and "but the body is HTML or XML" in exc.detail
    assert files(out_fd) == []
    # SVG is markup and an image; --any-type saves whatever comes.
    assert await get(server, out_fd, "/svg/logo.svg") == "logo.svg"
    assert await get(server, out_fd, "/liar/kept.jpg", any_type=True) == "kept.jpg"


async def test_untyped_image_is_recognised_by_its_bytes(server: ImageServer, out_fd: int) -> None:
    assert await get(server, out_fd, "/typeless/t.jpg") == "t.jpg"


async def test_extension_comes_from_content_type(server: ImageServer, out_fd: int) -> None:
    assert await get(server, out_fd, "/noext/picture") == "picture.png"
    # A script's name says nothing of what it answers: the image's type is added.
    assert await get(server, out_fd, "/noext/thumb.php") == "thumb.php.png"


async def test_declared_size_over_cap_is_refused_before_the_body(
    server: ImageServer, out_fd: int
) -> None:
    exc = await fails(server, out_fd, "/big/52428800/huge.jpg", max_bytes=1_000_000)
    assert exc.reason == "too_large"
    assert server.counts["/big/52428800/huge.jpg"] == 1


async def test_undeclared_body_over_cap_is_cut(server: ImageServer, out_fd: int) -> None:
    exc = await fails(server, out_fd, "/endless/e.jpg", max_bytes=2_000_000)
    assert exc.reason == "too_large"
    assert files(out_fd) == []  # the temporary file is gone too


async def test_short_body_is_truncated_and_retried(server: ImageServer, out_fd: int) -> None:
    exc = await fails(server, out_fd, "/short/s.jpg")
    assert exc.reason == "truncated"
    assert server.counts["/short/s.jpg"] == 3
    assert files(out_fd) == []


async def test_stalled_body_times_out(server: ImageServer, out_fd: int) -> None:
    exc = await fails(server, out_fd, "/stall/s.jpg", read_timeout=0.3, retries=0)
    assert exc.reason == "timeout"
    assert not [f for f in files(out_fd) if f.startswith(TEMP_PREFIX)]


async def test_total_timeout_bounds_a_slow_download(server: ImageServer, out_fd: int) -> None:
    exc = await fails(server, out_fd, "/slow/1500/s.jpg", total_timeout=0.2, retries=0)
    assert exc.reason == "timeout"


async def test_reset_connection_is_retried(server: ImageServer, out_fd: int) -> None:
    exc = await fails(server, out_fd, "/reset/r.jpg")
    assert exc.reason in ("connection_lost", "connect_error")
    assert server.counts["/reset/r.jpg"] == 3


async def test_a_slot_keeps_its_connection_between_downloads(
    server: ImageServer, out_fd: int
) -> None:
    async with Fetcher(options(concurrency=1)) as fetcher:
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            await fetcher.download(f"{server.base}/img/{name}", dir_fd=out_fd, name=name)
    assert server.opened_connections == 1
    assert files(out_fd) == ["a.jpg", "b.jpg", "c.jpg"]


async def test_a_kept_connection_the_server_closed_is_replaced_at_once(
    server: ImageServer, out_fd: int
) -> None:
    # The server closes each connection after its answer without saying so, as
    # one whose keep-alive time ran out just then. The next download meets the
    # dead connection before any answer, and goes again at once on a new one:
    # not a failed attempt (retries=0 would make it fatal), and no backoff.
    async with Fetcher(options(concurrency=1, retries=0)) as fetcher:
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            done = await fetcher.download(f"{server.base}/oneshot/{name}", dir_fd=out_fd, name=name)
            assert done.attempts == 1
    assert server.opened_connections == 3
    assert [server.counts[f"/oneshot/{n}"] for n in ("a.jpg", "b.jpg", "c.jpg")] == [1, 1, 1]
    assert files(out_fd) == ["a.jpg", "b.jpg", "c.jpg"]


async def test_gzip_bomb_is_saved_raw_not_inflated(server: ImageServer, out_fd: int) -> None:
    # Sent gzipped although we asked for identity: gzip's bytes are not a
    # JPEG's, whatever the Content-Type says (they were once saved as one).
    exc = await fails(server, out_fd, "/gzip/bomb.jpg", max_bytes=1_000_000)
    assert exc.reason == "not_an_image" and "Content-Encoding gzip" in exc.detail
    assert files(out_fd) == []
    # --any-type saves them as they came, never inflated.
    await get(server, out_fd, "/gzip/bomb.jpg", max_bytes=1_000_000, any_type=True)
    assert os.stat("bomb.jpg", dir_fd=out_fd).st_size == len(GZIP_BOMB)
    # A Content-Encoding that changes nothing, or bytes that are an image
    # whatever it says, are not held against the image; nor is a gzipped SVG
    # (.svgz), which is saved as it came.
    for i, coding in enumerate(("none", "UTF-8", "identity, identity", "gzip")):
        assert (await get(server, out_fd, f"/coded/{i}.jpg?coding={coding}")).startswith(f"{i}.jpg")
    assert await get(server, out_fd, "/svgz/logo.svgz") == "logo.svgz"
    # Not under a name that would call the gzip an .svg, nor a gzipped page.
    assert (await fails(server, out_fd, "/svgz/logo.svg")).reason == "not_an_image"
    assert (await fails(server, out_fd, "/svgz/logo")).reason == "not_an_image"


async def test_refused_port_is_a_connect_error(out_fd: int) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with Fetcher(options(retries=1)) as fetcher:
        with pytest.raises(err.ConnectFailed):
            await fetcher.download(f"http://127.0.0.1:{port}/a.jpg", dir_fd=out_fd, name="a.jpg")


class FakeDNS(trio.abc.HostnameResolver):
    """DNS as a test wants it, through trio's own resolver hook.

    httpcore connects with `trio.open_tcp_stream`, which asks this resolver,
    so the fetcher's real connect path meets these answers; nothing leaves
    the machine. `names` resolve to `addresses` (127.0.0.1); `down` hosts get "could
    not ask" (EAI_AGAIN); any other name does not exist (EAI_NONAME).
    """

    def __init__(
        self,
        names: set[str],
        down: frozenset[str] = frozenset(),
        addresses: tuple[str, ...] = ("127.0.0.1",),
    ) -> None:
        self.names = names
        self.down = down
        self.addresses = addresses
        self.asked: list[str] = []

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: Any,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        name = (host or b"").decode()
        self.asked.append(name)
        if name in self.down:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if name not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        # Numeric addresses: the standard library answers without asking anyone.
        return [
            info
            for address in self.addresses
            for info in socket.getaddrinfo(address, port, family, type, proto, flags)
        ]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


@pytest.mark.in_process
async def test_unknown_host_fails_at_once_and_dns_down_is_retried(
    server: ImageServer, out_fd: int
) -> None:
    dns = FakeDNS({"images.test"}, down=frozenset({"flaky-dns.test"}))
    trio.socket.set_custom_hostname_resolver(dns)
    port = server.base.rsplit(":", 1)[1]
    async with Fetcher(options(retries=2)) as fetcher:
        ok = await fetcher.download(
            f"http://images.test:{port}/img/n.jpg", dir_fd=out_fd, name="n.jpg"
        )
        assert ok.attempts == 1
        with pytest.raises(err.UnknownHost) as gone:
            await fetcher.download(f"http://no-such.test:{port}/a.jpg", dir_fd=out_fd, name="a.jpg")
        with pytest.raises(err.ConnectFailed) as down:
            await fetcher.download(
                f"http://flaky-dns.test:{port}/b.jpg", dir_fd=out_fd, name="b.jpg"
            )
    assert gone.value.reason == "unknown_host" and gone.value.attempts == 1
    assert "no such host" in gone.value.detail
    assert down.value.reason == "connect_error" and down.value.attempts == 3
    assert dns.asked.count("no-such.test") == 1
    assert dns.asked.count("flaky-dns.test") == 3


@pytest.mark.in_process
async def test_private_address_guard_tells_an_unknown_host(out_fd: int) -> None:
    trio.socket.set_custom_hostname_resolver(FakeDNS(set()))
    async with Fetcher(options(block_private=True)) as fetcher:
        with pytest.raises(err.UnknownHost) as gone:
            await fetcher.download("http://no-such.test/a.jpg", dir_fd=out_fd, name="a.jpg")
    assert gone.value.attempts == 1 and "no-such.test" in gone.value.detail


@pytest.mark.in_process
async def test_private_address_guard_checks_the_address_it_connects_to(
    server: ImageServer, out_fd: int
) -> None:
    # A name whose DNS answer is loopback: refused where httpcore resolves it
    # to connect, so that a second, different answer (DNS rebinding) cannot
    # slip past a check made before the request.
    dns = FakeDNS({"images.test"})
    trio.socket.set_custom_hostname_resolver(dns)
    port = server.base.rsplit(":", 1)[1]
    async with Fetcher(options(block_private=True)) as fetcher:
        with pytest.raises(err.BlockedAddress) as refused:
            await fetcher.download(
                f"http://images.test:{port}/img/p.jpg", dir_fd=out_fd, name="p.jpg"
            )
    assert refused.value.attempts == 1
    assert "images.test resolves only to non-public addresses (127.0.0.1)" in refused.value.detail
    assert dns.asked == ["images.test"] and server.counts["/img/p.jpg"] == 0
    # The run's resolver is the test's again once the fetcher is closed.
    assert trio.socket.set_custom_hostname_resolver(None) is dns


async def test_public_only_resolver_keeps_public_addresses_and_exempts_proxies() -> None:
    mixed = FakeDNS(
        {"mixed.test", "proxy.corp"}, addresses=("93.184.216.34", "10.0.0.7", "169.254.169.254")
    )
    guard = PublicOnlyResolver(inner=mixed, exempt=frozenset({"proxy.corp"}))
    kept = await guard.getaddrinfo(b"mixed.test", 80, type=socket.SOCK_STREAM)
    assert [info[4][0] for info in kept] == ["93.184.216.34"]
    assert len(await guard.getaddrinfo(b"proxy.corp", 80, type=socket.SOCK_STREAM)) == 3
    with pytest.raises(AddressRefused, match=r"metadata\.test resolves only to non-public"):
        metadata = FakeDNS({"metadata.test"}, addresses=("169.254.169.254",))
        await PublicOnlyResolver(inner=metadata).getaddrinfo(b"metadata.test", 80)


async def test_private_address_guard(server: ImageServer, out_fd: int) -> None:
    exc = await fails(server, out_fd, "/img/p.jpg", block_private=True)
    assert exc.reason == "blocked_address"
    assert server.counts["/img/p.jpg"] == 0


# 127.0.0.1 as libc's inet_aton reads it, which trio connects to without
# asking any resolver: each form once passed the guard and was downloaded.
# (httpx refuses a dotted quad with a part over 255 or of four digits,
# "0177.0.0.1", as an invalid URL.)
LOOPBACK_FORMS = ["0x7f000001", "2130706433", "127.1", "0x7f.0.0.1", "017700000001"]


@pytest.mark.parametrize("host", LOOPBACK_FORMS)
async def test_private_address_guard_reads_literals_as_libc_does(
    server: ImageServer, out_fd: int, host: str
) -> None:
    port = server.base.rsplit(":", 1)[1]
    url = f"http://{host}:{port}/img/forms/{host}.jpg"
    async with Fetcher(options()) as fetcher:  # without the guard, it is loopback
        await fetcher.download(url, dir_fd=out_fd, name="open.jpg")
    async with Fetcher(options(block_private=True)) as fetcher:
        with pytest.raises(err.BlockedAddress) as refused:
            await fetcher.download(url, dir_fd=out_fd, name="blocked.jpg")
    assert refused.value.attempts == 1
    assert server.counts[f"/img/forms/{host}.jpg"] == 1
    assert files(out_fd) == ["open.jpg"]


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        *((form, True) for form in LOOPBACK_FORMS),
        ("0177.0.0.1", True),
        ("0xa9fea9fe", True),  # 169.254.169.254, a cloud's metadata
        ("10.1", True),
        ("::1", True),
        ("::127.0.0.3", True),  # IPv4-compatible
        ("::ffff:10.0.0.1", True),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 to 169.254.169.254
        ("64:ff9b:1::a00:1", True),  # local-use NAT64 to 10.0.0.1
        ("64:ff9b:1:7f00:0:100:808:808", True),  # local-use NAT64, 127.0.0.1 at /48
        ("2002:7f00:3::1", True),  # 6to4 of 127.0.0.3
        ("93.184.216.34", False),
        ("0x5db8d822", False),  # 93.184.216.34
        ("64:ff9b::5db8:d822", False),
        ("2606:4700::1111", False),
        ("images.example", False),  # a name: the resolver's to check
        ("xn--zz.example", False),
        ("1.2.3.4.5", False),
    ],
)
@pytest.mark.in_process  # no download at all
def test_a_literal_is_refused_by_what_it_reaches(host: str, refused: bool) -> None:
    assert literal_is_refused(host) is refused


async def test_symlink_in_folder_is_not_followed(
    server: ImageServer, out_fd: int, tmp_path: Any
) -> None:
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"precious")
    os.symlink(outside, "link.jpg", dir_fd=out_fd)
    await get(server, out_fd, "/img/link.jpg")
    assert outside.read_bytes() == b"precious"
    assert not os.path.islink(f"/proc/self/fd/{out_fd}/link.jpg")


async def test_stopping_interrupts_before_an_attempt(server: ImageServer, out_fd: int) -> None:
    async with Fetcher(options()) as fetcher:
        fetcher.stopping.set()
        with pytest.raises(err.Interrupted):
            await fetcher.download(server.base + "/img/x.jpg", dir_fd=out_fd, name="x.jpg")
    assert server.counts["/img/x.jpg"] == 0


async def test_global_concurrency_holds(server: ImageServer, out_fd: int) -> None:
    peak = 0
    async with Fetcher(options(concurrency=3, per_host=10)) as fetcher:

        async def one(i: int) -> None:
            nonlocal peak
            await fetcher.download(
                server.base + f"/slow/50/{i}.jpg", dir_fd=out_fd, name=f"{i}.jpg"
            )

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, fetcher.in_flight)
                await trio.sleep(0.005)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as inner:
                for i in range(12):
                    inner.start_soon(one, i)
            nursery.cancel_scope.cancel()
    assert peak == 3
    assert len(files(out_fd)) == 12


async def test_retry_after_as_an_http_date_from_a_real_server(
    server: ImageServer, out_fd: int
) -> None:
    from email.utils import format_datetime
    from urllib.parse import quote

    from structlog.testing import capture_logs

    when = format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2), usegmt=True)
    path = f"/flaky/1/429/dated.jpg?ra={quote(when)}"
    with capture_logs() as logs:
        await get(server, out_fd, path, backoff=Backoff(retry_after_cap_s=30))
    delays = [e["delay_s"] for e in logs if e["event"] == "download_retry"]
    assert len(delays) == 1 and 0.5 <= delays[0] <= 2.5  # the date, not our own tiny backoff


async def test_https_to_a_plain_http_port_fails_as_a_connect_error(
    server: ImageServer, out_fd: int
) -> None:
    port = server.server_address[1]
    async with Fetcher(options(retries=0)) as fetcher:
        with pytest.raises(err.ConnectFailed):
            await fetcher.download(
                f"https://127.0.0.1:{port}/img/t.jpg", dir_fd=out_fd, name="t.jpg"
            )


async def test_slots_share_two_ssl_contexts_and_the_plain_one_fails_closed() -> None:
    async with Fetcher(options()) as fetcher:
        transports = fetcher.transports
        plain = transports.ssl_context(tls=False)
        assert transports.ssl_context(tls=False) is plain
        # Never meant for a handshake; if one ever happens, nothing is trusted.
        assert plain.verify_mode == ssl.CERT_REQUIRED and plain.check_hostname
        assert plain.cert_store_stats()["x509_ca"] == 0
        verifying = transports.ssl_context(tls=True)
        assert transports.ssl_context(tls=True) is verifying is not plain
        assert verifying.verify_mode == ssl.CERT_REQUIRED
        assert verifying.cert_store_stats()["x509_ca"] > 0


async def test_environment_proxy_is_used_and_no_proxy_bypasses_it(
    server: ImageServer, out_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The image server plays the proxy too: a proxied request reaches it with
    # the whole URL as its target, a direct one with the path alone.
    monkeypatch.setenv("http_proxy", server.base)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    async with Fetcher(options(retries=0)) as fetcher:
        await fetcher.download("http://images.invalid/img/p.jpg", dir_fd=out_fd, name="p.jpg")
        await fetcher.download(f"{server.base}/img/d.jpg", dir_fd=out_fd, name="d.jpg")
    assert server.counts["http://images.invalid/img/p.jpg"] == 1
    assert server.counts["/img/d.jpg"] == 1
    assert files(out_fd) == ["d.jpg", "p.jpg"]


async def test_credentials_in_the_url_go_to_its_origin_only(
    server: ImageServer, out_fd: int
) -> None:
    with ImageServer() as elsewhere:
        listed = server.base.replace("://", "://alice:s%3Acret@")
        assert await get_url(f"{listed}/auth/alice/s:cret/a.jpg", out_fd) == "a.jpg"
        # A redirect within the origin keeps them; one to another host drops them.
        away = f"{listed}/to/b.jpg?url={elsewhere.base}/img/b.jpg"
        assert await get_url(away, out_fd) == "b.jpg"
        assert "Authorization" not in elsewhere.headers_seen[-1]
        with pytest.raises(err.HttpStatusError) as denied:
            await get_url(f"{server.base}/auth/alice/s:cret/c.jpg", out_fd)
    assert denied.value.status == 401


def sent(server: ImageServer, name: str) -> list[str]:
    """Every value of header `name` (in any case) in the server's last request."""
    return [v for k, v in server.header_items[-1] if k.lower() == name.lower()]


async def test_extra_headers_go_everywhere_and_credentials_stay_home(
    server: ImageServer, out_fd: int
) -> None:
    header = (
        ("Referer", "https://gallery.example/"),
        ("cookie", "session=s3cret"),
        ("Authorization", "Bearer t0ken"),
        ("user-agent", "custom/1"),
    )
    with ImageServer() as elsewhere:
        async with Fetcher(options(header=header)) as fetcher:
            await fetcher.download(f"{server.base}/img/a.jpg", dir_fd=out_fd, name="a.jpg")
            home = {name: sent(server, name) for name in ("Cookie", "Authorization")}
            away = f"{server.base}/to/b.jpg?url={elsewhere.base}/img/b.jpg"
            await fetcher.download(away, dir_fd=out_fd, name="b.jpg")
    assert home == {"Cookie": ["session=s3cret"], "Authorization": ["Bearer t0ken"]}
    for host in (server, elsewhere):  # the redirect, and the host it points at
        assert sent(host, "Referer") == ["https://gallery.example/"]
        assert sent(host, "User-Agent") == ["custom/1"]  # it replaces ours, once
    assert sent(elsewhere, "Cookie") == sent(elsewhere, "Authorization") == []
    assert files(out_fd) == ["a.jpg", "b.jpg"]


async def get_url(url: str, out_fd: int) -> str:
    async with Fetcher(options()) as fetcher:
        result = await fetcher.download(
            url, dir_fd=out_fd, name=url.rsplit("/", 1)[-1].split("?", maxsplit=1)[0]
        )
    return result.file


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ImageServer, Path]]:
    """An https ImageServer with a certificate from a throwaway CA, and the CA's PEM file."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    with ImageServer(tls=context) as server:
        yield server, ca_pem


async def test_https_verifies_the_certificate_and_trusts_ssl_cert_file(
    tls_server: tuple[ImageServer, Path], out_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca_pem = tls_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    # Our CA is in no bundle: refused at once, and not retried.
    with pytest.raises(err.UntrustedCertificate) as refused:
        await get(server, out_fd, "/img/t.jpg")
    assert refused.value.reason == "certificate_error" and refused.value.attempts == 1
    assert "certificate" in refused.value.detail
    assert server.counts["/img/t.jpg"] == 0
    # A private CA, as httpx itself takes it: SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_pem))
    assert await get(server, out_fd, "/img/t.jpg") == "t.jpg"
    with open(f"/proc/self/fd/{out_fd}/t.jpg", "rb") as handle:
        assert handle.read() == image_bytes("/img/t.jpg")
