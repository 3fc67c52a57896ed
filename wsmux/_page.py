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
 body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
 h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin: 0 0 .5rem; }
 section { border: 1px solid #ccc; border-radius: 6px; padding: .8rem; margin-bottom: 1rem; }
 input[type=text] { width: 55%; padding: .3rem; }
 button { padding: .3rem .8rem; }
 .log { border: 1px solid #ddd; border-radius: 4px; height: 11rem; overflow-y: auto; margin-top: .5rem;
        padding: .4rem; font-family: ui-monospace, monospace; font-size: .85rem; background: #fafafa; }
 .sent { color: #555; } .recv { color: #0a5; } .err { color: #c00; font-weight: bold; } .info { color: #06c; }
 .status { font-weight: bold; }
</style>
</head>
<body>
<h1>wsmux</h1>
<p>A WebSocket server with many endpoints on one port. Try two of them: the
echo route sends every message back; a broadcast room sends every message
to everyone in the same room (open this page twice to see it).</p>

<section id="echo">
 <h2>Echo</h2>
 <label>URL <input type="text" class="url"></label>
 <button class="connect">Connect</button> <button class="disconnect" disabled>Disconnect</button>
 <div>Status: <span class="status">not connected</span></div>
 <div><input type="text" class="message" value="Hello, wsmux!"> <button class="send" disabled>Send</button></div>
 <div class="log" aria-live="polite"></div>
</section>

<section id="room">
 <h2>Broadcast room</h2>
 <label>Room <input type="text" class="room" value="lobby"></label>
 <button class="connect">Join</button> <button class="disconnect" disabled>Leave</button>
 <div>Status: <span class="status">not connected</span></div>
 <div><input type="text" class="message" value="Hi, everyone!"> <button class="send" disabled>Send</button></div>
 <div class="log" aria-live="polite"></div>
</section>

<script>
(function () {
  "use strict";
  var params = new URLSearchParams(location.search);

  // The WebSocket URL of a path on this server, or null for anything that
  // is not such a path: the query string may name paths, never another
  // host ("?rooms=@evil.example/x/" must not send anyone elsewhere).
  function here(path) {
    if (typeof path !== "string" || path.charAt(0) !== "/" || path.charAt(1) === "/"
        || path.indexOf("\\\\") >= 0) {
      return null;
    }
    var url;
    try { url = new URL(path, location.href); } catch (e) { return null; }
    if (url.origin !== location.origin) { return null; }
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  }
  function pathParam(name, fallback) {
    var value = params.get(name);
    if (value === null) { return fallback; }
    if (here(value) === null) {
      console.warn("ignored ?" + name + "=" + value + ": not a path on this server");
      return fallback;
    }
    return value;
  }

  function panel(root, urlOf) {
    var $ = function (cls) { return root.querySelector("." + cls); };
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
      var url = urlOf($);
      try { ws = new WebSocket(url); } catch (e) { log("err", "Cannot connect to " + url + ": " + e.message); return; }
      setState("connecting to " + url, false);
      $("connect").disabled = true;
      var opened = false;
      ws.onopen = function () { opened = true; setState("connected to " + url, true); log("info", "connected to " + url); };
      ws.onmessage = function (ev) {
        log("recv", "received: " + (typeof ev.data === "string" ? ev.data : "[binary message]"));
      };
      ws.onerror = function () {
        log("err", opened ? "connection error"
          : "could not connect to " + url + " (is the server running, and is this path a WebSocket route?)");
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
  }

  var echo = document.getElementById("echo");
  echo.querySelector(".url").value = here(pathParam("path", "/echo"));
  panel(echo, function ($) { return $("url").value; });
  var rooms = pathParam("rooms", "/rooms/");
  panel(document.getElementById("room"), function ($) {
    return here(rooms + encodeURIComponent($("room").value || "lobby"));
  });
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
