"""
Server-wide limits: whom the forwarding headers are believed from, and the
places connections hold in the caps.
"""

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.test.requesthelper import DummyRequest

from wsmux.limits import ConnectionRegistry, ServerLimits, address_key, client_address


def request_from(peer, **headers):
    request = DummyRequest([b""])
    if ":" in peer:
        request.client = IPv6Address("TCP", peer, 5555)
    else:
        request.client = IPv4Address("TCP", peer, 5555)
    for name, value in headers.items():
        request.requestHeaders.setRawHeaders(name.replace("_", "-").encode(), [value.encode()])
    return request


def test_headers_are_ignored_unless_proxies_are_trusted():
    request = request_from("192.168.1.1", x_forwarded_for="6.6.6.6", forwarded="for=7.7.7.7")
    assert client_address(request, ServerLimits()) == "192.168.1.1"


def test_a_hop_count_takes_the_client_that_many_hops_back():
    request = request_from("192.168.1.1", x_forwarded_for="6.6.6.6, 198.51.100.7")
    assert client_address(request, ServerLimits(trusted_proxies=1)) == "198.51.100.7"
    assert client_address(request, ServerLimits(trusted_proxies=2)) == "6.6.6.6"
    assert client_address(request, ServerLimits(trusted_proxies=5)) == "6.6.6.6"


def test_only_the_configured_header_is_believed():
    # The documented nginx setup writes X-Forwarded-For only; a client that
    # adds its own Forwarded header must not choose its address with it.
    request = request_from("127.0.0.1", x_forwarded_for="198.51.100.7", forwarded="for=192.0.2.1")
    assert client_address(request, ServerLimits(trusted_proxies=1)) == "198.51.100.7"
    forwarded = ServerLimits(trusted_proxies=1, forwarded_header="forwarded")
    assert client_address(request, forwarded) == "192.0.2.1"
    request = request_from("127.0.0.1", x_forwarded_for="198.51.100.7")
    assert client_address(request, forwarded) == "127.0.0.1"
    both = ServerLimits(trusted_proxies=1, forwarded_header="both")
    assert client_address(request, both) == "198.51.100.7"


def test_forwarded_hops_with_ports_and_brackets():
    request = request_from("10.0.0.1", forwarded='for="[2001:db8::1]:4711", for=203.0.113.9:80')
    limits = ServerLimits(trusted_proxies=1, forwarded_header="forwarded")
    assert client_address(request, limits) == "203.0.113.9"
    limits = ServerLimits(trusted_proxies=2, forwarded_header="forwarded")
    assert client_address(request, limits) == "2001:db8::1"


def test_trusted_networks_walk_back_past_trusted_hops_only():
    limits = ServerLimits(trusted_proxy_networks=("10.0.0.0/8", "127.0.0.1"))
    # From a trusted proxy: past the trusted hops, the first other address.
    request = request_from("10.1.1.1", x_forwarded_for="6.6.6.6, 198.51.100.7, 10.2.2.2")
    assert client_address(request, limits) == "198.51.100.7"
    # Straight from the internet: the header is the client's own invention.
    request = request_from("203.0.113.5", x_forwarded_for="10.0.0.9")
    assert client_address(request, limits) == "203.0.113.5"
    # IPv4-mapped peers (a dual-stack socket) count as their IPv4 address.
    request = request_from("::ffff:127.0.0.1", x_forwarded_for="198.51.100.7")
    assert client_address(request, limits) == "198.51.100.7"


@pytest.mark.parametrize("junk", ["unknown", "_hidden", "x" * 300, "1.2.3.4.5", ""])
def test_a_hop_that_is_not_an_address_stops_at_the_last_one_believed(junk):
    limits = ServerLimits(trusted_proxy_networks=("10.0.0.0/8",))
    request = request_from("10.1.1.1", x_forwarded_for=f"6.6.6.6, {junk}")
    assert client_address(request, limits) == "10.1.1.1"


def test_proxy_settings_are_checked():
    with pytest.raises(ValueError, match="not an address or network"):
        ServerLimits(trusted_proxy_networks=("10.0.0.0/33",))
    with pytest.raises(ValueError, match="forwarded_header"):
        ServerLimits(forwarded_header="x-real-ip")
    with pytest.raises(ValueError, match="choose one"):
        ServerLimits(trusted_proxies=1, trusted_proxy_networks=("10.0.0.0/8",))


def test_ipv6_clients_count_by_their_slash_64():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2")
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("192.0.2.1") == "192.0.2.1"


def test_a_place_is_held_until_released_once():
    registry = ConnectionRegistry(ServerLimits(max_connections=2, max_connections_per_ip=1))
    first, refusal = registry.hold("192.0.2.1")
    assert refusal is None
    assert registry.hold("192.0.2.1") == (None, (429, "Too many connections from your address"))
    second, _ = registry.hold("192.0.2.2")
    assert registry.hold("192.0.2.3") == (None, (503, "Server connection limit reached"))
    first.release()
    first.release()  # a second release gives nothing back twice
    assert registry.held == 1
    third, refusal = registry.hold("192.0.2.3")
    assert refusal is None and registry.held == 2


def test_a_route_cap_counts_places_on_that_route():
    registry = ConnectionRegistry(ServerLimits())
    route = object()
    held = [registry.hold(f"192.0.2.{i}", route, 2)[0] for i in range(2)]
    assert registry.hold("192.0.2.9", route, 2) == (None, (503, "Route connection limit reached"))
    held[0].release()
    assert registry.hold("192.0.2.9", route, 2)[1] is None


def test_ipv4_clients_on_a_dual_stack_port_count_as_themselves():
    # The default port is dual-stack: IPv4 clients arrive as ::ffff:a.b.c.d.
    limits = ServerLimits()
    registry = ConnectionRegistry(ServerLimits(max_connections_per_ip=1))
    for peer in ("::ffff:198.51.100.1", "::ffff:198.51.100.2", "::ffff:203.0.113.9"):
        address = client_address(request_from(peer), limits)
        assert address == peer[len("::ffff:") :]
        assert registry.hold(address)[1] is None
    assert registry.hold("198.51.100.1")[1] is not None
