// permessage-deflate with Node's `ws` (perMessageDeflate, as browsers offer it), alone and
// under pusher-js: pusher-js's Node build opens its sockets through Runtime.getWebSocketAPI,
// which is pointed here at a `ws` WebSocket that offers deflate and compresses everything it
// sends (threshold 0), so both directions are compressed. Large events must arrive intact and
// compressed on the wire; against a cluster (HERALD_CLUSTER=3) each node compresses for its
// own subscribers.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import {
  PusherJs, startServer, restClient, wsClient, once, connected, subscribed, KEY,
} from './harness.mjs';

/**
 * Every `ws` socket pusher-js made, to read what it negotiated and read. pusher-js does not
 * expose its socket, so each is tagged with the socket id the server gave it.
 */
const sockets = [];
class DeflateWebSocket extends WebSocket {
  constructor(url) {
    super(url, { perMessageDeflate: { threshold: 0 } });
    this.on('message', (data, isBinary) => {
      const m = isBinary ? {} : JSON.parse(String(data));
      if (m.event === 'pusher:connection_established') this.pusherSocketId = JSON.parse(m.data).socket_id;
    });
    sockets.push(this);
  }
}
PusherJs.Runtime.getWebSocketAPI = () => DeflateWebSocket;

const servers = [];
const clients = [];
after(async () => {
  for (const c of clients) c.disconnect();
  for (const s of servers) assert.equal((await s.stop()).code, 0, 'server exits 0 on SIGTERM');
});

async function server(config = '') {
  const s = await startServer(config);
  servers.push(s);
  return s;
}

function client(port, opts) {
  const c = wsClient(port, opts);
  clients.push(c);
  return c;
}

/** A JSON-like payload of about `size` bytes, repetitive as real events are. */
function orders(size) {
  const items = [];
  for (let i = 0; JSON.stringify(items).length < size; i++) {
    items.push({ id: i, sku: `SKU-${(i * 7919) % 10007}`, qty: (i % 5) + 1, status: i % 3 ? 'shipped' : 'packed' });
  }
  return { items };
}

/** The socket pusher-js `c` is connected over. */
const socketOf = (c) => sockets.find((s) => s.readyState === WebSocket.OPEN
  && s.pusherSocketId === c.connection.socket_id);

test('ws alone: the offer is answered with no context takeover, and a large event arrives compressed', async () => {
  const s = await server();
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/app/${KEY}?protocol=7&client=js&version=8.4.0`,
    { perMessageDeflate: { threshold: 0 } });
  const frames = [];
  ws.on('message', (data) => frames.push(JSON.parse(String(data))));
  let agreed;
  ws.on('upgrade', (res) => { agreed = res.headers['sec-websocket-extensions']; });
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  assert.equal(agreed, 'permessage-deflate; server_no_context_takeover; client_no_context_takeover');
  assert.equal(ws.extensions, 'permessage-deflate');
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'orders' } }));
  const until = async (pred) => {
    for (let i = 0; i < 200 && !frames.some(pred); i++) await new Promise((r) => setTimeout(r, 10));
    const got = frames.find(pred);
    assert.ok(got, `never came; got ${JSON.stringify(frames.map((f) => f.event))}`);
    return got;
  };
  await until((f) => f.event === 'pusher_internal:subscription_succeeded');
  const before = ws._socket.bytesRead;
  const data = orders(8000);
  const res = await restClient(s.port).trigger('orders', 'placed', data);
  assert.equal(res.status, 200);
  const got = await until((f) => f.event === 'placed');
  assert.deepEqual(JSON.parse(got.data), data);
  const wire = ws._socket.bytesRead - before;
  const plain = JSON.stringify(got).length;
  assert.ok(wire < plain / 3, `${wire} bytes on the wire for a ${plain}-byte event`);
  ws.close();
});

test('pusher-js over ws with deflate: public, private and presence events, and client events, intact', async () => {
  const s = await server();
  const rest = restClient(s.port);
  const a = client(s.port, { userId: 'alice', userInfo: { name: 'Alice', bio: 'x'.repeat(600) } });
  const b = client(s.port, { userId: 'bob', userInfo: { name: 'Bob' } });
  await Promise.all([connected(a), connected(b)]);
  for (const c of [a, b]) {
    const ws = socketOf(c);
    assert.ok(ws, 'pusher-js connected through the deflate socket');
    assert.equal(ws.extensions, 'permessage-deflate');
  }

  const news = await subscribed(a, 'news');
  const got = once(news, 'big');
  const data = orders(20000);
  assert.equal((await rest.trigger('news', 'big', data)).status, 200);
  assert.deepEqual(await got, data);

  const [pa, pb] = await Promise.all([subscribed(a, 'private-room'), subscribed(b, 'private-room')]);
  const whisper = once(pb, 'client-typing');
  const text = orders(3000);
  assert.ok(pa.trigger('client-typing', text), 'pusher-js sent the client event');
  assert.deepEqual(await whisper, text, 'a compressed client event, relayed intact');

  const presence = await subscribed(b, 'presence-lobby');
  const added = once(presence, 'pusher:member_added');
  await subscribed(a, 'presence-lobby');
  const member = await added;
  assert.equal(member.id, 'alice');
  assert.deepEqual(member.info, { name: 'Alice', bio: 'x'.repeat(600) });
});

test('compression = false: the offer is declined and events come plain', async () => {
  const s = await server('compression = false');
  const c = client(s.port);
  await connected(c);
  const ws = socketOf(c);
  assert.equal(ws.extensions, '');
  const ch = await subscribed(c, 'news');
  const got = once(ch, 'big');
  const data = orders(5000);
  const before = ws._socket.bytesRead;
  assert.equal((await restClient(s.port).trigger('news', 'big', data)).status, 200);
  assert.deepEqual(await got, data);
  assert.ok(ws._socket.bytesRead - before > JSON.stringify(data).length, 'uncompressed on the wire');
});
