"""
HTTP resources beside the routes: where a request goes in the tree, what
the static files serve and refuse, and how the configuration declares them.
"""

import os

import pytest
from twisted.web.resource import Resource

from wsmux import Route, RouteError, RouteTree
from wsmux.config import ConfigError, build_settings, load_file, parse_resource_arg, static_arg
from wsmux.handlers import EchoHandler
from wsmux.resources import ResourceSpec, build_resource
from wsmux.testing import raw_connect, upgrade_request


@pytest.fixture
def public(tmp_path):
    root = tmp_path / "public"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "sub" / "a.css").write_text("body {}")
    (root / "nolisting").mkdir()
    (root / "nolisting" / "x.txt").write_text("x")
    (root / ".env").write_text("SECRET=1")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "out.txt")
    os.symlink(root / "sub" / "a.css", root / "in.css")
    return root


def get(tree, target):
    raw = raw_connect(tree)
    raw.send(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = raw.received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = dict(
        line.decode().lower().split(": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line
    )
    raw.restore_loop()
    return status, headers, body


class Where(Resource):
    # Says where it was mounted and what path it was given.
    isLeaf = True

    def __init__(self, name):
        super().__init__()
        self.name = name

    def render_GET(self, request):
        return b"%s pre=%s post=%s" % (
            self.name.encode(),
            b"/".join(request.prepath),
            b"/".join(request.postpath),
        )


def test_each_request_reaches_the_nearest_resource_or_route():
    tree = RouteTree([Route("/echo", EchoHandler), Route("/assets/live", EchoHandler)])
    tree.mount_subtree("/", Where("root"))
    tree.mount_subtree("/assets", Where("assets"))
    tree.mount_subtree("/a/b", Where("ab"))
    tree.mount_subtree(
        "/old", build_resource(ResourceSpec("/old", "redirect", "https://example.com/new"))
    )
    assert get(tree, "/")[2] == b"root pre= post="
    assert get(tree, "/x/y")[2] == b"root pre= post=x/y"
    assert get(tree, "/assets/app.js")[2] == b"assets pre=assets post=app.js"
    assert get(tree, "/assets")[2] == b"assets pre=assets post="
    assert get(tree, "/a/b/c/d")[2] == b"ab pre=a/b post=c/d"
    assert get(tree, "/a/c")[2] == b"root pre= post=a/c"  # no deeper resource: the root's
    assert get(tree, "/assets/live")[0] == 426  # a route's path stays the route's
    assert get(tree, "/echo")[0] == 426
    status, headers, body = get(tree, "/old/anything?q=1")
    assert (status, headers["location"]) == (302, "https://example.com/new")
    with pytest.raises(RouteError):
        tree.mount_subtree("/assets", Where("again"))
    with pytest.raises(RouteError):
        tree.mount_subtree("/rooms/{room}", Where("param"))


def test_an_upgrade_never_reaches_a_resource():
    tree = RouteTree([Route("/echo", EchoHandler)])
    tree.mount_subtree("/", Where("root"))
    raw = raw_connect(tree)
    raw.send(upgrade_request("/elsewhere"))
    assert raw.received.startswith(b"HTTP/1.1 404 ")
    raw.restore_loop()


def child(files, *segments):
    node = files
    for segment in segments:
        node = node.getChildWithDefault(segment.encode(), None)
    return node


def test_static_files_stay_inside_their_directory(public):
    files = build_resource(ResourceSpec("/", "static", str(public)))
    assert child(files, "sub", "a.css").path == str(public / "sub" / "a.css")
    assert child(files, "in.css").path == str(public / "in.css")  # a link that stays inside
    for segments in (
        ["..", "secret.txt"],
        ["sub", "..", "..", "secret.txt"],
        ["sub", "../../secret.txt"],  # an encoded slash arrives inside one segment
        ["out.txt"],  # a link that leads outside
        [".env"],  # dot files
        ["nolisting", ""],  # no listings
        ["sub", ""],
    ):
        assert child(files, *segments) is files.childNotFound, segments


def test_listings_and_dot_files_when_asked(public):
    files = build_resource(
        ResourceSpec("/", "static", str(public), {"listing": True, "dotfiles": True})
    )
    assert child(files, ".env").path == str(public / ".env")
    assert child(files, "nolisting", "") is not files.childNotFound
    assert child(files, "out.txt") is files.childNotFound  # never outside, even so


def test_resources_in_the_file_and_on_the_command_line(public, tmp_path):
    config = tmp_path / "wsmux.toml"
    config.write_text(
        "[[resources]]\npath = '/'\nstatic = 'public'\n\n"
        "[[resources]]\npath = '/api'\nwsgi = 'tests.handlers_for_tests:wsgi_app'\n\n"
        "[[resources]]\npath = '/old'\nredirect = 'https://example.com/'\nstatus = 301\n"
    )
    settings = build_settings(load_file(str(config)))
    assert [(r.path, r.kind) for r in settings.resources] == [
        ("/", "static"),
        ("/api", "wsgi"),
        ("/old", "redirect"),
    ]
    assert settings.resources[0].target == str(public)  # relative to the file
    assert not settings.index  # the demo page only when nothing else is asked for
    assert [r.path for r in settings.routes] == ["/echo", "/rooms/{room}"]
    # The command line replaces the file's resource at the same path.
    settings = build_settings(load_file(str(config)), resources=(static_arg(str(public / "sub")),))
    assert [r.target for r in settings.resources if r.path == "/"] == [str(public / "sub")]
    assert build_settings().index


@pytest.mark.parametrize(
    "table, words",
    [
        ("path = '/x'", "needs exactly one of static, wsgi, redirect, resource"),
        ("path = '/x'\nstatic = 'public'\nwsgi = 'a:b'", "needs exactly one of"),
        ("static = 'public'", "resources[0].path: is required"),
        ("path = '/{p}'\nstatic = 'public'", "cannot have parameters"),
        ("path = '/x'\nstatic = 'missing'", "does not exist"),
        ("path = '/x'\nstatic = 'public'\nlisting = 'yes'", "listing must be true or false"),
        ("path = '/x'\nstatic = 'public'\nstatus = 301", "unknown key 'status' for static"),
        ("path = '/x'\nredirect = 'ftp://x'", "redirect must be an http(s) URL"),
        ("path = '/x'\nredirect = '/y'\nstatus = 200", "status must be one of"),
        ("path = '/x'\nredirect = 'https://a/\\r\\nX: y'", "redirect must be"),
        ("path = '/x'\nredirect = '//evil.example/'", "redirect must be"),
        ("path = 'x'\nstatic = 'public'", "must start with '/'"),
    ],
)
def test_bad_resources_are_named(public, tmp_path, table, words):
    config = tmp_path / "wsmux.toml"
    config.write_text("[[resources]]\n" + table + "\n")
    with pytest.raises(ConfigError) as caught:
        load_file(str(config))
    assert words in str(caught.value)


def test_a_path_is_a_route_or_a_resource(public):
    from wsmux.config import parse_route_arg

    with pytest.raises(ConfigError, match="is a route already"):
        build_settings(
            routes=(parse_route_arg("/x=echo"),), resources=(parse_resource_arg("/x=a.b"),)
        )
    with pytest.raises(ConfigError, match="has a resource already"):
        build_settings(resources=(parse_resource_arg("/x=a.b"), parse_resource_arg("/x=c.d")))
    with pytest.raises(ConfigError, match="expected PATH=DOTTED.NAME"):
        parse_resource_arg("/x")
