// Node's ws: echo at /echo, one broadcast room at /rooms/bench.  With
// BENCH_TLS_CERT and BENCH_TLS_KEY set, over https.createServer (wss).
import { WebSocketServer } from "ws";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";

const port = Number(process.argv[2]);
const flag = process.argv[3];
// deflate-min: the smallest settings ws has (bench/run.py, scenario g-min).
const deflate =
  flag === "deflate-min"
    ? {
        serverNoContextTakeover: true,
        serverMaxWindowBits: 9,
        clientMaxWindowBits: 9,
        zlibDeflateOptions: { memLevel: 1 },
      }
    : flag === "deflate";
const server = process.env.BENCH_TLS_CERT
  ? https.createServer({
      cert: fs.readFileSync(process.env.BENCH_TLS_CERT),
      key: fs.readFileSync(process.env.BENCH_TLS_KEY),
    })
  : http.createServer();
const options = { noServer: true, perMessageDeflate: deflate, maxPayload: 64 * 1024 * 1024 };
const echo = new WebSocketServer(options);
const room = new WebSocketServer(options);
echo.on("connection", (ws) => ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary })));
room.on("connection", (ws) =>
  ws.on("message", (data, isBinary) => {
    for (const client of room.clients) client.send(data, { binary: isBinary });
  }),
);
server.on("upgrade", (request, socket, head) => {
  const target = request.url.startsWith("/rooms/") ? room : echo;
  target.handleUpgrade(request, socket, head, (ws) => target.emit("connection", ws, request));
});
server.listen(port, "127.0.0.1");
