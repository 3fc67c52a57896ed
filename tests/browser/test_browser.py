"""
Headless Chromium (Debian's package, driven by Playwright) against a real
twistd wsmux: the demo page, a broadcast room, the status page, and wss://
to a host served by SNI.
"""

import base64
import hashlib
import os
import shutil
import threading
from pathlib import Path
from urllib.request import urlopen

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.sync.client import connect

from tests.pki import make_pki

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def keep(screenshot):
    """
    Copy a screenshot to $WSMUX_SCREENSHOTS, when set (the docs' pictures
    are made this way: WSMUX_SCREENSHOTS=docs/_static pytest tests/browser).
    """
    target = os.environ.get("WSMUX_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(target) / screenshot.name)


def in_browser(test, extra_flags=()):
    """
    Run C{test(browser)} in a thread of its own: Playwright's sync API keeps
    its own event loop, apart from the test runner's reactor.
    """
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run .ci/system-deps"
    outcome = {}

    def run():
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM, args=FLAGS + list(extra_flags)
                )
                try:
                    outcome["value"] = test(browser)
                finally:
                    browser.close()
        except BaseException as e:  # re-raised in the test's thread
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the browser test did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def test_demo_page_echo_round_trip(start_server, tmp_path):
    server = start_server()

    def test(browser):
        page = browser.new_page()
        page.goto(server.url("/", "http"))
        echo = page.locator("#echo")
        echo.locator(".connect").click()
        echo.locator(".status").filter(has_text="connected to").wait_for(timeout=10000)
        echo.locator(".message").fill("round trip")
        echo.locator(".send").click()
        echo.locator(".log").get_by_text("received: round trip").wait_for(timeout=10000)
        page.screenshot(path=str(tmp_path / "demo.png"))

    in_browser(test)
    assert (tmp_path / "demo.png").stat().st_size > 1000
    keep(tmp_path / "demo.png")


def test_demo_page_says_when_connecting_fails(start_server):
    server = start_server()

    def test(browser):
        page = browser.new_page()
        page.goto(server.url("/?path=/no-such-route", "http"))
        echo = page.locator("#echo")
        echo.locator(".connect").click()
        echo.locator(".log").get_by_text("could not connect").wait_for(timeout=10000)
        return echo.locator(".status").inner_text()

    assert "closed (code 1006" in in_browser(test)


def test_two_pages_in_one_broadcast_room(start_server):
    server = start_server()

    def test(browser):
        pages = [browser.new_page(), browser.new_page()]
        for page in pages:
            page.goto(server.url("/", "http"))
            room = page.locator("#room")
            room.locator(".room").fill("garden")
            room.locator(".connect").click()
            room.locator(".status").filter(has_text="connected to").wait_for(timeout=10000)
        sender = pages[0].locator("#room")
        sender.locator(".message").fill("hello from page one")
        sender.locator(".send").click()
        pages[1].locator("#room .log").get_by_text("received: hello from page one").wait_for(
            timeout=10000
        )
        pages[0].locator("#room .log").get_by_text("received: hello from page one").wait_for(
            timeout=10000
        )

    in_browser(test)


def test_status_page_updates(start_server, tmp_path):
    server = start_server("--status-path", "/status")

    def test(browser):
        page = browser.new_page()
        page.goto(server.url("/status", "http"))
        page.locator("#state").filter(has_text="connected").wait_for(timeout=10000)
        row = page.locator('tr[data-route="/echo"]')
        row.wait_for(timeout=10000)
        assert row.locator("td").nth(1).inner_text() == "0"
        with connect(server.url("/echo")) as ws:
            ws.send("seen by the status page")
            ws.recv(timeout=5)
            page.wait_for_function(
                """() => {
                    const cells = document.querySelectorAll('tr[data-route="/echo"] td');
                    return cells.length && cells[1].textContent === "1" && cells[2].textContent === "1";
                }""",
                timeout=10000,
            )
            page.screenshot(path=str(tmp_path / "status.png"))

    in_browser(test)
    keep(tmp_path / "status.png")


def spki_hash(chain_file):
    cert = x509.load_pem_x509_certificates(Path(chain_file).read_bytes())[0]
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def tls_server(start_server, tmp_path, *args):
    """
    wsmux on a TLS port with the test certificates (by SNI), and the
    flags that make Chromium reach a.test there and trust its certificate:
    (server, TLS port, flags).
    """
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    server = start_server("--tls-port", "tcp:0:interface=127.0.0.1", "--certs", str(pki.directory),
                          *args)  # fmt: skip
    port = next(port for kind, _, port in server.ports() if kind == "tls")
    flags = [
        "--host-resolver-rules=MAP a.test 127.0.0.1, MAP default.test 127.0.0.1",
        "--ignore-certificate-errors-spki-list=" + spki_hash(pki.files["a.test"][0]),
    ]
    return server, port, flags


def test_wss_to_a_host_served_by_sni(start_server, tmp_path):
    server, port, flags = tls_server(start_server, tmp_path)

    def test(browser):
        page = browser.new_page()
        page.goto(f"https://a.test:{port}/")
        echo = page.locator("#echo")
        assert echo.locator(".url").input_value() == f"wss://a.test:{port}/echo"
        echo.locator(".connect").click()
        echo.locator(".status").filter(has_text="connected to").wait_for(timeout=10000)
        echo.locator(".message").fill("over TLS")
        echo.locator(".send").click()
        echo.locator(".log").get_by_text("received: over TLS").wait_for(timeout=10000)

    in_browser(test, flags)
    assert "open route=/echo" in server.log()


def test_the_demo_page_never_connects_to_another_host(start_server):
    server = start_server()
    here = f"ws://127.0.0.1:{server.port}/"

    def test(browser):
        page = browser.new_page()
        opened = []
        page.on("websocket", lambda ws: opened.append(ws.url))
        page.goto(server.url("/?rooms=@evil.example/x/&path=//evil.example/echo", "http"))
        echo = page.locator("#echo")
        url = echo.locator(".url").input_value()
        room = page.locator("#room")
        room.locator(".room").fill("garden")
        room.locator(".connect").click()
        room.locator(".status").filter(has_text="connected to").wait_for(timeout=10000)
        return url, opened

    url, opened = in_browser(test)
    assert url == here + "echo"
    assert opened == [here + "rooms/garden"]


def test_websockets_ride_the_pages_http2_connection(start_server, tmp_path):
    # RFC 8441: Chromium opens a page's wss:// WebSockets as streams of the
    # HTTP/2 connection it loaded the page on, when the server's SETTINGS
    # allow it (no flag needed).
    server, port, flags = tls_server(start_server, tmp_path, "--metrics-path", "/metrics")

    def test(browser):
        page = browser.new_page()
        page.goto(f"https://a.test:{port}/")
        protocol = page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")
        echoes = page.evaluate(
            """async (url) => {
                const one = (i) => new Promise((resolve, reject) => {
                    const ws = new WebSocket(url);
                    ws.onopen = () => ws.send("stream " + i);
                    ws.onmessage = (e) => { resolve(e.data); };
                    ws.onerror = () => reject(new Error("websocket " + i + " failed"));
                });
                return await Promise.all([one(1), one(2), one(3)]);
            }""",
            f"wss://a.test:{port}/echo",
        )
        return protocol, echoes

    protocol, echoes = in_browser(test, flags)
    assert protocol == "h2"
    assert echoes == ["stream 1", "stream 2", "stream 3"]
    metrics = urlopen(server.url("/metrics", "http"), timeout=5).read().decode()
    # Three WebSockets, all as streams of the one HTTP/2 connection.
    assert 'wsmux_http2_websockets_total{route="/echo"} 3.0' in metrics
    assert "wsmux_http2_connections_total 1.0" in metrics
