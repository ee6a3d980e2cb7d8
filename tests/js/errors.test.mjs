// What official clients see when something is wrong: close codes that drive pusher-js's
// reconnect decisions, and HTTP API errors surfaced by the `pusher` library.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fixture, startServer, restClient, once, connected, sleep } from './harness.mjs';

const { server, client } = fixture();

/** The Pusher code of a pusher-js connection `error` event, in either of its shapes. */
const codeOf = (e) => e?.data?.code ?? e?.error?.data?.code;

/** States pusher-js goes through from now on. */
function states(c) {
  const seen = [];
  c.connection.bind('state_change', ({ current }) => seen.push(current));
  return seen;
}

test('unknown app key: error 4001 and pusher-js does not reconnect', async () => {
  const { port } = await server('');
  const c = client(port, { key: 'no-such-key' });
  const seen = states(c);
  const err = await once(c.connection, 'error');
  assert.equal(codeOf(err), 4001);
  await sleep(1500);
  // pusher-js was already `connecting` when the listener attached: it must end
  // `disconnected` and never try again.
  assert.deepEqual(seen, ['disconnected']);
});

const disabled = `
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
enabled = false
`;

test('disabled app: WebSocket error 4003 and HTTP 403', async () => {
  const { port } = await server(disabled);
  const c = client(port);
  const seen = states(c);
  const err = await once(c.connection, 'error');
  assert.equal(codeOf(err), 4003);
  await sleep(500);
  assert.ok(!seen.includes('connected'));
  await assert.rejects(restClient(port).trigger('x', 'e', {}), (e) => e.status === 403);
});

test('over max_connections: the extra socket gets 4004', async () => {
  const { port } = await server(`
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
max_connections = 1
`);
  const first = client(port);
  await connected(first);
  const second = client(port);
  const err = await once(second.connection, 'error');
  assert.equal(codeOf(err), 4004);
  assert.equal(first.connection.state, 'connected');
});

test('a silent client is pinged and pusher-js answers, staying connected', async () => {
  const { port } = await server('activity_timeout = 1\npong_timeout = 1\n');
  const c = client(port, { activityTimeout: 60000 });
  const seen = states(c);
  await connected(c);
  await sleep(3000);
  assert.equal(c.connection.state, 'connected');
  assert.ok(!seen.includes('connecting'), `no reconnect: ${seen}`);
});

test('HTTP errors carry their status through the library', async () => {
  const { port } = await server(`
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
max_event_data_bytes = 100
`);
  const rest = restClient(port);
  const status = (p) => p.then(() => 200, (e) => ({ status: e.status, body: e.body }));

  const wrongSecret = restClient(port, { secret: 'wrong' });
  const e401 = await status(wrongSecret.trigger('c', 'e', {}));
  assert.equal(e401.status, 401);
  assert.match(JSON.parse(e401.body).error, /Invalid signature/);

  const e404 = await status(restClient(port, { appId: '999' }).trigger('c', 'e', {}));
  assert.equal(e404.status, 404);

  const e413 = await status(rest.trigger('c', 'e', 'x'.repeat(101)));
  assert.equal(e413.status, 413);
  assert.match(JSON.parse(e413.body).error, /exceeds the allowed maximum \(100 bytes\)/);

  const channels = Array.from({ length: 101 }, (_, i) => `c${i}`);
  const e400 = await status(rest.post({ path: '/events', body: { name: 'e', data: '{}', channels } }));
  assert.equal(e400.status, 400);
  assert.match(JSON.parse(e400.body).error, /Too many channels/);

  const badName = await status(rest.post({ path: '/events', body: { name: 'e', data: '{}', channels: ['bad name'] } }));
  assert.equal(badName.status, 400);

  const usersOfPublic = await status(rest.get({ path: '/channels/public-one/users' }));
  assert.equal(usersOfPublic.status, 400);

  // Malformed JSON, signed properly with the library's own query signer.
  const body = '{"name": "e", ';
  const qs = rest.createSignedQueryString({ method: 'POST', path: '/apps/1/events', body });
  const res = await fetch(`http://127.0.0.1:${port}/apps/1/events?${qs}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body,
  });
  assert.equal(res.status, 400);
  assert.match((await res.json()).error, /not valid JSON/);
});

test('SIGTERM: clients see 4200 and reconnect, the server exits 0', async () => {
  const s = await startServer('');
  const c = client(s.port);
  await connected(c);
  const err = once(c.connection, 'error');
  const seen = states(c);
  const exit = s.stop();
  assert.equal(codeOf(await err), 4200);
  assert.equal((await exit).code, 0);
  await sleep(100);
  assert.ok(seen.includes('connecting'), `pusher-js tries to reconnect at once: ${seen}`);
});
