"""
Route lookup through the resource tree, without sockets.
"""

import pytest
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from wsmux import EchoHandler, Route, RouteError, RouteTree
from wsmux.routing import UnhandledUpgrade, WebSocketEndpoint, check_clashes, parse_path


def lookup(tree, path, upgrade=True):
    request = DummyRequest(path.lstrip("/").split("/") if path != "/" else [b""])
    request.postpath = [s.encode() for s in path[1:].split("/")]
    request.prepath = []
    if upgrade:
        request.requestHeaders.setRawHeaders(b"upgrade", [b"websocket"])
    return getChildForRequest(tree, request), request


def tree_of(*paths):
    return RouteTree([Route(p, (EchoHandler,)) for p in paths])


def resolved(tree, path, upgrade=True):
    resource, request = lookup(tree, path, upgrade)
    if not isinstance(resource, (WebSocketEndpoint, UnhandledUpgrade)) and hasattr(
        resource, "terminal"
    ):
        resource = resource.terminal(request)
    return resource, request


def test_exact_nested_and_param_paths():
    tree = tree_of("/chat", "/a/b", "/rooms/{room}", "/rooms/{room}/log")
    for path, route in [
        ("/chat", "/chat"),
        ("/a/b", "/a/b"),
        ("/rooms/lobby", "/rooms/{room}"),
        ("/rooms/lobby/log", "/rooms/{room}/log"),
    ]:
        resource, request = resolved(tree, path)
        assert isinstance(resource, WebSocketEndpoint), path
        assert resource.route.path == route


def test_path_parameters_are_recorded_on_the_request():
    tree = tree_of("/rooms/{room}/users/{user}")
    resource, request = resolved(tree, "/rooms/lobby/users/ann")
    assert isinstance(resource, WebSocketEndpoint)
    assert request.wsmux_path_params == {"room": "lobby", "user": "ann"}


def test_literal_beats_parameter():
    tree = tree_of("/rooms/{room}", "/rooms/lobby")
    resource, _ = resolved(tree, "/rooms/lobby")
    assert resource.route.path == "/rooms/lobby"
    resource, request = resolved(tree, "/rooms/other")
    assert resource.route.path == "/rooms/{room}"
    assert request.wsmux_path_params == {"room": "other"}


@pytest.mark.parametrize("path", ["/nope", "/chat/extra", "/a", "/chat/", "/rooms/", "/"])
def test_unknown_upgrade_paths_go_to_the_unhandled_hook(path):
    tree = tree_of("/chat", "/a/b", "/rooms/{room}")
    resource, _ = resolved(tree, path)
    assert isinstance(resource, UnhandledUpgrade)


def test_non_upgrade_unknown_path_is_not_found():
    tree = tree_of("/chat")
    resource, _ = resolved(tree, "/nope", upgrade=False)
    assert resource.__class__.__name__ != "UnhandledUpgrade"
    request = DummyRequest([b"nope"])
    resource.render(request)
    assert request.responseCode == 404


def test_unmount_stops_new_upgrades_only():
    tree = tree_of("/chat")
    endpoint = tree.route_for("/chat")
    tree.unmount("/chat")
    assert endpoint.mounted is False
    resource, _ = resolved(tree, "/chat")
    assert isinstance(resource, UnhandledUpgrade)
    tree.mount(Route("/chat", (EchoHandler,)))
    resource, _ = resolved(tree, "/chat")
    assert isinstance(resource, WebSocketEndpoint) and resource is not endpoint


@pytest.mark.parametrize(
    "paths, message",
    [
        (["/chat", "/chat"], "clashes with route /chat"),
        (["/rooms/{a}", "/rooms/{b}"], "names parameter {b} where"),
        (["/rooms/{a}/x", "/rooms/{a}/x"], "clashes"),
    ],
)
def test_clashes_are_refused(paths, message):
    with pytest.raises(RouteError, match=message.replace("{", r"\{").replace("}", r"\}")):
        check_clashes(paths)
    with pytest.raises(RouteError):
        tree_of(*paths)


@pytest.mark.parametrize("bad", ["chat", "/a//b", "/rooms/{room", "/x{y}", "/{a}/{a}", "/{1x}"])
def test_malformed_paths_are_refused(bad):
    with pytest.raises(RouteError):
        parse_path(bad)


def test_route_needs_protocol_subclass():
    with pytest.raises(RouteError, match="not a WebSocketServerProtocol subclass"):
        Route("/x", (object,))


@pytest.mark.parametrize(
    "routes, path, route, params",
    [
        (
            ("/rooms/lobby", "/rooms/{room}/log"),
            "/rooms/lobby/log",
            "/rooms/{room}/log",
            {"room": "lobby"},
        ),
        (("/a", "/{y}/b"), "/a/b", "/{y}/b", {"y": "a"}),
        (("/a", "/{y}/b"), "/a", "/a", {}),
        (("/a/{x}/c", "/{y}/b/d"), "/a/b/d", "/{y}/b/d", {"y": "a"}),
        (("/a/{x}/c", "/{y}/b/d"), "/a/b/c", "/a/{x}/c", {"x": "b"}),
        (("/a/b/c", "/a/{x}/d", "/{y}/b/e"), "/a/b/e", "/{y}/b/e", {"y": "a"}),
    ],
)
def test_a_literal_segment_never_hides_a_deeper_parameter_route(routes, path, route, params):
    resource, request = resolved(tree_of(*routes), path)
    assert isinstance(resource, WebSocketEndpoint), (routes, path)
    assert resource.route.path == route
    assert getattr(request, "wsmux_path_params", {}) == params


def test_a_path_nothing_serves_is_still_unhandled():
    resource, _ = resolved(tree_of("/rooms/lobby", "/rooms/{room}/log"), "/rooms/lobby/other")
    assert isinstance(resource, UnhandledUpgrade)


def test_start_up_is_linear_in_routes(monkeypatch):
    # 10,000 routes took 97 s to start when each was checked against all
    # before it. Count the work per route instead of timing it: parsing a
    # path stays a few calls per route, and no route class is made before a
    # route is used.
    import wsmux._endpoint
    import wsmux._paths
    import wsmux.config
    import wsmux.protocol
    import wsmux.routing
    from wsmux.config import RouteSpec, build_settings
    from wsmux.service import build_tree

    counts = {"parse_path": 0, "route_protocol": 0}

    def counting(name, module, original):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counting("parse_path", wsmux.routing, wsmux.routing.parse_path)
    counting("parse_path", wsmux._paths, wsmux._paths.parse_path)
    counting("parse_path", wsmux.config, wsmux.config.parse_path)
    counting("route_protocol", wsmux.routing, wsmux.routing.route_protocol)
    counting("route_protocol", wsmux._endpoint, wsmux._endpoint.route_protocol)
    n = 2000
    routes = tuple(RouteSpec(f"/r{i}/{{x}}", ("echo",)) for i in range(n))
    tree = build_tree(build_settings({}, routes=routes))
    assert counts["parse_path"] <= 4 * n
    assert counts["route_protocol"] == 0
    tree.route_for("/r7/{x}").protocol_class(tree.route_for("/r7/{x}").route.handlers[0])
    assert counts["route_protocol"] == 1


def test_an_unmounted_route_stays_unhandled_beside_a_parameter_route():
    tree = tree_of("/rooms/lobby", "/rooms/{room}")
    tree.unmount("/rooms/lobby")
    resource, _ = resolved(tree, "/rooms/lobby")
    assert isinstance(resource, UnhandledUpgrade)


def test_the_most_specific_full_match_wins_for_plain_requests_too():
    from twisted.web.resource import Resource

    tree = tree_of("/rooms/lobby", "/{y}")
    health = Resource()
    tree.mount_resource("/healthz", health)
    # /rooms leads nowhere through the literal segment: the parameter route
    # serves it (a plain GET to a route is its 426).
    resource, request = resolved(tree, "/rooms", upgrade=False)
    assert isinstance(resource, WebSocketEndpoint) and resource.route.path == "/{y}"
    # An HTTP resource is a full match for a plain request...
    resource, _ = resolved(tree, "/healthz", upgrade=False)
    assert resource is health
    # ...but not for an upgrade, which the WebSocket route takes.
    resource, request = resolved(tree, "/healthz")
    assert isinstance(resource, WebSocketEndpoint) and request.wsmux_path_params == {"y": "healthz"}
