"""Shared helpers for the Python official-client suite.

The server is a real `herald serve` started by crates/herald-cli/tests/python.rs, which
passes its address and the apps' credentials in the environment:

    HERALD_HOST, HERALD_PORT                    where it listens (HTTP API and WebSocket)
    HERALD_APP_ID, HERALD_KEY, HERALD_SECRET    app 1 (defaults "1", "app-key", "app-secret")
    HERALD_HOOK_APP_ID, HERALD_HOOK_KEY, HERALD_HOOK_SECRET
                                                the app whose webhooks go to HERALD_WEBHOOK_PORT
    HERALD_WEBHOOK_PORT                         where test_webhooks.py listens for them

Clients: the official server library `pusher` (PyPI), `pysher` (the Python WebSocket
client) and, where a test must see or send exact frames, a bare `websocket-client`
connection speaking the protocol as pusher-js does (RawClient).
"""

import http.server
import itertools
import json
import os
import queue
import threading
import time

import pusher
import pysher
import websocket

HOST = os.environ.get("HERALD_HOST", "127.0.0.1")
PORT = int(os.environ.get("HERALD_PORT", "6001"))
APP_ID = os.environ.get("HERALD_APP_ID", "1")
KEY = os.environ.get("HERALD_KEY", "app-key")
SECRET = os.environ.get("HERALD_SECRET", "app-secret")
HOOK_APP_ID = os.environ.get("HERALD_HOOK_APP_ID", "2")
HOOK_KEY = os.environ.get("HERALD_HOOK_KEY", "hook-key")
HOOK_SECRET = os.environ.get("HERALD_HOOK_SECRET", "hook-secret")
WEBHOOK_PORT = int(os.environ.get("HERALD_WEBHOOK_PORT", "0"))

# Long enough for a loaded CI machine, short enough that a lost frame fails fast.
TIMEOUT = 5.0

_names = itertools.count(1)


def unique(prefix):
    """A channel name no other test in this process uses."""
    return "%s-%d-%d" % (prefix, os.getpid(), next(_names))


def library(app_id=APP_ID, key=KEY, secret=SECRET, **options):
    """The official server library, pointed at Herald over plain HTTP."""
    return pusher.Pusher(
        app_id=app_id, key=key, secret=secret, ssl=False, host=HOST, port=PORT, **options
    )


def wait_until(predicate, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting for %s" % what)


class RawClient:
    """A WebSocket client that sends and reads protocol frames as they are on the wire."""

    def __init__(self, key=KEY):
        self.ws = websocket.create_connection(
            "ws://%s:%d/app/%s?protocol=7&client=js&version=8.6.0" % (HOST, PORT, key),
            timeout=TIMEOUT,
        )
        established = self.next()
        assert established["event"] == "pusher:connection_established", established
        self.socket_id = json.loads(established["data"])["socket_id"]

    def send(self, event, data, channel=None):
        frame = {"event": event, "data": data}
        if channel is not None:
            frame["channel"] = channel
        self.ws.send(json.dumps(frame))

    def next(self, timeout=TIMEOUT):
        """The next text frame as a dict (websocket-client answers pings itself)."""
        self.ws.settimeout(timeout)
        return json.loads(self.ws.recv())

    def expect(self, event, channel=None):
        frame = self.next()
        assert frame["event"] == event, "expected %s, got %r" % (event, frame)
        if channel is not None:
            assert frame.get("channel") == channel, frame
        return frame

    def subscribe(self, channel, auth=None, channel_data=None):
        """Sends pusher:subscribe as pusher-js does; returns the server's answer."""
        data = {"channel": channel, "auth": auth or ""}
        if channel_data is not None:
            data["channel_data"] = channel_data
        self.send("pusher:subscribe", data)
        return self.next()

    def subscribed(self, channel, auth=None, channel_data=None):
        answer = self.subscribe(channel, auth, channel_data)
        assert answer["event"] == "pusher_internal:subscription_succeeded", answer
        assert answer["channel"] == channel, answer
        return answer

    def expect_silence(self, seconds=0.3):
        try:
            frame = self.next(timeout=seconds)
        except websocket.WebSocketTimeoutException:
            return
        raise AssertionError("expected no frame, got %r" % frame)

    def close(self):
        self.ws.close()


class PysherClient:
    """A pysher connection whose channel events land in a queue the test reads.

    pysher registers a channel object only after it has sent `pusher:subscribe`, so its
    reader thread could dispatch the answer before there is an object to take it. The
    reader's dispatch here waits on a lock that `subscribe` holds while it subscribes and
    binds: only the threads are ordered, not a byte on the wire is changed.
    """

    def __init__(self, **options):
        self.events = queue.Queue()
        self.pongs = queue.Queue()
        self.established = threading.Event()
        self._lock = threading.Lock()
        self.client = pysher.Pusher(
            options.pop("key", KEY),
            secure=False,
            custom_host=HOST,
            port=PORT,
            log_level=30,  # logging.WARNING: no line per frame
            **options,
        )
        connection = self.client.connection
        # pysher runs websocket-client's read loop with a 100 s poll; closing the socket from
        # another thread may not wake it, which makes every disconnect wait out the join
        # timeout. A short poll only makes the loop look at its stop flag more often (no
        # pings are sent: pysher sets no ping_interval).
        connection.socket_kwargs["ping_timeout"] = 0.1
        dispatch = connection.event_handler

        def ordered(event, data, channel):
            with self._lock:
                dispatch(event, data, channel)

        connection.event_handler = ordered
        connection.bind("pusher:connection_established", lambda _: self.established.set())
        connection.bind("pusher:pong", self.pongs.put)

    def connect(self):
        self.client.connect()
        assert self.established.wait(TIMEOUT), "pysher did not connect"
        return self

    @property
    def socket_id(self):
        return self.client.connection.socket_id

    def subscribe(self, channel, *events):
        """Subscribes and binds `events` (and the subscription events); returns the
        `pusher_internal:subscription_succeeded` data."""
        name, data = self._subscribe(channel, events)
        assert name == "pusher_internal:subscription_succeeded", (name, data)
        return data

    def refused(self, channel):
        """Subscribes; returns the `pusher:subscription_error` data."""
        name, data = self._subscribe(channel, ())
        assert name == "pusher:subscription_error", (name, data)
        return data

    def _subscribe(self, channel, events):
        names = events + (
            "pusher_internal:subscription_succeeded",
            "pusher:subscription_error",
        )
        with self._lock:
            ch = self.client.subscribe(channel)
            for name in names:
                ch.bind(name, self._record, channel, name)
        return self.expect_any(channel)

    def _record(self, data, channel, name):
        self.events.put((channel, name, data))

    def expect_any(self, channel, timeout=TIMEOUT):
        try:
            got_channel, name, data = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("pysher received nothing on %s" % channel) from None
        assert got_channel == channel, (got_channel, name, data)
        return name, data

    def expect(self, channel, event, timeout=TIMEOUT):
        name, data = self.expect_any(channel, timeout)
        assert name == event, "expected %s on %s, got %s %r" % (event, channel, name, data)
        return data

    def expect_silence(self, seconds=0.3):
        try:
            got = self.events.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError("expected no event, got %r" % (got,))

    def disconnect(self):
        self.client.disconnect(timeout=TIMEOUT)


class Endpoint:
    """A local HTTP server in a thread: `handle(path, headers, body)` returns
    (status, JSON-able body); every request is kept in `requests`."""

    def __init__(self, handle, port=0):
        self.requests = []
        received = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                received.append((self.path, self.headers, body))
                status, answer = handle(self.path, self.headers, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = "http://127.0.0.1:%d/" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
