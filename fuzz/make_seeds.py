#!/usr/bin/env python3
"""Writes the hand-made seed inputs into fuzz/corpus/<target>/seed-*.

The seeds follow each target's input layout (see the comment at the top of each
fuzz_targets/*.rs). They are starting points only: the committed corpora are these plus
what the fuzzer found, minimized with `cargo fuzz cmin`. Re-running this is harmless.
"""
import hashlib
import hmac
import json
import os
import struct
import urllib.parse
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# --- websocket_frames: max_message (u16 LE; top bit: permessage-deflate), 4 chunk-size
# bytes, then client frames ---

def frame(opcode, payload=b"", fin=True, mask=MASK, masked=True):
    if isinstance(payload, str):
        payload = payload.encode()
    out = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    m = 0x80 if masked else 0
    if n < 126:
        out += bytes([m | n])
    elif n <= 0xFFFF:
        out += bytes([m | 126]) + struct.pack(">H", n)
    else:
        out += bytes([m | 127]) + struct.pack(">Q", n)
    if not masked:
        return out + payload
    return out + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws(name, stream, max_message=4096, chunks=(255, 255, 255, 255)):
    write("websocket_frames", name, struct.pack("<H", max_message) + bytes(chunks) + stream)


SUB = '{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}'
ws("text", frame(0x1, "Hello"))
ws("text-bytewise", frame(0x1, "Hello"), chunks=(0, 0, 0, 0))
ws("binary", frame(0x2, bytes(range(40))))
ws("ping-pong", frame(0x9, "p") + frame(0xA, "p"))
ws("close-empty", frame(0x8))
ws("close-reason", frame(0x8, struct.pack(">H", 1000) + b"bye"))
ws("close-one-byte", frame(0x8, b"\x03"))
ws("close-bad-utf8", frame(0x8, struct.pack(">H", 1000) + b"\xff"))
ws("fragmented", frame(0x1, "Hel", fin=False) + frame(0x9, "p") + frame(0x0, "lo"), chunks=(3, 1, 7, 2))
ws("fragmented-utf8-split", frame(0x1, "h\xc3".encode("latin-1"), fin=False) + frame(0x0, b"\xa9llo"), chunks=(1, 2, 3, 4))
ws("len16", frame(0x1, "a" * 300), chunks=(100, 3, 50, 255))
ws("len64-too-big", bytes([0x81, 0xFF]) + struct.pack(">Q", 1 << 40) + MASK, max_message=1024)
ws("len64-top-bit", bytes([0x81, 0xFF]) + struct.pack(">Q", 1 << 63) + MASK)
ws("fragments-too-big", frame(0x1, "a" * 600, fin=False) + frame(0x0, "a" * 600), max_message=1024)
ws("invalid-utf8", frame(0x1, b"\xff\xfe"))
ws("unmasked", frame(0x1, "x", masked=False))
ws("rsv", bytes([0xC1]) + frame(0x1, "x")[1:])
ws("unknown-opcode", frame(0x3, "x"))
ws("fragmented-ping", frame(0x9, "", fin=False))
ws("ping-126", frame(0x9, b"\0" * 126))
ws("continuation-alone", frame(0x0, "x"))
ws("two-starts", frame(0x1, "a", fin=False) + frame(0x1, "b"))
ws("pusher-session", frame(0x1, SUB) + frame(0x1, '{"event":"pusher:ping","data":{}}') + frame(0x8, struct.pack(">H", 1000)), chunks=(17, 5, 200, 1))
ws("truncated", frame(0x1, "Hello world")[:-3])


def deflated(data):
    """A message compressed as RFC 7692 says: raw DEFLATE, sync flush, tail removed."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data.encode() if isinstance(data, str) else data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def rsv1(frame_bytes):
    return bytes([frame_bytes[0] | 0x40]) + frame_bytes[1:]


DEFLATE = 0x8000
ws("deflate-text", rsv1(frame(0x1, deflated(SUB))), max_message=DEFLATE | 4096)
ws("deflate-fragmented", rsv1(frame(0x1, deflated(SUB * 3)[:20], fin=False)) + frame(0x9, "p")
   + frame(0x0, deflated(SUB * 3)[20:]), max_message=DEFLATE | 4096, chunks=(5, 1, 30, 2))
ws("deflate-bomb", rsv1(frame(0x1, deflated(" " * 200000))), max_message=DEFLATE | 4096)
ws("deflate-corrupt", rsv1(frame(0x1, b"\xff" * 20)), max_message=DEFLATE | 4096)
ws("deflate-not-utf8", rsv1(frame(0x1, deflated(b"\xff\xfe"))), max_message=DEFLATE | 4096)
ws("deflate-rsv1-continuation", frame(0x1, "a", fin=False) + rsv1(frame(0x0, deflated("b"))),
   max_message=DEFLATE | 4096)
ws("deflate-rsv1-ping", rsv1(frame(0x9, "p")), max_message=DEFLATE | 4096)
ws("deflate-off", rsv1(frame(0x1, deflated(SUB))), max_message=4096)

# --- client_message: the text of one frame ---

for name, text in {
    "subscribe-public": SUB,
    "subscribe-private": '{"event":"pusher:subscribe","data":{"auth":"app-key:5e3a2b4c3d2e1f0a","channel":"private-orders"}}',
    "subscribe-presence": '{"event":"pusher:subscribe","data":{"channel":"presence-x","auth":"k:sig","channel_data":"{\\"user_id\\":\\"1\\"}"}}',
    "subscribe-presence-info": '{"event":"pusher:subscribe","data":{"auth":"k:s","channel_data":"{\\"user_id\\":10,\\"user_info\\":{\\"name\\":\\"Mr. Pusher\\"}}","channel":"presence-room"}}',
    "subscribe-string-data": '{"event":"pusher:subscribe","data":"{\\"channel\\":\\"a\\",\\"auth\\":null}"}',
    "subscribe-encrypted": '{"event":"pusher:subscribe","data":{"auth":"k:s","channel":"private-encrypted-x"}}',
    "unsubscribe": '{"event":"pusher:unsubscribe","data":{"channel":"my-channel"}}',
    "ping": '{"event":"pusher:ping","data":{}}',
    "pong": '{"event":"pusher:pong","data":{}}',
    "signin": '{"event":"pusher:signin","data":{"auth":"k:abc","user_data":"{\\"id\\":\\"12345\\",\\"user_info\\":{\\"name\\":\\"Alice\\"},\\"watchlist\\":[\\"2\\",\\"3\\"]}"}}',
    "client-event": '{"event":"client-typing","channel":"private-c","data":{"typing": true}}',
    "client-event-string": '{"event":"client-msg","channel":"presence-room","data":"{\\"text\\":\\"h\\u00e9\\"}"}',
    "client-event-no-data": '{"event":"client-x","channel":"private-c"}',
    "client-event-no-channel": '{"event":"client-x","data":1}',
    "unknown-pusher": '{"event":"pusher:foo","data":{}}',
    "internal": '{"event":"pusher_internal:member_added","data":{}}',
    "not-client": '{"event":"hello","channel":"x"}',
    "missing-data": '{"event":"pusher:subscribe"}',
    "escaped-event": '{"event":"client-\\u0041","channel":"private-\\n","data":[1,2,{"a":null}]}',
    "not-json": "not json",
    "array": "[1,2]",
    "deep": "[" * 200,
}.items():
    write("client_message", name, text)

# --- signature: 27-byte header (now, skew, offset as i64 LE; flip pos; flip mask; body
# flag), then query \0 method \0 path \0 body \0 secret \0 key \0 params ---

KEY, SECRET, TS = "app-key", "app-secret", 1700000000


def signed(method, path, params, body=None):
    """What pusher-http-node sends: sorted params, raw values, signature last."""
    all_ = dict(params, auth_key=KEY, auth_timestamp=str(TS), auth_version="1.0")
    if body is not None:
        all_["body_md5"] = hashlib.md5(body.encode()).hexdigest()
    pairs = sorted(all_.items())
    canonical = "&".join(f"{k}={v}" for k, v in pairs)
    sig = hmac.new(SECRET.encode(), f"{method}\n{path}\n{canonical}".encode(), hashlib.sha256).hexdigest()
    return "&".join(f"{k}={urllib.parse.quote(v, safe=',')}" for k, v in pairs) + "&auth_signature=" + sig


def sig_seed(name, query, method, path, body, params="", now=TS, skew=600, offset=5, flip=(3, 1, 0)):
    header = struct.pack("<qqq", now, skew, offset) + bytes(flip)
    fields = [query, method, path, body, SECRET, KEY, params]
    write("signature", name, header + b"\0".join(f.encode() for f in fields))


BODY = json.dumps({"name": "my-event", "channels": ["my-channel"], "data": '{"message":"hello"}'})
sig_seed("trigger", signed("POST", "/apps/1/events", {}, BODY), "POST", "/apps/1/events", BODY)
sig_seed("channels-info", signed("GET", "/apps/1/channels", {"info": "user_count,subscription_count", "filter_by_prefix": "presence-"}),
         "GET", "/apps/1/channels", "", "info=user_count,subscription_count&filter_by_prefix=presence-")
sig_seed("users", signed("GET", "/apps/1/channels/presence-room/users", {}), "GET", "/apps/1/channels/presence-room/users", "")
sig_seed("expired", signed("GET", "/apps/1/channels", {}), "GET", "/apps/1/channels", "", now=TS + 601)
sig_seed("extreme-times", "auth_key=k&auth_timestamp=-9223372036854775808&auth_version=1.0&auth_signature=00",
         "GET", "/", "", now=(1 << 63) - 1, skew=-1, offset=-(1 << 63))
sig_seed("bad-md5", signed("POST", "/apps/1/events", {}, "{}"), "POST", "/apps/1/events", "{ }")
sig_seed("repeated", "auth_key=a&auth_key=b&channels[]=x&channels[]=y&auth_timestamp=1&auth_version=1.0&auth_signature=ab&auth_signature=cd",
         "GET", "/apps/1/channels", "", params="channels[]=x&channels[]=y&A+b=%zz&=&x")
sig_seed("escapes", "auth_key=%E2%82%AC+x&auth_timestamp=%31&auth_version=1%2E0&auth_signature=%ZZ", "get", "/apps/1/x?y", "", params="k=v w&#=%&é=ü")
sig_seed("missing", "auth_key=k&auth_version=1.0", "GET", "/", "")
sig_seed("bad-version", "auth_key=k&auth_timestamp=1&auth_version=2.0&auth_signature=x", "GET", "/", "")

# --- channel_presence: max_len (u16 LE), flip pos, flip mask, then channel \0
# channel_data \0 user_data \0 key \0 secret \0 socket_id \0 auth ---


def cp(name, channel, channel_data="", user_data="", auth="", max_len=200, socket_id="1234.5678", flip=(5, 3)):
    fields = [channel, channel_data, user_data, KEY, SECRET, socket_id, auth]
    write("channel_presence", name, struct.pack("<H", max_len) + bytes(flip) + b"\0".join(f.encode() for f in fields))


def channel_auth(socket_id, channel, data=None):
    s = f"{socket_id}:{channel}" + (f":{data}" if data is not None else "")
    return KEY + ":" + hmac.new(SECRET.encode(), s.encode(), hashlib.sha256).hexdigest()


cp("public", "my-channel")
cp("private", "private-orders", auth=channel_auth("1234.5678", "private-orders"))
cp("presence", "presence-x", '{"user_id":"1"}', auth=channel_auth("1234.5678", "presence-x", '{"user_id":"1"}'))
cp("presence-info", "presence-cache-room", '{"user_id":10,"user_info":{"name":"Mr. Pusher"}}')
cp("presence-bad-info", "presence-room", '{"user_id":"1","user_info":"x"}')
cp("presence-bad-id", "presence-room", '{"user_id":1.5}')
cp("server-to-user", "#server-to-user-a b:é", user_data='{"id":"a b:é"}')
cp("user-data", "private-encrypted-cache-x",
   user_data='{"id":"12345","user_info":{"name":"Alice"},"watchlist":["2","3"]}',
   auth=KEY + ":" + hmac.new(SECRET.encode(), b'1234.5678::user::{"id":"12345","user_info":{"name":"Alice"},"watchlist":["2","3"]}', hashlib.sha256).hexdigest())
cp("user-data-bad", "cache-x", user_data='{"id":"1","watchlist":[2]}')
cp("too-long", "a" * 165, max_len=164)
cp("bad-chars", "a b/c*é", auth="no-colon")
cp("hash", "#x", auth="other:abc")
cp("empty", "", max_len=0)

# --- config: TOML \0 then HERALD_PORT, HOST, ADAPTER, REDIS_URL, APP_ID, APP_KEY,
# APP_SECRET, ACTIVITY_TIMEOUT, PONG_TIMEOUT (a missing value is unset) ---

README_APPS = '''port = 6001
[[apps]]
id = "1"
key = "my-key"
secret = "my-secret"
client_events = false

[[apps.webhooks]]
url = "https://example.com/pusher/webhook"
event_types = ["channel_occupied", "channel_vacated", "member_added", "member_removed"]
'''
README_PLANS = '''[plans.free]
publishes_per_second = 10
reads_per_second = 10
messages_per_day = 200000
max_connections = 100
client_events_per_second = 10

[[apps]]
id = "2"
key = "free-key"
secret = "free-secret"
plan = "free"
'''
README_CLUSTER = 'adapter = "redis"\nredis_url = "redis://10.0.0.5:6379/0"\n'
FULL = '''host = "0.0.0.0"
port = 0
activity_timeout = 60
pong_timeout = 10
max_message_bytes = 1024
require_protocol = true
outbox_max_bytes = 1024
shutdown_grace = 0
webhook_vacated_delay_ms = 0
adapter = "local"
redis_prefix = "h"
node_timeout = 1

[[apps]]
id = "a_1"
key = "k"
secret = "s"
enabled = false
max_connections = 0
max_event_data_bytes = 1
max_channels_per_trigger = 1
max_events_per_batch = 1
max_channel_name_length = 1
client_events = true
client_events_per_second = 1
max_presence_members = 1
max_presence_user_id_length = 1
max_presence_user_info_bytes = 1
terminate_close_code = 4200
user_authentication_timeout = 30
cache_ttl = 1
subscription_count = true

[[apps.webhooks]]
url = "http://127.0.0.1:9/hook"
event_types = ["client_event", "cache_miss", "subscription_count"]
channel_prefix = "private-"

[[apps]]
id = "b"
key = "k2"
secret = "s"
'''


def cfg(name, toml, *env):
    write("config", name, "\0".join((toml,) + env))


cfg("empty", "")
cfg("readme-apps", README_APPS)
cfg("readme-plans", README_PLANS)
cfg("readme-cluster", README_CLUSTER)
cfg("full", FULL)
cfg("env-only", "", "7000", "0.0.0.0", "redis", "unix:///tmp/redis.sock", "42", "key", "secret", "5", "5")
cfg("env-with-apps", README_APPS, "", "", "", "", "9")
cfg("bad-values", 'adapter = "nats"\nport = 70000\n[[apps]]\nid = "a/b"\nkey = "a b"\nsecret = ""\n', "x")
cfg("duplicates", '[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\n[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\nplan = "nope"\n')
cfg("unknown-key", 'colour = "blue"\n[plans.x]\nspeed = 1\n')
