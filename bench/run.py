"""
Run every benchmark scenario against wsmux and its peers in the same run.

    python bench/run.py [--repeat 3] [--seconds 5] [--only wsmux,node-ws] [--scenarios a,d]
                        [--baseline DIR]
    python bench/run.py --rewrite

Peers: wsmux with its echo route written as an async handler (wsmux-async:
echo-async, against the callback echo of wsmux itself), wsmux on twistd's
asyncio reactor (wsmux-asyncio; and, with --only,
wsmux-public: every internal of the seam switched off), raw Autobahn on
Twisted through twisted.web's WebSocketResource,
Python websockets on asyncio and on uvloop, and Node's ws (npm install in
bench/); and for the proxy scenarios (p-*), Debian's nginx as the other
front, both relaying to one Node ws backend.  The load generator is bench/loadgen.c (C, one thread on epoll;
built here with cc, zlib and OpenSSL) in a process of its own;
it reports the CPU it and the server used, so the table shows which side
was the limit.  Results (medians) go to docs/benchmarks/results.json, a
table (results.rst) and a plot (ratios.png, a panel over ws and one over
wss and HTTP/2); --rewrite writes the table and plot again from
results.json, measuring nothing.  --baseline DIR adds one more peer,
wsmux-baseline: the wsmux of another checkout (a worktree of the
commit a change started from), interleaved with the others, so that
wsmux / wsmux-baseline is the change's own effect, measured in one run
(the docs are left alone then).  Loopback only; every run is
bounded in time and count.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tests.hostile.rawws import rss_kib  # noqa: E402 - the repository's helpers
from tests.twistd_process import TWISTD, free_port, wait_port  # noqa: E402

OUT = ROOT / "docs" / "benchmarks"
LOADGEN = BENCH / "loadgen"
# Every server runs without keepalive pings: Node ws and Autobahn have none
# by default, and the websockets peer turns its own off, so wsmux does too.
LIMITS = ["--max-message-size", "67108864", "--max-frame-size", "67108864",
          "--max-send-queue", "67108864", "--max-connections", "0",
          "--max-connections-per-ip", "0", "--log-level", "warn",
          "--ping-interval", "0"]  # fmt: skip


# The smallest permessage-deflate settings (scenario g-min), for each peer
# that has them: a 9-bit window both ways, memory level 1, no context kept
# between the server's messages.
DEFLATE_MIN = ["--deflate-server-max-window-bits", "9", "--deflate-client-max-window-bits", "9",
               "--deflate-mem-level", "1", "--deflate-server-no-context-takeover"]  # fmt: skip


def peer_command(peer, port, deflate):
    flag = {False: "plain", True: "deflate", "min": "deflate-min"}[deflate]
    py = sys.executable
    return {
        "wsmux": [TWISTD, "-n", "--pidfile=", "wsmux", "--port", f"tcp:{port}:interface=127.0.0.1",
                  "--route", "/echo=echo", "--route", "/rooms/{room}=broadcast", *LIMITS]
        + (["--deflate"] if deflate else []) + (DEFLATE_MIN if deflate == "min" else []),
        # wsmux with its echo written as an async handler (wsmux.aio).
        "wsmux-async": [TWISTD, "-n", "--pidfile=", "wsmux", "--port",
                        f"tcp:{port}:interface=127.0.0.1", "--route", "/echo=echo-async",
                        "--route", "/rooms/{room}=broadcast", *LIMITS]
        + (["--deflate"] if deflate else []) + (DEFLATE_MIN if deflate == "min" else []),
        "autobahn-web": [py, str(BENCH / "peers" / "autobahn_web.py"), str(port), flag],
        "websockets": [py, str(BENCH / "peers" / "websockets_server.py"), str(port), "asyncio", flag],
        "websockets-uvloop": [py, str(BENCH / "peers" / "websockets_server.py"), str(port), "uvloop", flag],
        "node-ws": ["node", str(BENCH / "peers" / "node_ws.mjs"), str(port), flag],
    }[peer]  # fmt: skip


PEERS = [
    "wsmux",
    "wsmux-asyncio",
    "wsmux-async",
    "autobahn-web",
    "websockets",
    "websockets-uvloop",
    "node-ws",
    "nginx",
]

# wsmux itself, run another way: on twistd's asyncio reactor, and with every
# internal of the seam switched off (its public paths; --only wsmux-public).
VARIANTS = {
    "wsmux-asyncio": (["-r", "asyncio"], {}),
    "wsmux-public": ([], {"WSMUX_PUBLIC_PATH": "1"}),
}
SCENARIOS = [
    ("a", "echo", False, "messages_per_s"),
    ("b", "big", False, "mb_per_s"),
    ("c", "broadcast", False, "deliveries_per_s"),
    ("d", "handshakes", False, "handshakes_per_s"),
    ("e", "idle", False, "kib_per_connection"),
    ("f-a", "echo", True, "messages_per_s"),
    ("f-c", "broadcast", True, "deliveries_per_s"),
    ("g", "idle", True, "kib_per_connection"),
    ("g-min", "idle", "min", "kib_per_connection"),
    # Through a proxy: the load generator talks to a front (wsmux's proxy
    # route, or nginx) that relays every connection to one backend (Node's
    # ws, the echo and room of node_ws.mjs), started afresh for each run.
    ("p-a", "echo", False, "messages_per_s"),
    ("p-b", "big", False, "mb_per_s"),
    ("p-d", "handshakes", False, "handshakes_per_s"),
    ("p-e", "idle", False, "kib_per_connection"),
    # The round trip alone: one connection, one 64-byte message in flight.
    ("l", "latency", False, "p50_ms"),
    # Over TLS (wss): the same scenarios, each server with the same
    # certificate (TLS below says which), the load generator speaking TLS.
    ("w-a", "echo", False, "messages_per_s"),
    ("w-b", "big", False, "mb_per_s"),
    ("w-c", "broadcast", False, "deliveries_per_s"),
    ("w-d", "handshakes", False, "handshakes_per_s"),
    ("w-d-rsa", "handshakes", False, "handshakes_per_s"),
    ("w-d-resume", "handshakes", False, "handshakes_per_s"),
    ("w-e", "idle", False, "kib_per_connection"),
    ("w-f-a", "echo", True, "messages_per_s"),
    ("w-f-c", "broadcast", True, "deliveries_per_s"),
    ("w-l", "latency", False, "p50_ms"),
    # wss as streams of a few HTTP/2 connections (RFC 8441; h2load.mjs, on
    # Node's http2 client): against w-d and w-e, the same WebSockets each
    # with a TLS connection of its own.  Only wsmux serves them.
    ("h2-d", "handshakes", False, "handshakes_per_s"),
    ("h2-e", "idle", False, "kib_per_connection"),
]
# The wss scenarios: the certificate each uses (ECDSA P-256, or RSA 2048:
# the key type matters only to the handshake), and whether the load
# generator resumes TLS sessions (each connection a full handshake otherwise).
TLS = {label: ("rsa" if label.endswith("-rsa") else "ecdsa", label.endswith("-resume"))
       for label, *_ in SCENARIOS if label.startswith(("w-", "h2-"))}  # fmt: skip
# The HTTP/2 scenarios, and the servers that run them.
HTTP2 = {"h2-d", "h2-e"}
# (wsmux-public has no HTTP/2: it takes every public path.)
HTTP2_SERVERS = {"wsmux", "wsmux-baseline", "wsmux-asyncio"}
# The proxy scenarios, and the fronts that run them (the servers that are
# not proxies run only the others).
PROXIED = {"p-a", "p-b", "p-d", "p-e"}
FRONTS = {"wsmux", "wsmux-baseline", "nginx"}


def proxy_front(peer, port, backend, directory):
    """
    The command of a front that relays /echo and /rooms/{room} to the
    backend on port C{backend}: wsmux with proxy routes, or Debian's nginx
    (one worker, as wsmux is one process; the configuration is written to
    C{directory}).
    """
    base = f"ws://127.0.0.1:{backend}"
    if peer == "wsmux":
        return [TWISTD, "-n", "--pidfile=", "wsmux", "--port", f"tcp:{port}:interface=127.0.0.1",
                "--route", f"/echo=proxy:{base}/echo",
                "--route", f"/rooms/{{room}}=proxy:{base}/rooms/{{room}}", *LIMITS]  # fmt: skip
    temp = "\n".join(f"  {kind}_temp_path {directory}/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    (directory / "nginx.conf").write_text(f"""\
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 20000; }}
http {{
  access_log off;
{temp}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://127.0.0.1:{backend};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_read_timeout 600s;
      proxy_send_timeout 600s;
    }}
  }}
}}
""")
    return ["nginx", "-e", str(directory / "error.log"), "-p", str(directory),
            "-c", str(directory / "nginx.conf")]  # fmt: skip


def make_certificates(directory):
    """
    A self-signed certificate for localhost and 127.0.0.1 of each key type
    the wss scenarios use: {"ecdsa": (chain, key), "rsa": (chain, key)}.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    made = {}
    for kind, key in (("ecdsa", ec.generate_private_key(ec.SECP256R1())),
                      ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048))):  # fmt: skip
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        chain, private = directory / f"{kind}.pem", directory / f"{kind}.key"
        chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))  # fmt: skip
        made[kind] = (chain, private)
    return made


# The certificates of this run (made in main, in a temporary directory).
CERTIFICATES: dict = {}


def worker_of(pid, timeout=10.0):
    """
    The one worker process of nginx's master C{pid}: the process that
    serves, whose CPU and memory are measured.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise RuntimeError("nginx started no worker")


def build_loadgen():
    """
    Compile bench/loadgen.c unless the binary is newer than its source.
    """
    source = BENCH / "loadgen.c"
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= source.stat().st_mtime:
        return
    command = ["cc", "-O3", "-Wall", "-o", str(LOADGEN), str(source), "-lz", "-lssl", "-lcrypto"]
    try:
        subprocess.run(command, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"could not build the load generator ({e}); it needs a C compiler, zlib and "
                 "OpenSSL headers: apt-get install gcc zlib1g-dev libssl-dev")  # fmt: skip


# The checkout --baseline names, served as the peer wsmux-baseline.
BASELINE: "Path | None" = None


def frame_path(root):
    """
    Build wsmux's C accelerator in the checkout C{root} if it has one and it
    is not built there (the servers run from the checkout); say whether its
    frames are cut and made in C or in Python.
    """
    setup = root / "setup.py"
    if setup.exists() and "_speedups" in setup.read_text():
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=root,
                       capture_output=True, check=False)  # fmt: skip
    answer = subprocess.run(
        [sys.executable, "-c", "from wsmux import _frames; print(getattr(_frames, 'SPEEDUPS', None))"],
        cwd=root, env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return {"True": "C", "False": "Python"}.get(answer, "Python (no accelerator in this version)")


def run_once(peer, scenario, deflate, seconds, proxied=False, tls=None, http2=False):
    port = free_port()
    root = ROOT
    extra_args, extra_env = VARIANTS.get(peer, ([], {}))
    if peer == "wsmux-baseline":
        assert BASELINE is not None
        peer, root = "wsmux", BASELINE
    elif peer in VARIANTS:
        peer = "wsmux"
    env = dict(os.environ, PYTHONPATH=str(root), **extra_env)
    loadgen_flags = []
    if tls is not None:
        kind, resume = tls
        chain, key = CERTIFICATES[kind]
        env.update(BENCH_TLS_CERT=str(chain), BENCH_TLS_KEY=str(key))
        loadgen_flags = ["--tls"] + (["--tls-resume"] if resume else [])
    if http2:
        loadgen_flags = ["--http2"]
    backend = None
    with tempfile.TemporaryDirectory(prefix="wsmux-bench-") as directory:
        if proxied:
            backend_port = free_port()
            backend = subprocess.Popen(peer_command("node-ws", backend_port, False),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            wait_port(backend_port)
            command = proxy_front(peer, port, backend_port, Path(directory))
        else:
            command = peer_command(peer, port, deflate)
            if tls is not None and peer in ("wsmux", "wsmux-async"):
                at = command.index("--port")
                command[at : at + 2] = ["--tls-port", command[at + 1],
                                        "--cert", env["BENCH_TLS_CERT"],
                                        "--key", env["BENCH_TLS_KEY"]]  # fmt: skip
        command[1:1] = extra_args
        server = subprocess.Popen(command, cwd=root, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            return measure(server, port, scenario, deflate, seconds, peer == "nginx",
                           loadgen_flags)  # fmt: skip
        finally:
            for process in (server, backend):
                if process is None:
                    continue
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()


def measure(server, port, scenario, deflate, seconds, master=False, flags=()):
    """
    One run of the load generator against the server on C{port}; with
    C{master}, the server is a master process and its one worker is the
    process measured.  C{flags} go to the load generator (--tls).
    """
    wait_port(port)
    time.sleep(0.5)
    pid = worker_of(server.pid) if master else server.pid
    if "--http2" in flags:
        args = ["node", str(BENCH / "h2load.mjs"), scenario, str(port), "--seconds",
                str(seconds), "--server-pid", str(pid)]  # fmt: skip
    else:
        args = [str(LOADGEN), scenario, str(port), "--seconds", str(seconds),
                "--server-pid", str(pid), *flags]  # fmt: skip
    if deflate:
        args.append("--deflate")
    if scenario == "idle":
        before = rss_kib(pid)
        gen = subprocess.Popen(
            args, cwd=BENCH, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        ready = json.loads(gen.stdout.readline())
        time.sleep(1)
        after = rss_kib(pid)
        gen.stdin.write("done\n")
        gen.stdin.flush()
        gen.wait(timeout=60)
        return {"kib_per_connection": (after - before) / ready["ready"]}
    result = subprocess.run(args, cwd=BENCH, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or f"load generator exit {result.returncode}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    if figures.get("failed") and not figures.get("handshakes_per_s", 1):
        raise RuntimeError(f"every handshake failed ({figures['failed']})")
    return figures


def main():
    parser = argparse.ArgumentParser(description="wsmux benchmarks against its peers")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--only", default=",".join(PEERS))
    parser.add_argument("--scenarios", default=",".join(s[0] for s in SCENARIOS))
    parser.add_argument("--baseline", type=Path, help="another wsmux checkout to compare with")
    parser.add_argument("--rewrite", action="store_true",
                        help="measure nothing: write the table and plot again from results.json")  # fmt: skip
    options = parser.parse_args()
    if options.rewrite:
        doc = json.loads((OUT / "results.json").read_text())
        write(Report(doc["results"], doc["date"], doc["machine"]), results=False)
        return
    build_loadgen()
    certificates = tempfile.TemporaryDirectory(prefix="wsmux-bench-tls-")
    CERTIFICATES.update(make_certificates(Path(certificates.name)))
    peers = options.only.split(",")
    PEERS.extend(peer for peer in peers if peer in VARIANTS and peer not in PEERS)
    print(f"wsmux: frames cut and made in {frame_path(ROOT)}", flush=True)
    if options.baseline is not None:
        global BASELINE
        BASELINE = options.baseline.resolve()
        PEERS.insert(1, "wsmux-baseline")
        peers.insert(1, "wsmux-baseline")
        print(f"wsmux-baseline: frames cut and made in {frame_path(BASELINE)}", flush=True)
    results = {}
    wanted = options.scenarios.split(",")
    for label, scenario, deflate, _metric in SCENARIOS:
        if label not in wanted:
            continue
        # Repetitions go round the peers (a, b, c, a, b, c...), so that a
        # change in the machine's load during the run touches every peer.
        proxied = label in PROXIED
        these = [peer for peer in peers
                 if (peer in FRONTS if proxied else peer != "nginx")
                 and (label not in HTTP2 or peer in HTTP2_SERVERS)]  # fmt: skip
        runs: dict[str, list] = {peer: [] for peer in these}
        for _ in range(options.repeat):
            for peer in these:
                try:
                    runs[peer].append(run_once(peer, scenario, deflate, options.seconds, proxied,
                                               TLS.get(label), label in HTTP2))  # fmt: skip
                except Exception as e:  # a peer that cannot run a scenario is reported, not fatal
                    print(f"{label} {peer}: failed: {e}", file=sys.stderr)
        for peer in these:
            done = runs[peer]
            if done:
                row = {key: statistics.median(r[key] for r in done if r.get(key) is not None)
                       for key in done[0] if any(r.get(key) is not None for r in done)}  # fmt: skip
                results.setdefault(label, {})[peer] = row
                print(f"{label:4s} {peer:18s} " + ", ".join(
                    f"{key}={value:,.2f}" for key, value in row.items()), flush=True)  # fmt: skip
    report = Report(results)
    print()
    print(report.text())
    if (
        options.scenarios == parser.get_default("scenarios")
        and options.only == parser.get_default("only")
        and options.baseline is None
    ):
        write(report)
    else:
        print(
            "a subset of the scenarios or peers: docs/benchmarks left as they are", file=sys.stderr
        )


def _figure(value: float) -> str:
    # Rates with one decimal; milliseconds and KiB below 10 with three
    # significant digits.
    return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"


# Metric -> the latency figures (p50, p99) reported with it.
LATENCIES = {
    "messages_per_s": ("p50_ms", "p99_ms"),
    "p50_ms": ("p50_ms", "p99_ms"),
    "deliveries_per_s": ("fanout_p50_ms", "fanout_p99_ms"),
    "handshakes_per_s": ("handshake_p50_ms", "handshake_p99_ms"),
}


class Report:
    """
    The results of one run as tables: wsmux / peer ratios, every server's
    figures with latency and CPU, and the load generator's ceiling.
    """

    def __init__(self, results: dict, date: "str | None" = None, machine: "str | None" = None):
        self.results = results
        self.date = date or datetime.date.today().isoformat()
        self.machine = machine or (f"{platform.machine()}, {os.cpu_count()} cores, Python "
                                   f"{platform.python_version()}, {platform.platform()}")  # fmt: skip

    def comparisons(self) -> list[tuple[str, str, float, str, float]]:
        """
        (scenario, metric, wsmux's figure, peer, peer's figure) for every
        peer that has a figure in a scenario wsmux has one in.
        """
        found = []
        for label, _scenario, _deflate, metric in SCENARIOS:
            row = self.results.get(label, {})
            ours = row.get("wsmux", {}).get(metric)
            for peer in PEERS[1:]:
                theirs = row.get(peer, {}).get(metric)
                if ours is not None and theirs:
                    found.append((label, metric, ours, peer, theirs))
        return found

    def ratios(self) -> list[list[str]]:
        rows = [["scenario", "metric", "wsmux", "peer", "peer's figure", "wsmux / peer"]]
        for label, metric, ours, peer, theirs in self.comparisons():
            rows.append([label, metric, _figure(ours), peer, _figure(theirs), f"{ours / theirs:.2f}"])  # fmt: skip
        return rows

    def figures(self) -> list[list[str]]:
        rows = [["scenario", "server", "figure", "p50", "p99", "server CPU", "load generator CPU"]]
        for label, _scenario, _deflate, metric in SCENARIOS:
            keys = LATENCIES.get(metric, ())
            for peer, row in self.results.get(label, {}).items():
                cells = [label, peer, f"{_figure(row[metric])} {metric}" if metric in row else "-"]
                cells += [f"{row[k]:.2f} ms" if row.get(k) is not None else "-" for k in keys]
                cells += ["-"] * (5 - len(cells))
                cells += [f"{row[k]:.2f}" if row.get(k) is not None else "-"
                          for k in ("server_cpu", "loadgen_cpu")]  # fmt: skip
                rows.append(cells)
        return rows

    def ceilings(self) -> list[str]:
        """
        Per scenario: the fastest server, and what the load generator would
        reach at one full core, from the share of a core it used against it.
        """
        lines = []
        for label, _scenario, _deflate, metric in SCENARIOS:
            figures = {p: r for p, r in self.results.get(label, {}).items() if r.get(metric)}
            if not figures or metric in ("kib_per_connection", "p50_ms"):
                continue
            best = max(figures, key=lambda p: figures[p][metric])
            row = figures[best]
            share = row.get("loadgen_cpu")
            line = f"{label}: fastest {best}, {row[metric]:,.0f} {metric}"
            if share:
                line += (f", load generator at {share:.2f} of a core, so about "
                         f"{row[metric] / share:,.0f} at a full core")  # fmt: skip
            lines.append(line)
        return lines

    def http2(self) -> list[str]:
        """
        wsmux's WebSockets as HTTP/2 streams against the same over HTTP/1.1
        (a TLS connection each), in this run.
        """
        lines = []
        for ours, theirs, what in (
            ("h2-d", "w-d", "full TLS handshakes"),
            ("h2-d", "w-d-resume", "resumed TLS handshakes"),
            ("h2-e", "w-e", "a TLS connection each"),
        ):
            metric = next(m for label, _, _, m in SCENARIOS if label == ours)
            a = self.results.get(ours, {}).get("wsmux", {}).get(metric)
            b = self.results.get(theirs, {}).get("wsmux", {}).get(metric)
            if a and b:
                lines.append(f"{ours} / {theirs} ({what}): {a:,.1f} / {b:,.1f} {metric} "
                             f"= {a / b:.2f}")  # fmt: skip
        return lines

    def text(self) -> str:
        def table(rows: list[list[str]]) -> str:
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            return "\n".join(
                "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
            )

        return "\n\n".join([
            f"{self.date}, {self.machine}; medians",
            table(self.ratios()),
            table(self.figures()),
            "Load generator ceiling:\n" + "\n".join(self.ceilings()),
            "WebSockets over HTTP/2 against HTTP/1.1 (wsmux):\n" + "\n".join(self.http2()),
        ])  # fmt: skip

    def rst(self) -> str:
        def table(rows: list[list[str]]) -> list[str]:
            lines = [".. list-table::", "   :header-rows: 1", ""]
            for row in rows:
                lines += [f"   * - {row[0]}"] + [f"     - {cell}" for cell in row[1:]]
            return lines + [""]

        lines = [f"Measured {self.date} on {self.machine}; medians.", ""]
        lines += ["Load generator ceiling (``bench/loadgen.c``), against the fastest server in each "
                  "scenario:", ""] + [f"* {line}" for line in self.ceilings()] + [""]  # fmt: skip
        if self.http2():
            lines += ["wsmux's WebSockets as HTTP/2 streams against the same over HTTP/1.1 "
                      "(``bench/h2load.mjs``):", ""] + [f"* {line}" for line in self.http2()] + [""]  # fmt: skip
        lines += ["wsmux against each peer (memory and latency: lower is better):", ""] + table(
            self.ratios()
        )
        lines += ["Every server's figures, latency (a, c, f) and the CPU each side used in the "
                  "measured window (1.00 = one core busy all the time):", ""]  # fmt: skip
        return "\n".join(lines + table(self.figures()))


def write(report: Report, results: bool = True) -> None:
    """
    Write the run's table and plot to docs/benchmarks, and (with
    C{results}) its figures to results.json.
    """
    OUT.mkdir(parents=True, exist_ok=True)
    if results:
        doc = {"date": report.date, "machine": report.machine, "results": report.results}
        (OUT / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (OUT / "results.rst").write_text(report.rst())
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    ratios = {(label, peer): ours / theirs for label, _, ours, peer, theirs in report.comparisons()}
    order = [s[0] for s in SCENARIOS]
    # One panel over plain TCP (ws, and through a proxy), one over TLS (wss).
    panels = [("over ws", lambda label: not label.startswith(("w-", "h2-"))),
              ("over wss (TLS, and HTTP/2)", lambda label: label.startswith(("w-", "h2-")))]  # fmt: skip
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 8))
    width = 0.8 / max(1, len(PEERS) - 1)
    for axis, (title, wanted) in zip(axes, panels, strict=True):
        labels = sorted({label for label, _ in ratios if wanted(label)}, key=order.index)
        for i, peer in enumerate(PEERS[1:]):
            values = [ratios.get((label, peer), 0) for label in labels]
            axis.bar([x + i * width for x in range(len(labels))], values, width, label=peer)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xticks([x + width * (len(PEERS) - 2) / 2 for x in range(len(labels))], labels)
        axis.tick_params(axis="x", labelsize=8)
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        axis.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
        axis.set_ylabel("wsmux / peer")
        axis.set_title(f"wsmux against its peers {title}, {report.date} "
                       "(memory, latency: lower is better)", fontsize=10)  # fmt: skip
        axis.legend(fontsize=7, ncol=4)
    figure.tight_layout()
    figure.savefig(OUT / "ratios.png", dpi=100)


if __name__ == "__main__":
    main()
