// Client events between pusher-js clients: delivery rules, presence user_id, rate limits.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { fixture, once, connected, subscribed, sleep, collect } from './harness.mjs';

const { server, client } = fixture();

describe('with client events enabled', () => {
  test('delivered to others with the sender\'s user_id on presence, never echoed', async () => {
    const { port } = await server('');
    const a = client(port, { userId: 'ann', userInfo: {} });
    const b = client(port, { userId: 'ben', userInfo: {} });
    const ca = await subscribed(a, 'presence-chat');
    const cb = await subscribed(b, 'presence-chat');
    const echo = collect(ca, 'client-typing');
    const got = new Promise((resolve) => cb.bind('client-typing', (data, meta) => resolve({ data, meta })));
    assert.equal(ca.trigger('client-typing', { on: true }), true);
    const { data, meta } = await got;
    assert.deepEqual(data, { on: true });
    assert.equal(meta.user_id, 'ann');
    await sleep(150);
    assert.equal(echo.length, 0, 'the sender must not receive its own client event');
  });

  test('private channel delivery carries no user_id', async () => {
    const { port } = await server('');
    const a = client(port);
    const b = client(port);
    const ca = await subscribed(a, 'private-whisper');
    const cb = await subscribed(b, 'private-whisper');
    const got = new Promise((resolve) => cb.bind('client-x', (data, meta) => resolve({ data, meta })));
    ca.trigger('client-x', 'hello');
    const { data, meta } = await got;
    assert.equal(data, 'hello');
    assert.equal(meta?.user_id, undefined);
  });

  test('client events on a public channel get an error and the socket stays connected', async () => {
    const { port } = await server('');
    const a = client(port);
    const ch = await subscribed(a, 'open-room');
    const err = once(a.connection, 'error');
    ch.trigger('client-nope', {});
    const e = await err;
    assert.equal(e.data.code, null);
    assert.match(e.data.message, /private and presence/);
    await sleep(100);
    assert.equal(a.connection.state, 'connected');
  });

  test('over the per-connection rate: 4301 error, excess dropped, socket stays connected', async () => {
    const { port } = await server(`
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
client_events_per_second = 2
`);
    const a = client(port);
    const b = client(port);
    const ca = await subscribed(a, 'private-fast');
    const cb = await subscribed(b, 'private-fast');
    const received = collect(cb, 'client-burst');
    const errors = [];
    a.connection.bind('error', (e) => errors.push(e.data));
    for (let i = 0; i < 10; i++) ca.trigger('client-burst', { i });
    await sleep(400);
    // At most two windows of 2 (a burst can straddle a window boundary), never all 10.
    assert.ok(received.length >= 1 && received.length <= 4, `received ${received.length}`);
    assert.ok(errors.some((e) => e.code === 4301), JSON.stringify(errors));
    assert.equal(a.connection.state, 'connected');
  });
});

test('with client events disabled: 4301 and the socket stays connected', async () => {
  const { port } = await server(`
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
client_events = false
`);
  const a = client(port);
  const b = client(port);
  const ca = await subscribed(a, 'private-off');
  const cb = await subscribed(b, 'private-off');
  const received = collect(cb, 'client-x');
  const err = once(a.connection, 'error');
  ca.trigger('client-x', {});
  const e = await err;
  assert.equal(e.data.code, 4301);
  assert.match(e.data.message, /client messaging enabled/);
  await sleep(150);
  assert.equal(received.length, 0);
  assert.equal(a.connection.state, 'connected');
  await connected(a);
});
