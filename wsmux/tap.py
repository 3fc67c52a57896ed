"""
The C{twistd wsmux} command line.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, NoReturn

from twisted.application.service import IService, MultiService
from twisted.python import usage

from wsmux.config import (
    SETTINGS,
    ConfigError,
    RouteSpec,
    build_settings,
    load_file,
    networks,
    parse_resource_arg,
    parse_route_arg,
    port_description,
    read_file,
    static_arg,
    tls_from_flags,
)
from wsmux.factory import _FIELD_TYPES, ProtocolOptions
from wsmux.limits import ServerLimits
from wsmux.logs import LOG_LEVELS, LogLevelService, log, use_json_for_twistd
from wsmux.service import FreezeHeapService, load_certificates, make_service
from wsmux.tls import TLS_VERSIONS, CertificateError
from wsmux.workers import (
    StopOnTerm,
    WorkerSupervisor,
    ignore_hangup,
    parse_worker_sockets,
    tcp_address,
    worker_argv,
)


def _non_negative(convert: Any, what: str) -> Any:
    """
    A parser for a flag's value: C{convert}ed, and not negative.
    """

    def parse(value: str) -> Any:
        try:
            number = convert(value)
        except ValueError:
            raise usage.UsageError(f"{value!r} is not {what}") from None
        if number < 0:
            raise usage.UsageError(f"{value!r}: {what} cannot be negative")
        return number

    return parse


def _networks(value: str) -> tuple[str, ...]:
    # A comma-separated list of addresses or networks, checked as the
    # file's lists are.
    try:
        return networks(value)
    except ValueError as e:
        raise usage.UsageError(str(e)) from None


# How a flag's text becomes a number, by the field's type.
_PARSERS: dict[Any, Any] = {
    int: _non_negative(int, "a number of bytes"),
    float: _non_negative(float, "a number of seconds"),
    tuple: _networks,
}
_COUNT = _non_negative(int, "a whole number")

# Protocol options every route inherits, settable by a flag: the flag is
# the option's name with dashes, but for --handshake-timeout.
_DEFAULT_FLAGS = {
    "max-message-size": "max_message_size",
    "max-frame-size": "max_frame_size",
    "ping-interval": "ping_interval",
    "ping-timeout": "ping_timeout",
    "idle-timeout": "idle_timeout",
    "handshake-timeout": "open_handshake_timeout",
    "max-send-queue": "max_send_queue",
    "slow-consumer": "slow_consumer",
    "deflate-threshold": "deflate_threshold",
    "deflate-level": "deflate_level",
    "deflate-mem-level": "deflate_mem_level",
    "deflate-server-max-window-bits": "deflate_server_max_window_bits",
    "deflate-client-max-window-bits": "deflate_client_max_window_bits",
}
# Server limits settable by a flag (the limit's name with dashes).
_LIMIT_FLAGS = (
    "max-connections",
    "max-connections-per-ip",
    "max-body-size",
    "trusted-proxies",
    "trusted-proxy-networks",
    "forwarded-header",
    "drain-timeout",
)


# Options counted in bytes (the others that are whole numbers are counts).
_BYTE_NAMES = ("_size", "_queue", "_threshold")
_NO_CONTEXT_HELP = next(
    f.metadata["help"]
    for f in dataclasses.fields(ProtocolOptions)
    if f.name == "deflate_server_no_context_takeover"
)


def _field_flags() -> list[list[Any]]:
    # The flags of protocol options and limits, from their fields' help
    # (wsmux.factory.ProtocolOptions, wsmux.limits.ServerLimits).
    options = {f.name: f for f in dataclasses.fields(ProtocolOptions)}
    limits = {f.name: f for f in dataclasses.fields(ServerLimits)}
    rows: list[list[Any]] = []
    for flag, name in _DEFAULT_FLAGS.items():
        f = options[name]
        kind = _FIELD_TYPES[name]
        parse = _COUNT if kind is int and not name.endswith(_BYTE_NAMES) else _PARSERS.get(kind)
        rows.append([flag, None, None, f"{f.metadata['help']} (Every route's default.)", parse])
    for flag in _LIMIT_FLAGS:
        f = limits[flag.replace("-", "_")]
        kind = type(f.default)
        parse = _COUNT if kind is int and "bytes" not in f.metadata["help"] else _PARSERS.get(kind)
        rows.append([flag, None, None, f.metadata["help"], parse])
    return rows


def _setting_flags() -> list[list[Any]]:
    # The flags of server-wide settings, from wsmux.config.SETTINGS (checked
    # there, with the file's values).
    return [
        [s.flag, None, None, s.help + (f" [default: {s.default}]" if s.default else "")]
        for s in SETTINGS
        if s.flag
    ]


class Options(usage.Options):
    """
    Options for C{twistd wsmux}.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve WebSocket endpoints chosen by URL path. With no routes "
        "configured, an echo route at /echo, broadcast rooms at /rooms/{room} "
        "and a demo page at / are served."
    )

    optParameters = [
        ["config", "c", None, "TOML settings file; command-line flags override it."],
        *_setting_flags(),
        *_field_flags(),
        [
            "certs",
            None,
            None,
            "Directory of <hostname>.pem files and DEFAULT.pem (chain, then key).",
        ],
        ["cert", None, None, "Default certificate chain (PEM)."],
        ["key", None, None, "Private key of --cert (PEM); --cert's file when not given."],
        [
            "tls-min-version",
            None,
            None,
            f"Lowest TLS version: {' or '.join(TLS_VERSIONS)} [default: 1.2]",
        ],
        ["worker-sockets", None, None, "(internal) the sockets a worker process adopts."],
        [
            "config-snapshot",
            None,
            None,
            "(internal) the copy of --config a worker's supervisor parsed, read instead of it.",
        ],
    ]
    optFlags = [
        ["tls-strict", None, "Refuse unknown server names with an unrecognized_name alert."],
        [
            "no-http2",
            None,
            "Offer HTTP/1.1 only on TLS ports (by default they offer HTTP/2 too, WebSockets "
            "included, when the http2 extra is installed).",
        ],
        [
            "deflate-server-no-context-takeover",
            None,
            _NO_CONTEXT_HELP + " (Every route's default.)",
        ],
    ]

    compData = usage.Completions(optActions={"log-level": usage.CompleteList(list(LOG_LEVELS))})

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["tls-ports"] = []
        self["shared-ports"] = []
        self["routes"] = []
        self["resources"] = []
        self["deflate"] = None

    def opt_port(self, port: str) -> None:
        """
        Listen here: a port number (TCP on all interfaces) or a Twisted endpoint description. Repeatable. [default: 8080]
        """
        self["ports"].append(port)

    opt_p = opt_port

    def opt_tls_port(self, port: str) -> None:
        """
        Listen for TLS (wss://) here: a port number or an endpoint description. Repeatable.
        """
        self["tls-ports"].append(port)

    def opt_shared_port(self, port: str) -> None:
        """
        Listen here for TLS and plain connections alike (the first byte decides). Repeatable.
        """
        self["shared-ports"].append(port)

    def opt_route(self, value: str) -> None:
        """
        Serve HANDLER at PATH (PATH=HANDLER). HANDLER is echo, echo-async, broadcast, pubsub, the dotted path of a WebSocketServerProtocol subclass or of an async def function, exec:COMMAND (a program per connection) or proxy:URL (relayed to a WebSocket backend); a comma-separated list is tried in order. PATH may hold parameters: /rooms/{room}. Repeatable.
        """
        try:
            self["routes"].append(parse_route_arg(value))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    opt_r = opt_route

    def opt_resource(self, value: str) -> None:
        """
        Serve a twisted.web resource at PATH and below it, for plain HTTP requests (PATH=DOTTED.NAME: a resource, or a class or function that makes one). Repeatable.
        """
        try:
            self["resources"].append(parse_resource_arg(value))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def opt_static(self, directory: str) -> None:
        """
        Serve the files of DIRECTORY at / (no directory listings, nothing outside it).
        """
        try:
            self["resources"].append(static_arg(directory))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def opt_deflate(self) -> None:
        """
        Accept permessage-deflate by default.
        """
        self["deflate"] = "on"

    def opt_no_deflate(self) -> None:
        """
        Refuse permessage-deflate by default (the default).
        """
        self["deflate"] = "off"

    def opt_inflate_only(self) -> None:
        """
        Accept compressed messages but never compress ours, by default.
        """
        self["deflate"] = "inflate-only"

    def postOptions(self) -> None:
        defaults = {
            name: self[flag] for flag, name in _DEFAULT_FLAGS.items() if self[flag] is not None
        }
        if self["deflate"] is not None:
            defaults["deflate"] = self["deflate"]
        if self["deflate-server-no-context-takeover"]:
            defaults["deflate_server_no_context_takeover"] = True
        limits = {
            flag.replace("-", "_"): self[flag] for flag in _LIMIT_FLAGS if self[flag] is not None
        }
        given = {s.name: self[s.flag] for s in SETTINGS if s.flag and self[s.flag] is not None}
        try:
            tls = tls_from_flags(
                self["certs"], self["cert"], self["key"], bool(self["tls-strict"]),
                self["tls-min-version"], bool(self["no-http2"]),
            )  # fmt: skip
            self.config_bytes = None
            if self["config"]:
                self.config_bytes = read_file(self["config-snapshot"] or self["config"])
            file_values = load_file(self["config"], self.config_bytes) if self["config"] else {}
            routes: tuple[RouteSpec, ...] = tuple(self["routes"])
            self.settings = build_settings(
                file_values,
                ports=tuple(self["ports"]),
                routes=routes,
                resources=tuple(self["resources"]),
                defaults=defaults,
                limits=limits,
                tls=tls,
                tls_ports=tuple(self["tls-ports"]),
                shared_ports=tuple(self["shared-ports"]),
                source=self["config"] or "command line",
                **given,
            )
            if self.settings.log_format == "json" and self.parent is not None:
                use_json_for_twistd(self.parent)
            # Import handlers and the hook now: a typo is a usage error, not
            # a traceback later.
            self._check_imports()
            self.adopted = None
            if self["worker-sockets"]:
                try:
                    self.adopted = parse_worker_sockets(self["worker-sockets"])
                except ValueError as e:
                    raise ConfigError(str(e)) from None
            else:
                self._check_ports()
                if self.settings.workers > 1:
                    self._check_worker_ports()
            # Certificates are read when the service is made (makeService),
            # not here: parsing options opens no certificate or key file.
            self.contexts = None
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def _check_ports(self) -> None:
        # Parse every endpoint description now (twistd has installed its
        # reactor by the time a subcommand's options are parsed), so a typo
        # or a missing systemd socket is a usage error, not a traceback.
        from twisted.internet import endpoints, reactor

        settings = self.settings
        for flag, ports in (
            ("--port", settings.ports),
            ("--tls-port", settings.tls_ports),
            ("--shared-port", settings.shared_ports),
            ("--metrics-port", (settings.metrics_port,) if settings.metrics_port else ()),
        ):
            for port in ports:
                try:
                    # (A bare number is checked as TCP: working out
                    # whether the host has IPv6 opens a socket, and option
                    # parsing does no I/O.)
                    described = f"tcp:{port}" if str(port).strip().isdigit() else port
                    endpoints.serverFromString(reactor, port_description(described))
                except Exception as e:
                    raise ConfigError(
                        f"{flag} {port!r} is not a usable endpoint: {e.__class__.__name__}: {e}"
                    ) from None

    def _check_worker_ports(self) -> None:
        settings = self.settings
        if settings.metrics_port:
            raise ConfigError("--metrics-port does not go with --workers: use --metrics-path")
        for port in settings.ports + settings.tls_ports + settings.shared_ports:
            try:
                tcp_address(port)
            except ValueError as e:
                raise ConfigError(str(e)) from None

    def _check_imports(self) -> None:
        from wsmux.handlers import resolve_callable, resolve_handler
        from wsmux.resources import check_imports

        where = self["config"] or "command line"
        try:
            for spec in self.settings.routes:
                if spec.exec is not None or spec.proxy is not None:
                    continue  # checked as it was read
                for handler in spec.handlers:
                    resolve_handler(handler)
            if self.settings.unhandled:
                resolve_callable(self.settings.unhandled, "unhandled hook")
            for resource in self.settings.resources:
                try:
                    check_imports(resource)
                except ValueError as e:
                    raise ValueError(f"{resource.origin}: {e}") from None
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None


def check_worker_configuration(argv: list[str]) -> tuple[Any, ...]:
    """
    Parse a worker's command line as the worker will (its settings file,
    handlers, certificates), for the supervisor to check a configuration
    before its workers are given it.

    @return: what a running supervisor cannot change without a restart:
        the listening ports and the number of workers.
    @raise usage.UsageError: saying what is wrong.
    """
    options = Options()
    options.parseOptions(argv[argv.index("wsmux") + 1 :])
    settings = options.settings
    try:
        load_certificates(settings)
    except CertificateError as e:
        raise usage.UsageError(str(e)) from None
    return (settings.ports, settings.tls_ports, settings.shared_ports, settings.workers)


def _usage_exit(options: Options, error: Exception) -> NoReturn:
    # A certificate that cannot be used, found as the service is made: said
    # as twistd says a usage error, and the same exit status.
    print(options)
    print(f"{' '.join(sys.argv[0:2])}: {error}")
    raise SystemExit(1)


def makeService(options: Options) -> IService:
    """
    Build the wsmux service from parsed options: the server, or with
    C{--workers N} the supervisor of N worker processes.
    """
    settings = options.settings
    port_file = settings.port_file
    if port_file and not os.path.isdir(os.path.dirname(os.path.abspath(port_file))):
        _usage_exit(options, ConfigError(f"--port-file {port_file!r}: no such directory"))
    if port_file and os.path.isdir(port_file):
        _usage_exit(options, ConfigError(f"--port-file {port_file!r} is a directory"))
    try:
        # The supervisor reads them too: a bad file stops it before any
        # worker starts.
        contexts = load_certificates(settings) if options.contexts is None else options.contexts
    except CertificateError as e:
        _usage_exit(options, e)
    # Until the services install their SIGHUP handler, a reload must not
    # end the process (SIGHUP's default action).
    ignore_hangup(only_default=True)
    if settings.workers > 1 and options.adopted is None:
        supervisor = MultiService()
        ports = (
            [("plain", p) for p in settings.ports]
            + [("tls", p) for p in settings.tls_ports]
            + [("shared", p) for p in settings.shared_ports]
        )
        WorkerSupervisor(
            settings.workers,
            ports,
            worker_argv(sys.argv),
            settings.limits.drain_timeout,
            config=(options["config"], options.config_bytes)
            if options.config_bytes is not None
            else None,
            check=check_worker_configuration,
            port_file=settings.port_file,
        ).setServiceParent(supervisor)
        if not settings.redis:
            log.info(
                "channels (broadcast rooms, pubsub) are local to each worker: "
                "use --redis to reach clients on every worker"
            )
        LogLevelService(settings.log_level).setServiceParent(supervisor)
        StopOnTerm().setServiceParent(supervisor)
        return supervisor
    try:
        service = make_service(options.settings, contexts=contexts, adopted=options.adopted)
    except ValueError as e:  # a resource that cannot be made, say
        _usage_exit(options, ConfigError(str(e)))
    LogLevelService(options.settings.log_level).setServiceParent(service)
    FreezeHeapService().setServiceParent(service)
    StopOnTerm().setServiceParent(service)
    return service
