"""
Run every benchmark scenario against wsmux and its peers in the same run.

    python bench/run.py [--repeat 3] [--seconds 5] [--only wsmux,node-ws] [--scenarios a,d]

Peers: raw Autobahn on Twisted through twisted.web's WebSocketResource,
Python websockets on asyncio and on uvloop, and Node's ws (npm install in
bench/).  The load generator is bench/loadgen.mjs (Node 20 with the ws
client) in a process of its own.  Results (medians) go to
docs/benchmarks/results.json, a table (results.rst) and a plot (ratios.png).
Loopback only; every run is bounded in time and count.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tests.hostile.rawws import rss_kib  # noqa: E402 - the repository's helpers
from tests.twistd_process import TWISTD, free_port, wait_port  # noqa: E402

OUT = ROOT / "docs" / "benchmarks"
LIMITS = ["--max-message-size", "67108864", "--max-frame-size", "67108864",
          "--max-send-queue", "67108864", "--max-connections", "0",
          "--max-connections-per-ip", "0", "--log-level", "warn"]  # fmt: skip


def peer_command(peer, port, deflate):
    flag = "deflate" if deflate else "plain"
    py = sys.executable
    return {
        "wsmux": [TWISTD, "-n", "--pidfile=", "wsmux", "--port", f"tcp:{port}:interface=127.0.0.1",
                  "--route", "/echo=echo", "--route", "/rooms/{room}=broadcast", *LIMITS]
        + (["--deflate"] if deflate else []),
        "autobahn-web": [py, str(BENCH / "peers" / "autobahn_web.py"), str(port), flag],
        "websockets": [py, str(BENCH / "peers" / "websockets_server.py"), str(port), "asyncio", flag],
        "websockets-uvloop": [py, str(BENCH / "peers" / "websockets_server.py"), str(port), "uvloop", flag],
        "node-ws": ["node", str(BENCH / "peers" / "node_ws.mjs"), str(port), flag],
    }[peer]  # fmt: skip


PEERS = ["wsmux", "autobahn-web", "websockets", "websockets-uvloop", "node-ws"]
SCENARIOS = [
    ("a", "echo", False, "messages_per_s"),
    ("b", "big", False, "mb_per_s"),
    ("c", "broadcast", False, "deliveries_per_s"),
    ("d", "handshakes", False, "handshakes_per_s"),
    ("e", "idle", False, "kib_per_connection"),
    ("f-a", "echo", True, "messages_per_s"),
    ("f-c", "broadcast", True, "deliveries_per_s"),
]


def run_once(peer, scenario, deflate, seconds):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(peer_command(peer, port, deflate), cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_port(port)
        time.sleep(0.5)
        args = ["node", str(BENCH / "loadgen.mjs"), scenario, str(port), "--seconds", str(seconds)]
        if deflate:
            args.append("--deflate")
        if scenario == "idle":
            before = rss_kib(server.pid)
            gen = subprocess.Popen(
                args, cwd=BENCH, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            ready = json.loads(gen.stdout.readline())
            time.sleep(1)
            after = rss_kib(server.pid)
            gen.stdin.write("done\n")
            gen.stdin.flush()
            gen.wait(timeout=60)
            return {"kib_per_connection": (after - before) / ready["ready"]}
        result = subprocess.run(args, cwd=BENCH, capture_output=True, text=True, timeout=180)
        return json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def main():
    parser = argparse.ArgumentParser(description="wsmux benchmarks against its peers")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--only", default=",".join(PEERS))
    parser.add_argument("--scenarios", default=",".join(s[0] for s in SCENARIOS))
    options = parser.parse_args()
    peers = options.only.split(",")
    results = {}
    wanted = options.scenarios.split(",")
    for label, scenario, deflate, metric in SCENARIOS:
        if label not in wanted:
            continue
        # Repetitions go round the peers (a, b, c, a, b, c...), so that a
        # change in the machine's load during the run touches every peer.
        runs: dict[str, list] = {peer: [] for peer in peers}
        for _ in range(options.repeat):
            for peer in peers:
                try:
                    runs[peer].append(run_once(peer, scenario, deflate, options.seconds))
                except Exception as e:  # a peer that cannot run a scenario is reported, not fatal
                    print(f"{label} {peer}: failed: {e}", file=sys.stderr)
        for peer in peers:
            done = runs[peer]
            if done:
                row = {key: statistics.median(r[key] for r in done if r.get(key) is not None)
                       for key in done[0] if any(r.get(key) is not None for r in done)}  # fmt: skip
                results.setdefault(label, {})[peer] = row
                print(
                    f"{label:4s} {peer:18s} {metric}={row.get(metric, float('nan')):,.1f}",
                    flush=True,
                )
    if options.scenarios == parser.get_default("scenarios"):
        write(results)
    else:
        print("a subset of the scenarios: docs/benchmarks left as they are", file=sys.stderr)


def write(results):
    OUT.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}"
    doc = {"date": datetime.date.today().isoformat(), "machine": machine, "results": results}
    (OUT / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"Measured {doc['date']} on {machine}; medians.", ""]
    # The load generator reached at least the best figure any server got.
    ceiling = []
    for label, _scenario, _deflate, metric in SCENARIOS:
        figures = {p: r.get(metric) for p, r in results.get(label, {}).items() if r.get(metric)}
        if figures and metric != "kib_per_connection":
            best = max(figures, key=figures.__getitem__)
            ceiling.append(f"{label} {figures[best]:,.0f} {metric} (against {best})")
    if ceiling:
        lines += ["Load generator ceiling, at least: " + "; ".join(ceiling) + ".", ""]
    lines += [".. list-table::", "   :header-rows: 1", "",
              "   * - scenario", "     - metric", "     - wsmux", "     - peer", "     - peer's figure", "     - wsmux / peer"]  # fmt: skip
    ratios = {}
    for label, _scenario, _deflate, metric in SCENARIOS:
        row = results.get(label, {})
        ours = row.get("wsmux", {}).get(metric)
        for peer in PEERS[1:]:
            theirs = row.get(peer, {}).get(metric)
            if ours is None or theirs is None:
                continue
            ratio = ours / theirs if theirs else float("nan")
            ratios[(label, peer)] = ratio
            lines += [f"   * - {label}", f"     - {metric}", f"     - {ours:,.1f}", f"     - {peer}",
                      f"     - {theirs:,.1f}", f"     - {ratio:.2f}"]  # fmt: skip
    (OUT / "results.rst").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    labels = sorted({label for label, _ in ratios}, key=[s[0] for s in SCENARIOS].index)
    figure, axis = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(1, len(PEERS) - 1)
    for i, peer in enumerate(PEERS[1:]):
        values = [ratios.get((label, peer), 0) for label in labels]
        axis.bar([x + i * width for x in range(len(labels))], values, width, label=peer)
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xticks([x + width * (len(PEERS) - 2) / 2 for x in range(len(labels))], labels)
    axis.set_ylabel("wsmux / peer (memory: lower is better)")
    axis.set_title(f"wsmux against its peers, {doc['date']}")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(OUT / "ratios.png", dpi=100)


if __name__ == "__main__":
    main()
