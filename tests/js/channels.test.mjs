// pusher-js and the `pusher` library against a real server: connection, public, private,
// encrypted and presence channels, and HTTP triggers reaching subscribers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, restClient, wsClient, once, connected, subscribed, sleep, collect, SECRET,
} from './harness.mjs';

let server;
let rest;
const clients = [];
function client(opts) {
  const c = wsClient(server.port, opts);
  clients.push(c);
  return c;
}

before(async () => {
  server = await startServer();
  rest = restClient(server.port);
});
after(async () => {
  for (const c of clients) c.disconnect();
  const { code } = await server.stop();
  assert.equal(code, 0, 'server exits 0 on SIGTERM');
});

test('connects and gets a socket id of the form digits.digits', async () => {
  const c = client();
  await connected(c);
  assert.match(c.connection.socket_id, /^\d+\.\d+$/);
  const other = client();
  await connected(other);
  assert.notEqual(other.connection.socket_id, c.connection.socket_id);
});

test('public channel receives an HTTP trigger with the data untouched', async () => {
  const c = client();
  const ch = await subscribed(c, 'news');
  const got = once(ch, 'headline');
  const res = await rest.trigger('news', 'headline', { title: 'hi', n: 1 });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});
  assert.deepEqual(await got, { title: 'hi', n: 1 });
});

test('string data that is not JSON arrives as the same string', async () => {
  const c = client();
  const ch = await subscribed(c, 'plain');
  const got = once(ch, 'ev');
  await rest.trigger('plain', 'ev', 'test');
  assert.equal(await got, 'test');
});

test('trigger to several channels reaches each', async () => {
  const a = client();
  const b = client();
  const ca = await subscribed(a, 'multi-a');
  const cb = await subscribed(b, 'multi-b');
  const both = Promise.all([once(ca, 'ev'), once(cb, 'ev')]);
  await rest.trigger(['multi-a', 'multi-b'], 'ev', { x: 1 });
  assert.deepEqual(await both, [{ x: 1 }, { x: 1 }]);
});

test('socket_id exclusion skips only that connection', async () => {
  const me = client();
  const other = client();
  const mine = await subscribed(me, 'excl');
  const theirs = await subscribed(other, 'excl');
  const seenByMe = collect(mine, 'ev');
  const got = once(theirs, 'ev');
  await rest.trigger('excl', 'ev', { a: 1 }, { socket_id: me.connection.socket_id });
  assert.deepEqual(await got, { a: 1 });
  await sleep(200);
  assert.equal(seenByMe.length, 0, 'the excluded socket must not receive the event');
});

test('batch trigger delivers every event in order', async () => {
  const c = client();
  const ch = await subscribed(c, 'batch-ch');
  const seen = collect(ch, 'ev');
  const res = await rest.triggerBatch([
    { channel: 'batch-ch', name: 'ev', data: '1' },
    { channel: 'batch-ch', name: 'ev', data: '2' },
  ]);
  assert.equal(res.status, 200);
  for (let i = 0; i < 40 && seen.length < 2; i++) await sleep(25);
  assert.deepEqual(seen.map((s) => s.data), [1, 2]);
});

test('private channel: the library\'s signature is accepted', async () => {
  const c = client();
  const ch = await subscribed(c, 'private-room');
  const got = once(ch, 'ev');
  await rest.trigger('private-room', 'ev', { secret: true });
  assert.deepEqual(await got, { secret: true });
});

test('private channel: a signature made with another secret is refused, socket stays up', async () => {
  const wrong = restClient(server.port, { secret: 'not-the-secret' });
  const c = client({ signer: wrong });
  const ch = c.subscribe('private-denied');
  const err = await once(ch, 'pusher:subscription_error');
  assert.equal(err.type, 'AuthError');
  assert.equal(err.status, 401);
  assert.match(err.error, /Invalid signature/);
  assert.equal(c.connection.state, 'connected');
  const ok = await subscribed(c, 'still-works');
  assert.ok(ok);
});

test('presence: members, member_added and member_removed, deduplicated by user id', async () => {
  const alice = client({ userId: 'alice', userInfo: { name: 'Alice' } });
  const ch = await subscribed(alice, 'presence-lobby');
  assert.equal(ch.members.count, 1);
  assert.deepEqual(ch.members.me, { id: 'alice', info: { name: 'Alice' } });

  const added = collect(ch, 'pusher:member_added');
  const removed = collect(ch, 'pusher:member_removed');
  const bob1 = client({ userId: 'bob', userInfo: { name: 'Bob' } });
  const bobCh = await subscribed(bob1, 'presence-lobby');
  assert.equal(bobCh.members.count, 2);
  assert.deepEqual(bobCh.members.get('alice'), { id: 'alice', info: { name: 'Alice' } });
  const bob2 = client({ userId: 'bob', userInfo: { name: 'Bob' } });
  await subscribed(bob2, 'presence-lobby');
  await sleep(150);
  assert.equal(added.length, 1, 'a second connection of bob adds no member');
  assert.deepEqual(added[0].data, { id: 'bob', info: { name: 'Bob' } });

  const users = await (await rest.get({ path: '/channels/presence-lobby/users' })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ['alice', 'bob']);
  const info = await (await rest.get({
    path: '/channels/presence-lobby', params: { info: 'user_count,subscription_count' },
  })).json();
  assert.deepEqual(info, { occupied: true, user_count: 2, subscription_count: 3 });

  bob1.unsubscribe('presence-lobby');
  await sleep(150);
  assert.equal(removed.length, 0, 'bob still has a connection');
  bob2.disconnect();
  const gone = await once(ch, 'pusher:member_removed').catch(() => removed[0]?.data);
  assert.equal((gone ?? removed[0]?.data).id, 'bob');
  assert.equal(ch.members.count, 1);
});

test('encrypted channel: pusher-js decrypts what the library encrypted', async () => {
  const c = client();
  const ch = await subscribed(c, 'private-encrypted-vault');
  const got = once(ch, 'ev');
  await rest.trigger('private-encrypted-vault', 'ev', { gold: 42 });
  assert.deepEqual(await got, { gold: 42 });
});

test('channel queries through the library', async () => {
  const c = client({ userId: 'q', userInfo: {} });
  await subscribed(c, 'presence-query');
  await subscribed(c, 'query-public');
  const list = await (await rest.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })).json();
  assert.deepEqual(list.channels['presence-query'], { user_count: 1 });
  assert.equal(list.channels['query-public'], undefined, 'prefix filter applies');
  const one = await (await rest.get({ path: '/channels/query-public', params: { info: 'subscription_count' } })).json();
  assert.deepEqual(one, { occupied: true, subscription_count: 1 });
  const empty = await (await rest.get({ path: '/channels/nobody-here' })).json();
  assert.deepEqual(empty, { occupied: false });
  const triggered = await (await rest.trigger('query-public', 'ev', {}, { info: 'subscription_count' })).json();
  assert.deepEqual(triggered, { channels: { 'query-public': { subscription_count: 1 } } });
  assert.equal(SECRET, 'app-secret');
});
