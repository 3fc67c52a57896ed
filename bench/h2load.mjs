// wsmux's HTTP/2 load generator: WebSockets as extended CONNECT streams
// (RFC 8441) of a few TLS connections, on Node's http2 client.  One scenario
// per run, results as one JSON line on standard output, in the fields the C
// load generator (loadgen.c) uses for the same scenario over HTTP/1.1.
//
//   node h2load.mjs SCENARIO PORT [--seconds N] [--server-pid PID]
//
// handshakes: 2 connections, 10 streams in flight on each (20 at once, as
//   loadgen's 20 connectors): open a WebSocket (extended CONNECT, 200),
//   close it (a masked close frame, the server's close back, the stream
//   ended), again.  Latency is from the request to the 200.
// idle: 5,000 WebSockets open, 100 to a connection (wsmux's default
//   max_http2_streams); prints {"ready": N} and waits for a line on
//   standard input.
//
// The certificate is not verified (a benchmark, on loopback).
import http2 from "node:http2";
import crypto from "node:crypto";
import fs from "node:fs";
import readline from "node:readline";

const [scenario, port, ...rest] = process.argv.slice(2);
const option = (name, fallback) => {
  const at = rest.indexOf(name);
  return at >= 0 ? rest[at + 1] : fallback;
};
const seconds = Number(option("--seconds", "5"));
const serverPid = option("--server-pid", null);
const WARMUP_MS = 500;
const STREAMS_PER_CONNECTION = 100;

function ticks(pid) {
  // utime + stime of a process, in clock ticks (100 a second on Linux).
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

function connect() {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://localhost:${port}`, {
      rejectUnauthorized: false,
      servername: "localhost",
      settings: { initialWindowSize: 1 << 20 },
    });
    session.on("error", reject);
    session.once("remoteSettings", (settings) => {
      if (!settings.enableConnectProtocol) {
        reject(new Error("the server does not allow extended CONNECT"));
      } else {
        resolve(session);
      }
    });
  });
}

function masked(opcode, payload) {
  const mask = crypto.randomBytes(4);
  const out = Buffer.alloc(6 + payload.length);
  out[0] = 0x80 | opcode;
  out[1] = 0x80 | payload.length;
  mask.copy(out, 2);
  for (let i = 0; i < payload.length; i++) out[6 + i] = payload[i] ^ mask[i % 4];
  return out;
}

const CLOSE = Buffer.from([0x03, 0xe8]); // 1000

function open(session) {
  // A WebSocket stream, resolved with it once the server answers 200.
  return new Promise((resolve, reject) => {
    const stream = session.request(
      {
        ":method": "CONNECT",
        ":protocol": "websocket",
        ":scheme": "https",
        ":path": "/echo",
        ":authority": `localhost:${port}`,
        "sec-websocket-version": "13",
      },
      { endStream: false },
    );
    stream.on("error", reject);
    stream.once("response", (headers) => {
      if (headers[":status"] !== 200) {
        reject(new Error(`status ${headers[":status"]}`));
      } else {
        resolve(stream);
      }
    });
  });
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

async function handshakes() {
  const sessions = [await connect(), await connect()];
  const start = performance.now();
  const windowStart = start + WARMUP_MS;
  const end = windowStart + seconds * 1000;
  let done = 0;
  let failed = 0;
  const latencies = [];
  let server0 = null;
  let own0 = null;
  const measure = setTimeout(() => {
    server0 = serverPid ? ticks(serverPid) : null;
    own0 = process.cpuUsage();
  }, WARMUP_MS);

  async function loop(session) {
    while (performance.now() < end) {
      const began = performance.now();
      try {
        const stream = await open(session);
        const opened = performance.now();
        await new Promise((resolve) => {
          stream.on("data", () => {});
          stream.on("close", resolve);
          stream.end(masked(8, CLOSE));
        });
        if (began >= windowStart && performance.now() <= end) {
          done++;
          latencies.push(opened - began);
        }
      } catch (e) {
        if (failed++ === 0) console.error(`h2load: ${e.message}`);
      }
    }
  }
  await Promise.all(sessions.flatMap((s) => Array.from({ length: 10 }, () => loop(s))));
  clearTimeout(measure);
  const wall = (performance.now() - windowStart) / 1000;
  const server = serverPid && server0 !== null ? (ticks(serverPid) - server0) / 100 / wall : null;
  const own = process.cpuUsage(own0);
  latencies.sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      handshakes_per_s: done / seconds,
      failed,
      handshake_p50_ms: percentile(latencies, 0.5),
      handshake_p99_ms: percentile(latencies, 0.99),
      server_cpu: server,
      loadgen_cpu: (own.user + own.system) / 1e6 / wall,
    }),
  );
  for (const s of sessions) s.close();
}

async function idle() {
  const total = 5000;
  const sessions = [];
  const streams = [];
  for (let opened = 0; opened < total; ) {
    const session = await connect();
    sessions.push(session);
    const batch = Math.min(STREAMS_PER_CONNECTION, total - opened);
    streams.push(...(await Promise.all(Array.from({ length: batch }, () => open(session)))));
    opened += batch;
  }
  console.log(JSON.stringify({ ready: streams.length, connections: sessions.length }));
  const lines = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => lines.once("line", resolve));
  lines.close();
  for (const s of sessions) s.destroy();
}

const run = { handshakes, idle }[scenario];
if (!run) {
  console.error(`h2load: unknown scenario ${scenario}`);
  process.exit(2);
}
run().then(
  () => process.exit(0),
  (e) => {
    console.error(`h2load: ${e.stack || e}`);
    process.exit(1);
  },
);
