"""
Settings: a TOML file and command-line values merged into one validated
L{Settings} object.

The file (all keys optional)::

    port = [8080, "tcp:8443:interface=127.0.0.1"]
    log_level = "info"            # debug, info, warn, error
    unhandled = "mypkg.hooks.unhandled"
    index = true                  # the demo page at /

    [limits]                      # server-wide limits
    max_connections = 10000

    [defaults]                    # protocol options every route inherits
    max_message_size = 1048576
    deflate = "on"

    [[routes]]
    path = "/chat/{room}"
    handler = "broadcast"         # or a list: tried in order
    allowed_origins = ["https://example.com"]   # per-route option overrides

    [[resources]]                 # HTTP resources beside the routes
    path = "/"
    static = "./public"           # or wsgi = "app:application", redirect = URL,
                                  # resource = "dotted.name"

Command-line values override the file.  Every error names the file and the
key.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from wsmux.bridge import EXEC_KEYS, ExecSpec
from wsmux.factory import OPTION_NAMES, ProtocolOptions
from wsmux.limits import LIMIT_NAMES, ServerLimits
from wsmux.logs import LOG_FORMATS, LOG_LEVELS
from wsmux.proxy import PROXY_KEYS, ProxySpec
from wsmux.resources import RESOURCE_KINDS, ResourceSpec, check_spec
from wsmux.routing import RouteClash, RouteError, canonical_path, check_clashes, parse_path
from wsmux.tls import HOST_NAME_RULE, TLS_VERSIONS, HostCertificate, TlsSettings, servable_name

DEFAULT_PORT = "8080"
DEFAULT_ROUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("/echo", ("echo",)),
    ("/rooms/{room}", ("broadcast",)),
)

_TOP_KEYS = {"port", "limits", "tls", "defaults", "routes", "resources"}  # and SETTINGS, below
_TLS_KEYS = {
    "cert", "key", "passphrase", "directory", "strict", "min_version", "http2", "ports", "shared_ports", "hosts",
}  # fmt: skip
_HOST_KEYS = {"name", "cert", "key", "passphrase"}
_ROUTE_KEYS = {"path", "handler"} | OPTION_NAMES
# Handlers with keys of their own: the keys, and what makes their spec.
_GATEWAYS: dict[str, tuple[frozenset[str], Callable[..., Any]]] = {
    "exec": (EXEC_KEYS, ExecSpec.from_table),
    "proxy": (PROXY_KEYS, ProxySpec.from_table),
}


class ConfigError(ValueError):
    """
    A setting is unknown, malformed or clashes with another.
    """


@dataclass(frozen=True)
class RouteSpec:
    """
    A route as configured: names, not yet imported classes.

    @ivar path: the path pattern.
    @ivar handlers: handler names (built-in or dotted paths), tried in order.
    @ivar options: per-route option overrides.
    @ivar origin: where it was configured, for error messages.
    @ivar exec: what an exec route (C{handler = "exec"}) runs.
    @ivar proxy: where a proxy route (C{handler = "proxy"}) relays to.
    """

    path: str
    handlers: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    origin: str = "command line"
    exec: Optional[ExecSpec] = None
    proxy: Optional[ProxySpec] = None


@dataclass(frozen=True)
class Settings:
    """
    Everything wsmux needs to run, validated.

    @ivar ports: Twisted endpoint descriptions to listen on.
    @ivar routes: the routes; the defaults when none were configured.
    @ivar defaults: protocol options every route inherits.
    @ivar unhandled: dotted path of the unhandled hook, if any.
    @ivar log_level: the lowest level logged.
    @ivar index: whether the demo page answers C{GET /}.
    @ivar limits: server-wide limits.
    @ivar tls: certificates, by host name.
    @ivar tls_ports: ports that speak TLS only.
    @ivar shared_ports: ports that take TLS and plain connections alike.
    @ivar metrics_path: where the route tree serves Prometheus metrics, if anywhere.
    @ivar metrics_port: a port of its own for the metrics, if any.
    @ivar health_path: where the health check answers (empty: nowhere).
    @ivar log_format: C{text} or C{json} (lines with stable keys).
    @ivar status_path: where the status page is served, if anywhere.
    @ivar status_token: a token that opens the status page from anywhere.
    @ivar status_allow: addresses or networks that may see the status
        (loopback only when neither this nor a token is set).
    @ivar redis: C{redis://HOST:PORT/DB}: channels go through Redis pub/sub.
    @ivar workers: how many worker processes serve the ports (1: this one).
    @ivar port_file: where to write the bound addresses once listening.
    @ivar resources: HTTP resources mounted beside the routes.
    """

    ports: tuple[str, ...] = (DEFAULT_PORT,)
    routes: tuple[RouteSpec, ...] = ()
    defaults: ProtocolOptions = field(default_factory=ProtocolOptions)
    unhandled: Optional[str] = None
    log_level: str = "info"
    index: bool = True
    limits: ServerLimits = field(default_factory=ServerLimits)
    tls: TlsSettings = field(default_factory=TlsSettings)
    tls_ports: tuple[str, ...] = ()
    shared_ports: tuple[str, ...] = ()
    metrics_path: Optional[str] = None
    metrics_port: Optional[str] = None
    health_path: str = "/healthz"
    log_format: str = "text"
    status_path: Optional[str] = None
    status_token: Optional[str] = None
    status_allow: tuple[str, ...] = ()
    redis: Optional[str] = None
    workers: int = 1
    port_file: Optional[str] = None
    resources: tuple[ResourceSpec, ...] = ()


def port_description(port: str) -> str:
    """
    Turn a C{--port} value into a Twisted endpoint description.

    A bare number means TCP on every interface: IPv6 and IPv4 on one
    dual-stack socket where the host has IPv6, IPv4 otherwise.  Anything else
    is taken as an endpoint description as it is.
    """
    port = str(port).strip()
    if port.isdigit():
        if _has_ipv6():
            return f"tcp6:{port}:interface=\\:\\:"
        return f"tcp:{port}"
    return port


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", 0))
    except OSError:
        return False
    return True


# -- server-wide settings: each declared once --------------------------------
#
# A setting's TOML key, its twistd flag, its help text and its check come
# from one declaration below; the flags of protocol options and server
# limits come from the fields of ProtocolOptions and ServerLimits.


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return check


def _dotted(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be the dotted path of a callable")
    return value


def _token(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _file_name(value: Any) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError("must be a file name")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _http_path(empty: Any) -> Callable[[Any], Any]:
    # A path such as /metrics; "" means nowhere (returned as `empty`).
    def check(value: Any) -> Any:
        if not isinstance(value, str) or (value and not value.startswith("/")):
            raise ValueError('must be a path such as /metrics (or "" for none)')
        return value or empty

    return check


def _one_port(value: Any) -> str:
    ports = _ports(value)
    if ports is None or len(ports) != 1:
        raise ValueError("must be one port number or endpoint description")
    return ports[0]


def networks(value: Any) -> tuple[str, ...]:
    """
    Addresses or networks: a list, or (from a flag) a comma-separated
    string.

    @raise ValueError: naming the first that is neither.
    """
    import ipaddress

    if isinstance(value, str):
        items: list[Any] = [item.strip() for item in value.split(",") if item.strip()]
    else:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        try:
            ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an address or network such as 10.0.0.0/8") from None
    return tuple(str(i) for i in items)


def _redis_url(value: Any) -> str:
    from wsmux.redis_channels import parse_redis_url

    parse_redis_url(str(value))
    return str(value)


def _workers(value: Any) -> int:
    try:
        return resolve_workers(str(value))
    except ValueError:
        raise ValueError(f"must be a number of processes or auto, got {value!r}") from None


def tls_from_flags(
    directory: Optional[str] = None,
    cert: Optional[str] = None,
    key: Optional[str] = None,
    strict: bool = False,
    min_version: Optional[str] = None,
    no_http2: bool = False,
) -> dict[str, Any]:
    """
    The command line's C{[tls]} overrides (C{--certs}, C{--cert}, C{--key},
    C{--tls-strict}, C{--tls-min-version}, C{--no-http2}), checked as the
    file's are.

    @raise ConfigError: naming the flag.
    """
    tls: dict[str, Any] = {}
    if directory:
        tls["directory"] = directory
    default = _tls_default(cert, key, None)
    if default is None and key:
        raise ConfigError(f"--key {_KEY_WITHOUT_CERT.format(cert='--cert')}")
    if default is not None:
        tls["default"] = default
    if strict:
        tls["strict"] = True
    if no_http2:
        tls["http2"] = False
    if min_version:
        try:
            tls["min_version"] = tls_min_version(min_version)
        except ValueError as e:
            raise ConfigError(f"--tls-min-version: {e}") from None
    return tls


# Said of a key given without its certificate (the flag or the file key).
_KEY_WITHOUT_CERT = "needs {cert} next to it"


def _tls_default(
    cert: Optional[str], key: Optional[str], passphrase: Optional[str]
) -> Optional[HostCertificate]:
    # The default certificate of the file's [tls] table or of the flags.
    if not cert:
        return None
    return HostCertificate("", cert, key or "", passphrase)


def tls_min_version(value: Any) -> str:
    """
    The check of C{[tls] min_version} and C{--tls-min-version}.
    """
    return _choice(*TLS_VERSIONS)(value)


@dataclass(frozen=True)
class Setting:
    """
    One server-wide setting.

    @ivar name: its key in the settings file, and its field of L{Settings}.
    @ivar help: what it does, for C{--help} and the reference.
    @ivar check: turns a value (from the file, from a flag's text, or from
        Python) into the setting's value; raises L{ValueError} saying why
        it cannot.
    @ivar flag: its C{twistd wsmux} flag, if it has one.
    """

    name: str
    help: str
    check: Callable[[Any], Any]
    flag: Optional[str] = None

    @property
    def default(self) -> Any:
        return _SETTINGS_DEFAULTS.get(self.name)


SETTINGS: tuple[Setting, ...] = (
    Setting("log_level", "Lowest level logged: " + ", ".join(LOG_LEVELS) + ".",
            _choice(*LOG_LEVELS), "log-level"),
    Setting("log_format", "text (for people) or json (lines for log shippers).",
            _choice(*LOG_FORMATS), "log-format"),
    Setting("unhandled", "Dotted path of the hook for upgrades no route serves.",
            _dotted, "unhandled"),
    Setting("index", "Serve the demo page at / (on by default with the default routes only).",
            _flag),
    Setting("metrics_path", "Serve Prometheus metrics at this path (e.g. /metrics).",
            _http_path(None), "metrics-path"),
    Setting("metrics_port", "Serve Prometheus metrics on a port of their own.",
            _one_port, "metrics-port"),
    Setting("health_path", 'Where the health check answers ("" for nowhere).',
            _http_path(""), "health-path"),
    Setting("status_path", "Serve the status page here (e.g. /status); off by default.",
            _http_path(None), "status-path"),
    Setting("status_token", "A token that opens the status page from any address.",
            _token, "status-token"),
    Setting("status_allow", "Addresses or networks that may see the status page "
            "(comma-separated on the command line) [default: loopback].",
            networks, "status-allow"),
    Setting("redis", "redis://HOST:PORT/DB: channels reach every wsmux on that Redis.",
            _redis_url, "redis"),
    Setting("workers", "Serve the ports from N worker processes (or auto: one per core).",
            _workers, "workers"),
    Setting("port_file", "Once listening, write where to this file, one line per port: "
            "KIND HOST PORT (for --port 0).", _file_name, "port-file"),
)  # fmt: skip
_SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}
_SETTINGS_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}


def read_file(path: str) -> bytes:
    """
    The bytes of a settings file.

    @raise ConfigError: naming the file, if it cannot be read.
    """
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


def load_file(path: str, raw: Optional[bytes] = None) -> dict[str, Any]:
    """
    Read and check the shape of a TOML settings file.

    @param raw: the file's bytes, when they have been read already (a
        worker is given the copy its supervisor parsed); file names in it
        are still relative to C{path}'s directory.
    @return: the file's values, checked but not yet merged.
    @raise ConfigError: naming the file and the key.
    """
    if raw is None:
        raw = read_file(path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {why}")

    known = _TOP_KEYS | set(_SETTINGS_BY_NAME)
    unknown = set(data) - known
    if unknown:
        raise bad(sorted(unknown)[0], "unknown key (known: " + ", ".join(sorted(known)) + ")")

    out: dict[str, Any] = {}
    if "port" in data:
        ports = data["port"] if isinstance(data["port"], list) else [data["port"]]
        if not ports or not all(
            isinstance(p, (int, str)) and not isinstance(p, bool) for p in ports
        ):
            raise bad("port", "must be a port number, an endpoint description, or a list of them")
        out["ports"] = tuple(str(p) for p in ports)
    for setting in SETTINGS:
        if setting.name in data:
            try:
                out[setting.name] = setting.check(data[setting.name])
            except ValueError as e:
                raise bad(setting.name, str(e)) from None
    if "limits" in data:
        limits = data["limits"]
        if not isinstance(limits, dict):
            raise bad("limits", "must be a table of server limits")
        out["limits"] = _checked(limits, "limits", ServerLimits(), LIMIT_NAMES, "limit", bad)
    if "tls" in data:
        out.update(_tls_table(data["tls"], path, bad))
    if "defaults" in data:
        defaults = data["defaults"]
        if not isinstance(defaults, dict):
            raise bad("defaults", "must be a table of protocol options")
        out["defaults"] = _options(defaults, "defaults", bad)
    if "routes" in data:
        routes = data["routes"]
        if not isinstance(routes, list) or not all(isinstance(r, dict) for r in routes):
            raise bad("routes", "must be an array of tables ([[routes]])")
        out["routes"] = tuple(_route(r, f"routes[{i}]", path, bad) for i, r in enumerate(routes))
    if "resources" in data:
        resources = data["resources"]
        if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
            raise bad("resources", "must be an array of tables ([[resources]])")
        out["resources"] = tuple(
            _resource(r, f"resources[{i}]", path, bad) for i, r in enumerate(resources)
        )
    return out


def _resource(table: dict[str, Any], where: str, path: str, bad: Any) -> ResourceSpec:
    if not isinstance(table.get("path"), str):
        raise bad(f"{where}.path", 'is required and must be a string such as "/static"')
    kinds = [k for k in RESOURCE_KINDS if k in table]
    if len(kinds) != 1:
        raise bad(where, "needs exactly one of " + ", ".join(RESOURCE_KINDS))
    kind = kinds[0]
    target = table[kind]
    if not isinstance(target, str) or not target:
        raise bad(f"{where}.{kind}", "must be a non-empty string")
    if kind == "static":
        target = str(Path(path).parent / target)  # relative to the file
    options = {k: v for k, v in table.items() if k not in ("path", kind)}
    spec = ResourceSpec(table["path"], kind, target, options, f"{path} {where}")
    try:
        _check_resource(spec)
    except ValueError as e:
        raise bad(where, str(e)) from None
    return spec


def _check_resource(spec: ResourceSpec) -> None:
    parsed = parse_path(spec.path)
    if any(not isinstance(segment, bytes) for segment in parsed):
        raise ValueError(f"path {spec.path!r}: a resource path cannot have parameters")
    check_spec(spec)


def parse_resource_arg(value: str) -> ResourceSpec:
    """
    Parse a C{--resource PATH=DOTTED.NAME} value.

    @raise ConfigError: if it is malformed.
    """
    path, sep, name = value.partition("=")
    if not sep or not path or not name:
        raise ConfigError(
            f"--resource {value!r}: expected PATH=DOTTED.NAME, such as /api=myapp.web.root"
        )
    spec = ResourceSpec(path, "resource", name.strip(), {}, f"--resource {value}")
    try:
        _check_resource(spec)
    except (ValueError, RouteError) as e:
        raise ConfigError(f"--resource {value!r}: {e}") from None
    return spec


def static_arg(directory: str) -> ResourceSpec:
    """
    C{--static DIR}: static files at C{/}.

    @raise ConfigError: if the directory does not exist.
    """
    spec = ResourceSpec("/", "static", directory, {}, f"--static {directory}")
    try:
        check_spec(spec)
    except ValueError as e:
        raise ConfigError(f"--static: {e}") from None
    return spec


def _ports(value: Any) -> Optional[tuple[str, ...]]:
    ports = value if isinstance(value, list) else [value]
    if not ports or not all(isinstance(p, (int, str)) and not isinstance(p, bool) for p in ports):
        return None
    return tuple(str(p) for p in ports)


def _tls_table(table: Any, path: str, bad: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise bad("tls", "must be a table")
    unknown = set(table) - _TLS_KEYS
    if unknown:
        raise bad(
            f"tls.{sorted(unknown)[0]}", "unknown key (known: " + ", ".join(sorted(_TLS_KEYS)) + ")"
        )
    base = Path(path).parent

    def file(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise bad(key, "must be a file name")
        return str(base / value)

    out: dict[str, Any] = {}
    for key in ("ports", "shared_ports"):
        if key in table:
            ports = _ports(table[key])
            if ports is None:
                raise bad(
                    f"tls.{key}",
                    "must be a port number, an endpoint description, or a list of them",
                )
            out["tls_ports" if key == "ports" else "shared_ports"] = ports
    for key in ("strict", "http2"):
        if key in table and not isinstance(table[key], bool):
            raise bad(f"tls.{key}", "must be true or false")
    if "min_version" in table:
        try:
            tls_min_version(table["min_version"])
        except ValueError as e:
            raise bad("tls.min_version", str(e)) from None
    if "passphrase" in table and not isinstance(table["passphrase"], str):
        raise bad("tls.passphrase", "must be a string")
    default = _tls_default(
        file("tls.cert", table["cert"]) if "cert" in table else None,
        file("tls.key", table["key"]) if "key" in table else None,
        table.get("passphrase"),
    )
    if default is None and "key" in table:
        raise bad("tls.key", _KEY_WITHOUT_CERT.format(cert="tls.cert"))
    hosts = []
    entries = table.get("hosts", [])
    if not isinstance(entries, list) or not all(isinstance(h, dict) for h in entries):
        raise bad("tls.hosts", "must be an array of tables ([[tls.hosts]])")
    for i, host in enumerate(entries):
        where = f"tls.hosts[{i}]"
        unknown = set(host) - _HOST_KEYS
        if unknown:
            raise bad(
                f"{where}.{sorted(unknown)[0]}",
                "unknown key (a host has name, cert, key, passphrase)",
            )
        name = host.get("name")
        if not isinstance(name, str) or not servable_name(name):
            shown = repr(name[:64] + "..." if isinstance(name, str) and len(name) > 64 else name)
            raise bad(
                f"{where}.name",
                f"must be a host name such as example.com or *.example.com ({HOST_NAME_RULE}), "
                f"not {shown}",
            )
        if "cert" not in host:
            raise bad(f"{where}.cert", "is required")
        hosts.append(
            HostCertificate(
                name, file(f"{where}.cert", host["cert"]),
                file(f"{where}.key", host["key"]) if "key" in host else "", host.get("passphrase"),
            )
        )  # fmt: skip
    directory = file("tls.directory", table["directory"]) if "directory" in table else None
    out["tls"] = TlsSettings(
        default=default,
        hosts=tuple(hosts),
        directory=directory,
        strict=table.get("strict", False),
        min_version=table.get("min_version", "1.2"),
        http2=table.get("http2", True),
    )
    return out


def _options(table: dict[str, Any], where: str, bad: Any) -> dict[str, Any]:
    return _checked(table, where, ProtocolOptions(), OPTION_NAMES, "option", bad)


def _checked(
    table: dict[str, Any], where: str, prototype: Any, names: frozenset[str], kind: str, bad: Any
) -> dict[str, Any]:
    """
    Check each key of C{table} against the fields of C{prototype}'s class.
    """
    for key, value in table.items():
        if key not in names:
            raise bad(f"{where}.{key}", f"unknown {kind} (known: " + ", ".join(sorted(names)) + ")")
        try:
            prototype.merged({key: value})
        except (ValueError, TypeError) as e:
            raise bad(f"{where}.{key}", str(e)) from None
    return dict(table)


def _route(table: dict[str, Any], where: str, path: str, bad: Any) -> RouteSpec:
    # The exec and proxy handlers take keys of their own beside the
    # protocol options: their spec is made from those.
    specs: dict[str, Any] = {"exec": None, "proxy": None}
    kind = table.get("handler")
    if isinstance(kind, str) and kind in _GATEWAYS:
        keys, make = _GATEWAYS[kind]
        try:
            specs[kind] = make(
                {k: v for k, v in table.items() if k in keys}, str(Path(path).parent)
            )
        except ValueError as e:
            raise bad(where, str(e)) from None
        table = {k: v for k, v in table.items() if k not in keys}
    unknown = set(table) - _ROUTE_KEYS
    if unknown:
        raise bad(
            f"{where}.{sorted(unknown)[0]}",
            "unknown key (a route has path, handler and protocol options)",
        )
    if not isinstance(table.get("path"), str):
        raise bad(f"{where}.path", 'is required and must be a string such as "/chat"')
    handler = table.get("handler")
    handlers = handler if isinstance(handler, list) else [handler]
    if not handlers or not all(isinstance(h, str) and h for h in handlers):
        raise bad(f"{where}.handler", "is required: a handler name or a list of them")
    try:
        parse_path(table["path"])
    except RouteError as e:
        raise bad(f"{where}.path", str(e)) from None
    options = {k: v for k, v in table.items() if k not in ("path", "handler")}
    return RouteSpec(
        table["path"],
        tuple(str(h) for h in handlers),
        _options(options, where, bad),
        f"{path} {where}",
        specs["exec"],
        specs["proxy"],
    )


def parse_route_arg(value: str) -> RouteSpec:
    """
    Parse a C{--route PATH=HANDLER} value (C{HANDLER} may be a
    comma-separated chain).

    @raise ConfigError: if it is malformed.
    """
    path, sep, handler = value.partition("=")
    if not sep or not path or not handler:
        raise ConfigError(f"--route {value!r}: expected PATH=HANDLER, such as /echo=echo")
    try:
        parse_path(path)
    except RouteError as e:
        raise ConfigError(f"--route {value!r}: {e}") from None
    if handler.startswith("exec:"):
        try:
            spec = ExecSpec.from_arg(handler[5:])
        except ValueError as e:
            raise ConfigError(f"--route {value!r}: {e}") from None
        return RouteSpec(path, ("exec",), {}, f"--route {value}", spec)
    if handler.startswith("proxy:"):
        try:
            proxy = ProxySpec.from_arg(handler[6:])
        except ValueError as e:
            raise ConfigError(f"--route {value!r}: {e}") from None
        return RouteSpec(path, ("proxy",), {}, f"--route {value}", proxy=proxy)
    return RouteSpec(path, tuple(h.strip() for h in handler.split(",")), {}, f"--route {value}")


def build_settings(
    file_values: Optional[dict[str, Any]] = None,
    ports: tuple[str, ...] = (),
    routes: tuple[RouteSpec, ...] = (),
    resources: tuple[ResourceSpec, ...] = (),
    defaults: Optional[dict[str, Any]] = None,
    limits: Optional[dict[str, Any]] = None,
    tls: Optional[dict[str, Any]] = None,
    tls_ports: tuple[str, ...] = (),
    shared_ports: tuple[str, ...] = (),
    source: str = "settings",
    **values: Any,
) -> Settings:
    """
    Merge file values with command-line values (which win) into L{Settings}.

    A command-line route replaces a file route with the same path.  When no
    route is configured at all, the default routes apply.

    @param file_values: what L{load_file} read.
    @param defaults: protocol options every route inherits.
    @param limits: server limits.
    @param tls: L{TlsSettings} fields.
    @param values: any of the L{SETTINGS} by name (C{log_level="debug"},
        C{workers="auto"}...); L{None} means not given.  Each is checked as
        its flag's value is.
    @raise ConfigError: on an unknown name, a bad value or a route clash.
    """
    file_values = file_values or {}
    chosen: dict[str, Any] = {}
    for name, value in values.items():
        setting = _SETTINGS_BY_NAME.get(name)
        if setting is None:
            raise ConfigError(f"{source}: unknown setting {name!r}")
        if value is None:
            continue
        try:
            chosen[name] = setting.check(value)
        except ValueError as e:
            raise ConfigError(f"{_said(setting)}: {e}") from None
    for setting in SETTINGS:
        if setting.name not in chosen and setting.name in file_values:
            chosen[setting.name] = file_values[setting.name]
    merged_defaults = dict(file_values.get("defaults", {}))
    merged_defaults.update(defaults or {})
    merged_limits = dict(file_values.get("limits", {}))
    merged_limits.update(limits or {})
    if "channel_namespace" in merged_defaults:
        # One namespace for every route would undo what keeping each
        # route's channels to itself is for.
        raise ConfigError(
            f"{source}: channel_namespace is set per route (routes that share "
            "channels each name the same one), not in [defaults]"
        )
    try:
        options = ProtocolOptions().merged(merged_defaults)
        server_limits = ServerLimits().merged(merged_limits)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: {e}") from None

    cli_paths = {r.path for r in routes}
    file_routes = tuple(r for r in file_values.get("routes", ()) if r.path not in cli_paths)
    all_routes = file_routes + tuple(routes)
    # Command-line resources replace file resources at the same path.
    cli_resources = {canonical_path(r.path) for r in resources}
    all_resources = tuple(
        r for r in file_values.get("resources", ()) if canonical_path(r.path) not in cli_resources
    ) + tuple(resources)
    _check_resource_paths(all_resources, all_routes)
    # The demo page only where nothing else was asked for.
    chosen.setdefault("index", not all_routes and not all_resources)
    if not all_routes:
        all_routes = tuple(RouteSpec(p, h, {}, "default routes") for p, h in DEFAULT_ROUTES)
    status_path = chosen.get("status_path")
    if status_path:
        live = RouteSpec(status_path.rstrip("/") + "/live", ("echo",), {}, "the status page")
        _check_clashes(all_routes + (live,))
    else:
        _check_clashes(all_routes)

    tls_settings = file_values.get("tls", TlsSettings())
    if tls:
        tls_settings = dataclasses.replace(tls_settings, **tls)
    tls_ports = tuple(tls_ports) or file_values.get("tls_ports", ())
    shared_ports = tuple(shared_ports) or file_values.get("shared_ports", ())
    if (tls_ports or shared_ports) and not tls_settings.configured:
        raise ConfigError(
            f"{source}: a TLS port needs certificates: --certs DIR, --cert FILE, or the [tls] table"
        )
    plain_ports = tuple(ports) or file_values.get("ports", ())
    if not plain_ports and not (tls_ports or shared_ports):
        plain_ports = (DEFAULT_PORT,)

    return Settings(
        ports=plain_ports,
        routes=all_routes,
        defaults=options,
        limits=server_limits,
        tls=tls_settings,
        tls_ports=tls_ports,
        shared_ports=shared_ports,
        resources=all_resources,
        **chosen,
    )


def _check_resource_paths(
    resources: tuple[ResourceSpec, ...], routes: tuple[RouteSpec, ...]
) -> None:
    # A path is a route or a resource, never both; one resource per path.
    if not resources:
        return
    seen: dict[str, ResourceSpec] = {}
    route_paths = {canonical_path(r.path): r for r in routes}
    for spec in resources:
        where = canonical_path(spec.path)
        if where in seen:
            raise ConfigError(
                f"{spec.origin}: {spec.path} has a resource already ({seen[where].origin})"
            )
        seen[where] = spec
        if where in route_paths:
            raise ConfigError(
                f"{spec.origin}: {spec.path} is a route already ({route_paths[where].origin}); "
                "a path is a route or a resource"
            )


def _said(setting: Setting) -> str:
    # How an error names a setting given on the command line (or in Python).
    return f"--{setting.flag}" if setting.flag else setting.name


def _check_clashes(routes: tuple[RouteSpec, ...]) -> None:
    # One pass; the error names where the route that clashes was configured.
    try:
        check_clashes([r.path for r in routes])
    except RouteClash as e:
        raise ConfigError(f"{routes[e.index].origin}: {e}") from None


def resolve_workers(value: str) -> int:
    """
    C{--workers}: a count, or C{auto} for one per core.

    @raise ValueError: for anything else.
    """
    if value == "auto":
        return os.cpu_count() or 1
    count = int(value)
    if count < 1:
        raise ValueError("--workers must be at least 1 (or auto)")
    return count
