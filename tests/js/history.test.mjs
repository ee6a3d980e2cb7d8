// Channel history through the official `pusher` library's `get`, on one node or on the
// nodes of a cluster (HERALD_CLUSTER=3: every request goes to the next node in turn), with
// pusher-js subscribed: the events it got are the ones the history pages, with serials
// increasing whichever node published them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fixture, restClient, subscribed, sleep, collect } from './harness.mjs';

const { server, client } = fixture();

test('the official library pages the history every node shares', async () => {
  const { port } = await server(`
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
history_max_events = 5
`);
  const rest = restClient(port);
  const c = client(port);
  const ch = await subscribed(c, 'kept');
  const got = collect(ch, 'ev');
  for (let n = 0; n < 8; n++) await rest.trigger('kept', 'ev', { n });
  for (let i = 0; i < 80 && got.length < 8; i++) await sleep(25);
  assert.deepEqual(got.map((e) => e.data.n), [0, 1, 2, 3, 4, 5, 6, 7]);

  const page = await (await rest.get({ path: '/channels/kept/events' })).json();
  assert.deepEqual(page.events.map((e) => e.serial), [4, 5, 6, 7, 8]);
  assert.deepEqual(page.events.map((e) => JSON.parse(e.data).n), [3, 4, 5, 6, 7]);
  const after = await (await rest.get({ path: '/channels/kept/events', params: { after: 6 } })).json();
  assert.deepEqual(after.events.map((e) => e.serial), [7, 8]);
});
