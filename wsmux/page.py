"""
The demo page served at C{/}: a person can try a route from a browser.
"""

from __future__ import annotations

from twisted.web.static import Data

DEMO_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>wsmux</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
 h1 { font-size: 1.4rem; }
 fieldset { border: 1px solid #ccc; border-radius: 6px; margin-bottom: 1rem; }
 input[type=text] { width: 60%; padding: .3rem; }
 button { padding: .3rem .8rem; }
 #log { border: 1px solid #ccc; border-radius: 6px; height: 18rem; overflow-y: auto;
        padding: .5rem; font-family: ui-monospace, monospace; font-size: .9rem; background: #fafafa; }
 .sent { color: #555; } .recv { color: #0a5; } .err { color: #c00; font-weight: bold; } .info { color: #06c; }
 #status { font-weight: bold; }
</style>
</head>
<body>
<h1>wsmux</h1>
<p>A WebSocket server with many endpoints on one port. Connect to a route
(the echo route answers every message with the same message), send a
message and watch it come back.</p>
<fieldset>
 <legend>Connection</legend>
 <label>URL <input type="text" id="url"></label>
 <button id="connect">Connect</button>
 <button id="disconnect" disabled>Disconnect</button>
 <div>Status: <span id="status">not connected</span></div>
</fieldset>
<fieldset>
 <legend>Message</legend>
 <input type="text" id="message" value="Hello, wsmux!">
 <button id="send" disabled>Send</button>
</fieldset>
<div id="log" aria-live="polite"></div>
<script>
(function () {
  "use strict";
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var params = new URLSearchParams(location.search);
  var $ = function (id) { return document.getElementById(id); };
  $("url").value = scheme + location.host + (params.get("path") || "/echo");
  var ws = null;
  function log(cls, text) {
    var line = document.createElement("div");
    line.className = cls;
    line.textContent = new Date().toLocaleTimeString() + "  " + text;
    $("log").appendChild(line);
    $("log").scrollTop = $("log").scrollHeight;
  }
  function setState(text, open) {
    $("status").textContent = text;
    $("send").disabled = !open;
    $("disconnect").disabled = !open;
    $("connect").disabled = open;
  }
  $("connect").onclick = function () {
    var url = $("url").value;
    try { ws = new WebSocket(url); } catch (e) { log("err", "Cannot connect: " + e.message); return; }
    setState("connecting", false);
    $("connect").disabled = true;
    var opened = false;
    ws.onopen = function () { opened = true; setState("connected to " + url, true); log("info", "connected to " + url); };
    ws.onmessage = function (ev) {
      log("recv", "received: " + (typeof ev.data === "string" ? ev.data : "[binary " + (ev.data.size || ev.data.byteLength) + " bytes]"));
    };
    ws.onerror = function () {
      log("err", opened ? "connection error" : "could not connect to " + url + " (is the server running, and is the path a WebSocket route?)");
    };
    ws.onclose = function (ev) {
      setState("closed (code " + ev.code + (ev.reason ? ", " + ev.reason : "") + ")", false);
      log(ev.code === 1000 || ev.code === 1005 ? "info" : "err",
          "connection closed: code " + ev.code + (ev.reason ? " (" + ev.reason + ")" : ""));
    };
  };
  $("disconnect").onclick = function () { if (ws) { ws.close(1000, "bye"); } };
  function send() {
    if (!ws || ws.readyState !== WebSocket.OPEN) { log("err", "not connected"); return; }
    ws.send($("message").value);
    log("sent", "sent: " + $("message").value);
  }
  $("send").onclick = send;
  $("message").addEventListener("keydown", function (ev) { if (ev.key === "Enter") { send(); } });
})();
</script>
</body>
</html>
"""


def demo_page() -> Data:
    """
    The demo page as a resource.
    """
    return Data(DEMO_HTML.encode("utf-8"), "text/html; charset=utf-8")
