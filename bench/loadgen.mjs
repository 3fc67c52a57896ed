// wsmux's load generator (Node 20 with the ws client): one scenario per run,
// results as one JSON line on stdout.  Loopback only; bounded in time/count.
//   node loadgen.mjs SCENARIO PORT [--deflate] [--seconds N]
import WebSocket from "ws";

const [scenario, portArg, ...rest] = process.argv.slice(2);
const base = `ws://127.0.0.1:${portArg}`;
const deflate = rest.includes("--deflate");
const seconds = Number(rest[rest.indexOf("--seconds") + 1] || 5);
const options = { perMessageDeflate: deflate, maxPayload: 64 * 1024 * 1024 };
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms

function open(path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base + path, options);
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : null;
}

async function echo(count, inflight, payload, isBinary) {
  const sockets = await Promise.all(Array.from({ length: count }, () => open("/echo")));
  const latencies = [];
  let replies = 0;
  let bytes = 0;
  let measuring = false;
  const stop = now() + 1000 + seconds * 1000;
  await new Promise((resolve) => {
    let running = sockets.length;
    for (const ws of sockets) {
      const sent = [];
      const send = () => {
        sent.push(now());
        ws.send(payload, { binary: isBinary });
      };
      ws.on("message", (data) => {
        const t = now();
        const started = sent.shift();
        if (measuring) {
          replies += 1;
          bytes += data.length;
          latencies.push(t - started);
        }
        if (t < stop) send();
        else if (sent.length === 0 && --running === 0) resolve();
      });
      for (let i = 0; i < inflight; i++) send();
    }
    setTimeout(() => (measuring = true), 1000);
  });
  const elapsed = seconds; // measured window
  sockets.forEach((ws) => ws.terminate());
  latencies.sort((a, b) => a - b);
  return {
    messages_per_s: replies / elapsed,
    mb_per_s: bytes / elapsed / 1e6,
    p50_ms: percentile(latencies, 0.5),
    p99_ms: percentile(latencies, 0.99),
  };
}

async function broadcast(subscribers) {
  const subs = [];
  for (let i = 0; i < subscribers; i += 50) {
    subs.push(...(await Promise.all(Array.from({ length: Math.min(50, subscribers - i) }, () => open("/rooms/bench")))));
  }
  const publisher = await open("/rooms/bench");
  publisher.on("message", () => {});
  const pending = new Map(); // id -> [sentAt, remaining]
  const fanout = [];
  let deliveries = 0;
  let next = 0;
  let measuring = false;
  const stop = now() + 1000 + seconds * 1000;
  const payload = (id) => JSON.stringify({ id, pad: "x".repeat(48) }).slice(0, 64);
  await new Promise((resolve) => {
    const publish = () => {
      while (pending.size < 4 && now() < stop) {
        const id = next++;
        pending.set(id, [now(), subscribers]);
        publisher.send(payload(id));
      }
      if (pending.size === 0 && now() >= stop) resolve();
    };
    for (const ws of subs) {
      ws.on("message", (data) => {
        const id = JSON.parse(data.toString().replace(/,"pad.*$/, "}")).id;
        const entry = pending.get(id);
        if (!entry) return;
        if (measuring) deliveries += 1;
        if (--entry[1] === 0) {
          pending.delete(id);
          if (measuring) fanout.push(now() - entry[0]);
          publish();
        }
      });
    }
    setTimeout(() => (measuring = true), 1000);
    publish();
  });
  [...subs, publisher].forEach((ws) => ws.terminate());
  fanout.sort((a, b) => a - b);
  return { deliveries_per_s: deliveries / seconds, fanout_p50_ms: percentile(fanout, 0.5), fanout_p99_ms: percentile(fanout, 0.99) };
}

async function handshakes(concurrency) {
  let opened = 0;
  let measuring = false;
  const stop = now() + 1000 + seconds * 1000;
  setTimeout(() => (measuring = true), 1000);
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (now() < stop) {
        const ws = await open("/echo");
        if (measuring) opened += 1;
        await new Promise((resolve) => {
          ws.once("close", resolve);
          ws.close();
        });
      }
    }),
  );
  return { handshakes_per_s: opened / seconds };
}

async function idle(count) {
  const sockets = [];
  for (let i = 0; i < count; i += 100) {
    sockets.push(...(await Promise.all(Array.from({ length: Math.min(100, count - i) }, () => open("/echo")))));
  }
  process.stdout.write(JSON.stringify({ ready: sockets.length }) + "\n");
  await new Promise((resolve) => process.stdin.once("data", resolve));
  sockets.forEach((ws) => ws.terminate());
  return { connections: sockets.length };
}

const scenarios = {
  echo: () => echo(50, 8, "x".repeat(64), false),
  big: () => echo(4, 1, Buffer.alloc(1024 * 1024, 7), true),
  broadcast: () => broadcast(1000),
  handshakes: () => handshakes(20),
  idle: () => idle(5000),
};
const result = await scenarios[scenario]();
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(0);
