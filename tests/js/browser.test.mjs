// pusher-js's browser build in a real headless Chromium (Debian's /usr/bin/chromium, driven
// by playwright-core) against a real `herald serve`. A local HTTP server serves the test page
// (browser/), pusher-js's dist/web builds from node_modules, and the app's auth endpoints,
// which sign with the official `pusher` library: the browser does its own WebSocket and its
// own form-encoded XHR auth requests, as on a real site. One node, apps in the config file
// (node_suite.rs runs this file in no other mode).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { startNode, restClient, KEY } from './harness.mjs';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const CHROMIUM = '/usr/bin/chromium';
// The flags of this machine's notes: without the background-networking ones Chromium keeps
// trying Google's hosts, which the sandbox's closed network refuses. /dev/shm is large here,
// so --disable-dev-shm-usage is not needed (Debian's launcher adds it when /dev/shm is small).
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic',
];

let browser;
let herald;
let rest;
let site;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing (Debian: apt-get install chromium)`);
  // launch() gives every run a fresh temporary profile, removed on close.
  [browser, herald] = await Promise.all([
    chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS }),
    startNode(''),
  ]);
  rest = restClient(herald.port);
  site = await startSite(rest);
});

after(async () => {
  await browser?.close();
  await site?.close();
  if (herald) assert.equal((await herald.stop()).code, 0, 'server exits 0 on SIGTERM');
});

const FILES = {
  '/': ['browser/index.html', 'text/html'],
  '/page.js': ['browser/page.js', 'text/javascript'],
  '/pusher-js/pusher.min.js': ['node_modules/pusher-js/dist/web/pusher.min.js', 'text/javascript'],
  '/pusher-js/pusher-with-encryption.min.js': [
    'node_modules/pusher-js/dist/web/pusher-with-encryption.min.js', 'text/javascript',
  ],
};

/**
 * The site the page comes from: its files, and the app's auth endpoints as pusher-js's
 * default ajax transport calls them (POST, form-encoded socket_id and channel_name, plus the
 * page's extra fields user_id and name). Every auth request is kept in `authRequests`.
 * `forge=1` signs with a wrong secret.
 */
function startSite(signer) {
  const forger = restClient(0, { secret: 'not-the-secret' });
  const authRequests = [];
  const server = http.createServer(async (req, res) => {
    const { pathname } = new URL(req.url, 'http://site');
    if (req.method === 'POST' && (pathname === '/pusher/auth' || pathname === '/pusher/user-auth')) {
      let body = '';
      for await (const chunk of req) body += chunk;
      const form = Object.fromEntries(new URLSearchParams(body));
      authRequests.push({ path: pathname, contentType: req.headers['content-type'], form });
      const lib = form.forge === '1' ? forger : signer;
      const user = { id: form.user_id, user_info: { name: form.name } };
      try {
        const signed = pathname === '/pusher/user-auth'
          ? lib.authenticateUser(form.socket_id, user)
          : lib.authorizeChannel(form.socket_id, form.channel_name, form.channel_name.startsWith('presence-')
            ? { user_id: user.id, user_info: user.user_info }
            : undefined);
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(signed));
      } catch (e) {
        res.writeHead(403, { 'content-type': 'text/plain' }).end(String(e));
      }
      return;
    }
    const file = FILES[pathname];
    if (req.method !== 'GET' || !file) {
      res.writeHead(404).end();
      return;
    }
    const body = await readFile(new URL(file[0], import.meta.url));
    res.writeHead(200, { 'content-type': file[1], 'cache-control': 'no-store' }).end(body);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({
      port: server.address().port,
      authRequests,
      close() {
        server.closeAllConnections();
        return new Promise((r) => server.close(() => r()));
      },
    }));
  });
}

/**
 * `n` pages (tabs) of one fresh browser context, each with pusher-js loaded and pointed at
 * `port`; closed after test `t`. Each page keeps the WebSocket frames it received
 * (`page.frames`) and its uncaught errors (`page.errors`).
 */
async function pages(t, n, { port = herald.port, build = 'plain' } = {}) {
  const context = await browser.newContext();
  t.after(() => context.close());
  const opened = [];
  for (let i = 0; i < n; i++) {
    const page = await context.newPage();
    page.frames = [];
    page.sockets = [];
    page.errors = [];
    page.on('pageerror', (e) => page.errors.push(e.message));
    page.on('websocket', (ws) => {
      page.sockets.push(ws.url());
      ws.on('framereceived', ({ payload }) => page.frames.push(String(payload)));
    });
    await page.goto(`http://127.0.0.1:${site.port}/?port=${port}&key=${KEY}&build=${build}`);
    await page.evaluate(() => window.ready);
    opened.push(page);
  }
  return opened;
}

/** How many entries the page has logged so far (to wait for one that comes later). */
const logLength = (page) => page.evaluate(() => window.log.length);

/**
 * Waits for the first entry in the page's log (from index `since`) whose fields equal all
 * of `fields`, and returns it; on a timeout the error shows the whole log.
 */
async function logged(page, fields, { since = 0, timeout = 5000 } = {}) {
  try {
    const handle = await page.waitForFunction(
      ({ fields, since }) => window.log.slice(since)
        .find((e) => Object.entries(fields).every(([k, v]) => e[k] === v)),
      { fields, since },
      { timeout, polling: 20 },
    );
    return await handle.jsonValue();
  } catch (e) {
    const log = await page.evaluate(() => window.log).catch(() => []);
    throw new Error(`${e.message}\nwaiting for ${JSON.stringify(fields)}; the page logged:\n`
      + `${log.map((entry) => JSON.stringify(entry)).join('\n')}\nerrors: ${page.errors.join('; ')}`);
  }
}

/** Makes client `name` in the page (auth fields `auth`) and waits until it is connected. */
async function connect(page, name, auth = {}) {
  await page.evaluate(([n, a]) => window.connect(n, a), [name, auth]);
  return logged(page, { client: name, kind: 'state', state: 'connected' });
}

/** Subscribes and waits for pusher:subscription_succeeded; returns its data. */
async function subscribe(page, name, channel, { since = 0 } = {}) {
  await page.evaluate(([n, c]) => window.subscribe(n, c), [name, channel]);
  const ok = await logged(page, { client: name, channel, event: 'pusher:subscription_succeeded' }, { since });
  return ok.data;
}

test('connects over a WebSocket of its own with a socket id', async (t) => {
  const [page] = await pages(t, 1);
  const { socketId } = await connect(page, 'a');
  assert.match(socketId, /^\d+\.\d+$/);
  assert.equal(page.sockets.length, 1);
  const url = new URL(page.sockets[0]);
  assert.equal(url.origin, `ws://127.0.0.1:${herald.port}`);
  assert.equal(url.pathname, `/app/${KEY}`);
  assert.equal(url.searchParams.get('protocol'), '7');
  assert.equal(url.searchParams.get('client'), 'js');
  assert.ok(page.frames.some((f) => f.includes('pusher:connection_established')));
  assert.deepEqual(page.errors, []);
});

test('public channel receives an HTTP trigger', async (t) => {
  const [page] = await pages(t, 1);
  await connect(page, 'a');
  await subscribe(page, 'a', 'news');
  const res = await rest.trigger('news', 'headline', { title: 'hi', n: 1 });
  assert.equal(res.status, 200);
  const got = await logged(page, { client: 'a', channel: 'news', event: 'headline' });
  assert.deepEqual(got.data, { title: 'hi', n: 1 });
});

test('private channel: the browser posts form-encoded auth and gets the event', async (t) => {
  const [page] = await pages(t, 1);
  const { socketId } = await connect(page, 'a');
  const before = site.authRequests.length;
  await subscribe(page, 'a', 'private-room');
  const requests = site.authRequests.slice(before);
  assert.equal(requests.length, 1);
  assert.equal(requests[0].path, '/pusher/auth');
  assert.equal(requests[0].contentType, 'application/x-www-form-urlencoded');
  assert.equal(requests[0].form.socket_id, socketId);
  assert.equal(requests[0].form.channel_name, 'private-room');
  await rest.trigger('private-room', 'ev', { secret: true });
  const got = await logged(page, { client: 'a', channel: 'private-room', event: 'ev' });
  assert.deepEqual(got.data, { secret: true });
});

test('private channel: a forged signature is refused and the socket stays up', async (t) => {
  const [page] = await pages(t, 1);
  await connect(page, 'a', { forge: '1' });
  await page.evaluate(() => window.subscribe('a', 'private-forged'));
  const err = await logged(page, { client: 'a', channel: 'private-forged', event: 'pusher:subscription_error' });
  assert.equal(err.data.type, 'AuthError');
  assert.equal(err.data.status, 401);
  await subscribe(page, 'a', 'still-works');
  const log = await page.evaluate(() => window.log);
  assert.ok(!log.some((e) => e.channel === 'private-forged' && e.event === 'pusher:subscription_succeeded'));
  assert.deepEqual(log.filter((e) => e.kind === 'state').map((e) => e.state), ['connected'],
    'one connection all along');
});

test('presence: members, then member_added and member_removed as a tab opens and closes', async (t) => {
  const [alice, bob] = await pages(t, 2);
  await connect(alice, 'alice', { user_id: 'alice', name: 'Alice' });
  await subscribe(alice, 'alice', 'presence-lobby');
  const mine = await alice.evaluate(() => window.members('alice', 'presence-lobby'));
  assert.deepEqual(mine, {
    count: 1, me: { id: 'alice', info: { name: 'Alice' } }, all: [{ id: 'alice', info: { name: 'Alice' } }],
  });

  await connect(bob, 'bob', { user_id: 'bob', name: 'Bob' });
  await subscribe(bob, 'bob', 'presence-lobby');
  const bobs = await bob.evaluate(() => window.members('bob', 'presence-lobby'));
  assert.deepEqual(bobs.all, [{ id: 'alice', info: { name: 'Alice' } }, { id: 'bob', info: { name: 'Bob' } }]);
  assert.deepEqual(bobs.me, { id: 'bob', info: { name: 'Bob' } });
  const added = await logged(alice, { client: 'alice', channel: 'presence-lobby', event: 'pusher:member_added' });
  assert.deepEqual(added.data, { id: 'bob', info: { name: 'Bob' } });

  await bob.close();
  const removed = await logged(alice, { client: 'alice', channel: 'presence-lobby', event: 'pusher:member_removed' });
  assert.equal(removed.data.id, 'bob');
  assert.equal((await alice.evaluate(() => window.members('alice', 'presence-lobby'))).count, 1);
});

test('encrypted channel: ciphertext on the wire, decrypted by the browser build', async (t) => {
  const [page] = await pages(t, 1, { build: 'encrypted' });
  await connect(page, 'a');
  await subscribe(page, 'a', 'private-encrypted-vault');
  await rest.trigger('private-encrypted-vault', 'ev', { gold: 42 });
  const got = await logged(page, { client: 'a', channel: 'private-encrypted-vault', event: 'ev' });
  assert.deepEqual(got.data, { gold: 42 });
  const frame = page.frames.map((f) => JSON.parse(f)).find((f) => f.event === 'ev');
  assert.ok(frame, 'the event arrived on the socket');
  const payload = JSON.parse(frame.data);
  assert.deepEqual(Object.keys(payload).sort(), ['ciphertext', 'nonce']);
  assert.ok(!frame.data.includes('gold'));
});

/** The node's herald_ws_bytes_sent_total for app 1: what went on the wire. */
async function bytesSent() {
  const text = await (await fetch(`http://${herald.admin}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('herald_ws_bytes_sent_total{app="1"}'));
  assert.ok(line, 'the metric is served');
  return Number(line.split(' ').pop());
}

test('permessage-deflate: Chromium negotiates it, and large events arrive intact and compressed', async (t) => {
  const [page] = await pages(t, 1);
  // The handshake as the browser saw it, from the DevTools protocol: page scripts cannot
  // read WebSocket headers.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  const handshakes = [];
  cdp.on('Network.webSocketWillSendHandshakeRequest', ({ request }) => handshakes.push({ request }));
  cdp.on('Network.webSocketHandshakeResponseReceived', ({ response }) => handshakes.push({ response }));
  const header = (headers, name) => Object.entries(headers)
    .find(([k]) => k.toLowerCase() === name)?.[1];
  await connect(page, 'a');
  const offer = handshakes.find((h) => h.request);
  const answer = handshakes.find((h) => h.response);
  assert.match(header(offer.request.headers, 'sec-websocket-extensions'), /^permessage-deflate/);
  assert.equal(answer.response.status, 101);
  const agreed = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';
  assert.equal(header(answer.response.headers, 'sec-websocket-extensions'), agreed);
  // The page's WebSocket took it (a response it refused would have failed the connection).
  assert.equal(await page.evaluate(() => window.extensions('a')), agreed);

  await subscribe(page, 'a', 'orders');
  const items = [];
  for (let i = 0; JSON.stringify(items).length < 20000; i++) {
    items.push({ id: i, sku: `SKU-${(i * 7919) % 10007}`, qty: (i % 5) + 1, status: i % 3 ? 'shipped' : 'packed' });
  }
  const before = await bytesSent();
  assert.equal((await rest.trigger('orders', 'placed', { items })).status, 200);
  const got = await logged(page, { client: 'a', channel: 'orders', event: 'placed' });
  assert.deepEqual(got.data, { items });
  const wire = (await bytesSent()) - before;
  const plain = JSON.stringify(JSON.stringify({ items })).length;
  assert.ok(wire < plain / 3, `${wire} bytes on the wire for ${plain} bytes of data`);
  assert.deepEqual(page.errors, []);
});

test('client events between two browser tabs on a private channel', async (t) => {
  const [a, b] = await pages(t, 2);
  await Promise.all([connect(a, 'a'), connect(b, 'b')]);
  await Promise.all([subscribe(a, 'a', 'private-chat'), subscribe(b, 'b', 'private-chat')]);
  assert.equal(await a.evaluate(() => window.trigger('a', 'private-chat', 'client-typing', { who: 'a' })), true);
  const typing = await logged(b, { client: 'b', channel: 'private-chat', event: 'client-typing' });
  assert.deepEqual(typing.data, { who: 'a' });
  assert.equal(await b.evaluate(() => window.trigger('b', 'private-chat', 'client-reply', { who: 'b' })), true);
  const reply = await logged(a, { client: 'a', channel: 'private-chat', event: 'client-reply' });
  assert.deepEqual(reply.data, { who: 'b' });
  // The reply was sent after b got a's event, so an echo of a's own event would be in first.
  const log = await a.evaluate(() => window.log);
  assert.ok(!log.some((e) => e.event === 'client-typing'), 'the sender does not get its own client event');
});

test('sign-in, then an event sent to the user', async (t) => {
  const [page] = await pages(t, 1);
  const { socketId } = await connect(page, 'carol', { user_id: 'carol', name: 'Carol' });
  const before = site.authRequests.length;
  await page.evaluate(() => window.signin('carol'));
  await page.waitForFunction(() => window.signedIn('carol'), null, { timeout: 5000, polling: 20 });
  const [request] = site.authRequests.slice(before);
  assert.equal(request.path, '/pusher/user-auth');
  assert.equal(request.contentType, 'application/x-www-form-urlencoded');
  assert.equal(request.form.socket_id, socketId);
  const res = await rest.sendToUser('carol', 'greeting', { hi: 1 });
  assert.equal(res.status, 200);
  const got = await logged(page, { client: 'carol', channel: null, event: 'greeting' });
  assert.deepEqual(got.data, { hi: 1 });
});

/**
 * Client `a` of a fresh page, connected to a node of its own and subscribed to
 * `restart-ch`; `replace(node)` ends that node as the test wants, starts a new one on the
 * same port, and resolves with it. Checks that pusher-js, untouched, gets a new socket,
 * subscribes again and receives an event triggered on the new node.
 */
async function restartAndReconnect(t, replace, { timeout }) {
  const nodes = [await startNode('')];
  t.after(async () => {
    await nodes[0].stop();
    if (nodes[1]) assert.equal((await nodes[1].stop()).code, 0, 'the new node exits 0 on SIGTERM');
  });
  const [page] = await pages(t, 1, { port: nodes[0].port });
  const { socketId } = await connect(page, 'a');
  await subscribe(page, 'a', 'restart-ch');

  const since = await logLength(page);
  nodes.push(await replace(nodes[0], page, since));
  const again = await logged(page, { client: 'a', kind: 'state', state: 'connected' }, { since, timeout });
  assert.notEqual(again.socketId, socketId);
  await logged(page, { client: 'a', channel: 'restart-ch', event: 'pusher:subscription_succeeded' }, { since });
  await restClient(nodes[1].port).trigger('restart-ch', 'after', { n: 2 });
  const got = await logged(page, { client: 'a', channel: 'restart-ch', event: 'after' });
  assert.deepEqual(got.data, { n: 2 });
}

// SIGTERM closes every socket with 4200 after the node stopped accepting. pusher-js retries
// at once with its cached transport, which is refused (no node listens yet), then starts its
// ws loop, whose first attempt is refused too: that loop ignores a refusal until its attempt
// timeout (15 s) runs out, so the page is back about 15 s after the stop, whenever the new
// node came up. That wait is pusher-js's own (SequentialStrategy, timeout 15000).
test('graceful restart on the same port: pusher-js reconnects and resubscribes on its own', async (t) => {
  await restartAndReconnect(t, async (node, page, since) => {
    assert.equal((await node.stop()).code, 0);
    const closed = await logged(page, { client: 'a', kind: 'error' }, { since });
    assert.equal(closed.data.code, 4200);
    await logged(page, { client: 'a', kind: 'state', state: 'connecting' }, { since });
    return startNode('', { port: node.port });
  }, { timeout: 20000 });
});

// A killed node leaves a socket closed without a close frame (1006): pusher-js waits 1 s,
// then tries its cached transport, which finds the new node already up.
test('crash and a new node on the same port: pusher-js reconnects and resubscribes on its own', async (t) => {
  await restartAndReconnect(t, async (node) => {
    node.child.kill('SIGKILL');
    assert.equal((await node.exited).signal, 'SIGKILL');
    return startNode('', { port: node.port });
  }, { timeout: 20000 });
});
