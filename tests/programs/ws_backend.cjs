// Node's ws, as a backend for proxy routes in tests: the same paths as
// ws_backend.py.  With CHAIN KEY arguments it serves wss.  Prints
// "PORT <n>" once listening on 127.0.0.1.  `ws` is found through NODE_PATH
// (bench/node_modules, installed by the tests' fixture with npm ci).
"use strict";
const fs = require("node:fs");
const http = require("node:http");
const https = require("node:https");
const { WebSocketServer } = require("ws");

const SEEN = ["origin", "cookie", "authorization", "x-forwarded-for", "forwarded",
  "x-forwarded-proto", "x-forwarded-host", "user-agent"];
const [chain, key] = process.argv.slice(2);
const server = chain
  ? https.createServer({ cert: fs.readFileSync(chain), key: fs.readFileSync(key) })
  : http.createServer();
const wss = new WebSocketServer({
  server,
  maxPayload: 2 ** 24,
  perMessageDeflate: false,
  handleProtocols: (offered) => ["chat", "superchat"].find((p) => offered.has(p)) ?? false,
  verifyClient: (info, answer) => {
    if (info.req.url.startsWith("/refuse")) return answer(false, 403, "Forbidden");
    if (info.req.url.startsWith("/busy")) return answer(false, 503, "Busy");
    // Like the websockets backend: a subprotocol is required.
    if (!info.req.headers["sec-websocket-protocol"]) return answer(false, 400, "No subprotocol");
    answer(true);
  },
});

wss.on("connection", (ws, request) => {
  const [path, query = ""] = request.url.split(/\?(.*)/s);
  if (path.startsWith("/info")) {
    const headers = Object.fromEntries(SEEN.map((k) => [k, request.headers[k] ?? null]));
    ws.send(JSON.stringify({ path, query, subprotocol: ws.protocol, headers }));
  }
  if (path === "/greet") ws.send("hello first");
  if (path === "/noread") {
    ws.pause();
    return;
  }
  if (path === "/flood") {
    const chunk = Buffer.alloc(65536, "z");
    // The next chunk once the last one is written: the socket's pace.
    const pump = (error) => error || ws.send(chunk, { binary: true }, pump);
    pump();
    return;
  }
  ws.on("message", (data, isBinary) => {
    if (path === "/die") process.exit(1);
    const text = isBinary ? null : data.toString();
    if (path === "/close" && text !== null) {
      const [, code, ...reason] = text.split(" ");
      ws.close(Number(code), reason.join(" "));
      return;
    }
    if (path === "/big" && text !== null) {
      ws.send("x".repeat(Number(text)));
      return;
    }
    ws.send(data, { binary: isBinary });
  });
});

server.listen(0, "127.0.0.1", () => console.log(`PORT ${server.address().port}`));
