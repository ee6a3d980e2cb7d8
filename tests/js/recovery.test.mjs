// Issue 27: event recovery for unmodified pusher-js and Laravel Echo, on one node. The link
// between the client and the server goes through a TCP relay in this file that can stop
// forwarding without closing anything (no FIN, no RST: what a tunnel or a sleeping laptop
// does), so the server keeps a silent connection while the client reconnects on a new one.
//
// pusher-js notices the dead link on its own timers: it pings after `activityTimeout` of
// silence and gives up `pongTimeout` later. Both are shortened here (1.5 s each, pusher-js
// options) so that the client reconnects within the outage instead of two minutes later;
// the server's settings are its defaults but for history, which recovery needs.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import {
  startNode, restClient, wsClient, connected, subscribed, sleep, KEY,
} from './harness.mjs';
import {
  relay, until, checkOrder, echoMember, outage10s,
} from './relay.mjs';

const { chromium } = createRequire(import.meta.url)('playwright-core');

const CONFIG = `
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
history_max_events = 500
terminate_close_code = 4200
`;

// A second node whose server drops a connection that misses a pong after 1 s, so that the
// old connection has ended (and left its entry) before the client is back: app 2 recovers
// for 1 s only, app 3 keeps 5 events a channel, app 4 is as app 1.
const SHORT = `
pong_timeout = 1

[[apps]]
id = "2"
key = "key-2"
secret = "secret-2"
history_max_events = 500
recovery_window = 1

[[apps]]
id = "3"
key = "key-3"
secret = "secret-3"
history_max_events = 5

[[apps]]
id = "4"
key = "key-4"
secret = "secret-4"
history_max_events = 500
`;

const [server, short, browser] = await Promise.all([
  startNode(CONFIG),
  startNode(SHORT),
  // The flags browser.test.mjs gives it, for the same reasons.
  chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic'],
  }),
]);
const rest = restClient(server.port);
const clients = [];
after(async () => {
  for (const c of clients) c.disconnect();
  await browser.close();
  assert.equal((await server.stop()).code, 0);
  assert.equal((await short.stop()).code, 0);
});

const client = (port, opts) => {
  const c = wsClient(port, { activityTimeout: 1500, pongTimeout: 1500, ...opts });
  clients.push(c);
  return c;
};

test('a signed-in pusher-js client gets every event published during a 10 s outage, in order', async () => {
  const link = await relay(server.port);
  const c = client(link.port, { user: { id: 'ana' } });
  c.signin();
  const { backAfter, lastAfter, tail } = await outage10s(c, link, rest);
  console.log(`node: reconnected ${backAfter} ms after the cut; last recovered event ${lastAfter} ms after the reconnect at most; unconfirmed tail replayed: ${tail} event(s)`);
  link.close();
});

/** pusher-js on `link` as a user of app `id` of the short node, signed in as `user`. */
function appClient(link, id, opts = {}) {
  const signer = restClient(short.port, { appId: id, key: `key-${id}`, secret: `secret-${id}` });
  return { signer, c: client(link.port, { key: `key-${id}`, signer, ...opts }) };
}

/** Cuts `link` while `during()` runs and at least `ms`, then mends it. */
async function outage(link, ms, during) {
  link.cut();
  const start = Date.now();
  await during();
  await sleep(Math.max(0, ms - (Date.now() - start)));
  link.mend();
}

test('an expired window and a history that rolled over give herald:recovery_failed; an encrypted channel and an Echo presence channel (taking over its silent connection) recover', async () => {
  // Echo's goes to the first node, whose pong_timeout is the default 30 s: the new
  // connection takes over from the old, silent one.
  const links = await Promise.all([short, short, short, server].map((node) => relay(node.port)));
  const [late, over, secret, echoLink] = links;
  const lateC = appClient(late, '2', { user: { id: 'lou' } });
  const overC = appClient(over, '3', { user: { id: 'ola' } });
  const secretC = appClient(secret, '4', { user: { id: 'sam' } });
  for (const { c } of [lateC, overC, secretC]) c.signin();
  // Laravel Echo, presence channel, no sign-in: the identity is the member's signed user_id.
  const echoSigner = rest;
  const echo = echoMember(echoLink.port, echoSigner, 'eve');
  clients.push(echo.connector.pusher);
  const echoGot = [];
  const room = echo.join('room').listen('.n', (d) => echoGot.push(d.n));
  await new Promise((resolve) => room.here(resolve));

  const channels = await Promise.all([
    subscribed(lateC.c, 'feed'), subscribed(overC.c, 'feed'), subscribed(secretC.c, 'private-encrypted-feed'),
  ]);
  const [lateFeed, overFeed, secretFeed] = channels;
  const failures = channels.map((ch) => {
    const got = [];
    ch.bind('herald:recovery_failed', (d) => got.push(d.reason));
    return got;
  });
  const secretGot = [];
  secretFeed.bind('n', (d) => secretGot.push(d.n));
  const pub = (signer, channel, n) => signer.trigger(channel, 'n', { n });
  await pub(lateC.signer, 'feed', 0);
  await pub(secretC.signer, 'private-encrypted-feed', 0);
  await pub(echoSigner, 'presence-room', 0);
  await until(() => secretGot.length === 1 && echoGot.length === 1, 5000, 'the first events');
  // Each link is cut for 4 s, which pusher-js notices after 3 s (its pings): the server
  // drops the old connections after their first unanswered ping (1 s), which leaves
  // their entries, and the clients come back once the links mend.
  await Promise.all([
    outage(late, 4000, () => pub(lateC.signer, 'feed', 1)),
    outage(over, 4000, async () => { for (let n = 1; n <= 12; n++) await pub(overC.signer, 'feed', n); }),
    outage(secret, 4000, async () => {
      for (let n = 1; n <= 5; n++) await pub(secretC.signer, 'private-encrypted-feed', n);
    }),
    outage(echoLink, 4000, async () => { for (let n = 1; n <= 5; n++) await pub(echoSigner, 'presence-room', n); }),
  ]);
  await until(() => failures[0].length && failures[1].length && secretGot.includes(5) && echoGot.includes(5),
    8000, 'the recoveries and the failures').catch((e) => {
    throw new Error(`${e.message}: ${JSON.stringify({ failures, secretGot, echoGot })}`);
  });
  assert.deepEqual(failures[0], ['window_expired']);
  assert.deepEqual(failures[1], ['history_gap']);
  assert.deepEqual(failures[2], []);
  // The ciphertext is replayed as sent, and decrypts. Event 0 may come twice: the link is
  // cut as soon as it arrived, sometimes before its pong is back (the unconfirmed tail).
  const tails = [checkOrder(secretGot, 6), checkOrder(echoGot, 6)];
  console.log(`encrypted and Echo presence: unconfirmed tails replayed: ${tails.join(', ')}`);
  for (const link of links) link.close();
});

/** The page browser.test.mjs drives (browser/), its pusher-js build, and the user sign-in endpoint of app 1. */
async function site(signer) {
  const files = {
    '/': ['browser/index.html', 'text/html'],
    '/page.js': ['browser/page.js', 'text/javascript'],
    '/pusher-js/pusher.min.js': ['node_modules/pusher-js/dist/web/pusher.min.js', 'text/javascript'],
  };
  const srv = http.createServer(async (req, res) => {
    const { pathname } = new URL(req.url, 'http://site');
    if (req.method === 'POST' && pathname === '/pusher/user-auth') {
      let body = '';
      for await (const chunk of req) body += chunk;
      const form = Object.fromEntries(new URLSearchParams(body));
      const signed = signer.authenticateUser(form.socket_id, { id: form.user_id });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(signed));
      return;
    }
    const file = files[pathname];
    if (!file) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': file[1] }).end(await readFile(new URL(file[0], import.meta.url)));
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { port: srv.address().port, close: () => { srv.closeAllConnections(); srv.close(); } };
}

test('pusher-js in Chromium (its own WebSocket), signed in, gets every event of a 5 s outage', async (t) => {
  const link = await relay(server.port);
  const web = await site(rest);
  const context = await browser.newContext();
  t.after(async () => { await context.close(); web.close(); link.close(); });
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${web.port}/?port=${link.port}&key=${KEY}`);
  await page.evaluate(() => window.ready);
  await page.evaluate(() => {
    window.connect('a', { user_id: 'bea' }, { activityTimeout: 1500, pongTimeout: 1500 });
    window.signin('a');
    window.subscribe('a', 'feed');
  });
  const events = () => page.evaluate(() => window.log
    .filter((e) => e.kind === 'event' && e.channel === 'feed' && e.event === 'n').map((e) => e.data.n));
  const waitFor = async (check, what) => {
    const end = Date.now() + 8000;
    while (!check(await events())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${await events()}`);
      await sleep(50);
    }
  };
  await page.waitForFunction(() => window.signedIn('a') && window.log
    .some((e) => e.channel === 'feed' && e.event === 'pusher:subscription_succeeded'));
  for (let n = 0; n < 5; n++) await rest.trigger('feed', 'n', { n });
  await waitFor((got) => got.length === 5, 'the first 5 events');
  const cutAt = Date.now();
  await outage(link, 5000, async () => {
    for (let n = 5; n < 35; n++) { await rest.trigger('feed', 'n', { n }); await sleep(100); }
  });
  await waitFor((got) => got.includes(34), 'all 35 events');
  const tail = checkOrder(await events(), 35);
  console.log(`chromium: all 35 events ${Date.now() - cutAt} ms after the cut; unconfirmed tail replayed: ${tail} event(s)`);
  assert.ok(tail <= 5);
  const failed = await page.evaluate(() => window.log.filter((e) => e.event === 'herald:recovery_failed'));
  assert.deepEqual(failed, []);
});

test('a 4200 close under a publishing loop (terminate_connections): pusher-js reconnects at once and misses nothing', async () => {
  // The single-node case of a drain's 4200: the node stays, the client comes back to it.
  // (A SIGTERM drain ends the process, and a single node's memory with it: that case needs
  // a cluster, whose nodes share what they remember.)
  const c = client(server.port, { user: { id: 'tim' } });
  c.signin();
  await connected(c);
  const loop = await subscribed(c, 'loop');
  const got = [];
  loop.bind('n', (d) => got.push(d.n));
  let closed = 0;
  c.connection.bind('state_change', ({ current }) => { if (current !== 'connected') closed++; });
  for (let n = 0; n < 40; n++) {
    if (n === 15) await rest.terminateUserConnections('tim');
    await rest.trigger('loop', 'n', { n });
    await sleep(40);
  }
  await until(() => got.includes(39), 8000, 'all 40 events');
  const tail = checkOrder(got, 40);
  console.log(`4200: the loop's 40 events all arrived; unconfirmed tail replayed: ${tail} event(s)`);
  assert.ok(closed > 0, 'the connection was closed and came back');
});
