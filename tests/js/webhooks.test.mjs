// Webhooks received by a real HTTP endpoint and validated with the official `pusher`
// library's own webhook().isValid().
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { fixture, restClient, subscribed, sleep } from './harness.mjs';

const { server, client } = fixture();

/** An HTTP receiver that records each webhook; `fail` answers 500 to the first N posts. */
async function receiver({ fail = 0 } = {}) {
  const posts = [];
  let failures = fail;
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      if (failures > 0) {
        failures -= 1;
        res.writeHead(500).end();
        return;
      }
      posts.push({ headers: req.headers, body });
      res.writeHead(200).end('{}');
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  after(() => srv.close());
  const events = () => posts.flatMap((p) => JSON.parse(p.body).events);
  return { url: `http://127.0.0.1:${srv.address().port}/hook`, posts, events };
}

async function waitFor(check, ms = 5000) {
  for (let waited = 0; waited < ms; waited += 25) {
    if (check()) return;
    await sleep(25);
  }
  assert.fail(`condition not met within ${ms} ms`);
}

// The receiver listens on loopback, which an app kept in a database (HERALD_APPS_DB) may
// reach only when the operator allows it.
const app = (url, extra = '') => `
webhook_vacated_delay_ms = 100
webhook_allowed_networks = ["127.0.0.1/32"]
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
[[apps.webhooks]]
url = "${url}"
${extra}
`;

test('channel, presence, client and cache events arrive signed and valid', async () => {
  const hook = await receiver();
  const { port } = await server(app(hook.url));
  const rest = restClient(port);
  const a = client(port, { userId: 'ann', userInfo: {} });
  const b = client(port, { userId: 'ben', userInfo: {} });
  const ca = await subscribed(a, 'presence-room');
  await subscribed(b, 'presence-room');
  ca.trigger('client-wave', { hi: true });
  await subscribed(a, 'cache-empty');
  b.unsubscribe('presence-room');
  await waitFor(() => hook.events().some((e) => e.name === 'member_removed'));
  a.unsubscribe('presence-room');
  await waitFor(() => hook.events().some((e) => e.name === 'channel_vacated'));

  for (const post of hook.posts) {
    assert.equal(post.headers['content-type'], 'application/json');
    const webhook = rest.webhook({ headers: post.headers, rawBody: post.body });
    assert.equal(webhook.isValid(), true, 'the official library accepts the signature');
    assert.equal(typeof webhook.getData().time_ms, 'number');
  }
  const names = hook.events().map((e) => `${e.name}:${e.channel}`);
  for (const expected of [
    'channel_occupied:presence-room', 'member_added:presence-room', 'client_event:presence-room',
    'channel_occupied:cache-empty', 'cache_miss:cache-empty', 'member_removed:presence-room',
    'channel_vacated:presence-room',
  ]) {
    assert.ok(names.includes(expected), `${expected} in ${names}`);
  }
  const added = hook.events().filter((e) => e.name === 'member_added').map((e) => e.user_id);
  assert.deepEqual(added.sort(), ['ann', 'ben']);
  const clientEvent = hook.events().find((e) => e.name === 'client_event');
  assert.equal(clientEvent.event, 'client-wave');
  assert.equal(clientEvent.data, JSON.stringify({ hi: true }));
  assert.equal(clientEvent.user_id, 'ann');
  assert.equal(clientEvent.socket_id, a.connection.socket_id);
  // A wrong secret must not validate, so the check above is meaningful.
  const wrong = restClient(port, { secret: 'other' });
  assert.equal(wrong.webhook({ headers: hook.posts[0].headers, rawBody: hook.posts[0].body }).isValid(), false);
});

test('a quick unsubscribe/resubscribe does not flap occupied and vacated', async () => {
  const hook = await receiver();
  const { port } = await server(app(hook.url));
  const c = client(port);
  await subscribed(c, 'steady');
  await waitFor(() => hook.events().length >= 1);
  c.unsubscribe('steady');
  await subscribed(c, 'steady');
  await sleep(500);
  const lifecycle = hook.events().filter((e) => e.name.startsWith('channel_')).map((e) => e.name);
  assert.deepEqual(lifecycle, ['channel_occupied']);
});

test('event_types and channel_prefix filter what an endpoint receives', async () => {
  const hook = await receiver();
  const { port } = await server(app(hook.url, 'event_types = ["channel_occupied"]\nchannel_prefix = "private-"'));
  const c = client(port);
  await subscribed(c, 'public-x');
  await subscribed(c, 'private-x');
  await waitFor(() => hook.events().length >= 1);
  await sleep(400);
  assert.deepEqual(hook.events(), [{ name: 'channel_occupied', channel: 'private-x' }]);
});

test('a failing receiver gets the batch again', async () => {
  const hook = await receiver({ fail: 1 });
  const { port } = await server(app(hook.url));
  const c = client(port);
  await subscribed(c, 'retry-me');
  await waitFor(() => hook.events().length >= 1, 5000);
  assert.deepEqual(hook.events()[0], { name: 'channel_occupied', channel: 'retry-me' });
});
