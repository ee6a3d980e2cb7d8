// Laravel Echo 2.x (pusher-js underneath) against a real server, once with
// `broadcaster: 'pusher'` and once with `broadcaster: 'reverb'`. Channel authorization and
// user authentication go over real HTTP to a small local server that stands in for a
// Laravel app's /broadcasting/auth and /broadcasting/user-auth: it reads the form-encoded
// body pusher-js POSTs (with its bundled XMLHttpRequest, the Node build's `ajax` transport)
// and signs with the official `pusher` library.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import Echo from 'laravel-echo';
import {
  startServer, restClient, PusherJs, KEY, connected, sleep,
} from './harness.mjs';

const CSRF = 'csrf-token-from-the-page';
/** Who each bearer token is, and the user info the app returns for them (id included, as Laravel's channel callbacks do). */
const USERS = {
  'token-alice': { id: 'alice', name: 'Alice' },
  'token-bob': { id: 'bob', name: 'Bob' },
};

let server;
let rest;
let app;
const echoes = [];

before(async () => {
  server = await startServer();
  rest = restClient(server.port);
  app = await laravelApp(rest);
});
after(async () => {
  for (const e of echoes) e.disconnect();
  await app.close();
  const { code } = await server.stop();
  assert.equal(code, 0, 'server exits 0 on SIGTERM');
});

/**
 * The auth endpoints of a Laravel app, on a free port: 419 without the CSRF token, 403
 * without a known bearer token (or for `private-admin.*`), else the library's signature
 * (`channel_data` on presence channels, `shared_secret` on encrypted ones). Every request
 * and answer is kept in `requests`.
 */
async function laravelApp(signer) {
  const requests = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const params = Object.fromEntries(new URLSearchParams(body));
      const seen = { method: req.method, path: req.url, headers: req.headers, body, params };
      requests.push(seen);
      const reply = (status, json) => {
        seen.status = status;
        seen.reply = json;
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(json));
      };
      const user = USERS[(req.headers.authorization ?? '').replace(/^Bearer /, '')];
      if (req.method !== 'POST') return reply(405, { message: 'Method Not Allowed' });
      if (req.headers['x-csrf-token'] !== CSRF) return reply(419, { message: 'CSRF token mismatch.' });
      if (!user) return reply(403, { message: 'Unauthenticated.' });
      const { socket_id: socketId, channel_name: channel } = params;
      if (req.url === '/broadcasting/user-auth') {
        return reply(200, signer.authenticateUser(socketId, { id: user.id, user_info: { name: user.name } }));
      }
      if (req.url !== '/broadcasting/auth') return reply(404, { message: 'Not Found' });
      if (channel.startsWith('private-admin.')) return reply(403, { message: 'This action is unauthorized.' });
      const presence = channel.startsWith('presence-') ? { user_id: user.id, user_info: user } : undefined;
      return reply(200, signer.authorizeChannel(socketId, channel, presence));
    });
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${srv.address().port}`,
    requests,
    /** The channel-authorization request this socket made for `channel`. */
    authRequest(socketId, channel) {
      return requests.find((r) => r.params.socket_id === socketId && r.params.channel_name === channel);
    },
    close() {
      srv.closeAllConnections();
      return new Promise((resolve) => srv.close(() => resolve()));
    },
  };
}

/** Echo as a Laravel page configures it for `broadcaster`, signed in to the app as `token`. */
function echo(broadcaster, token) {
  const e = new Echo({
    broadcaster,
    key: KEY,
    Pusher: PusherJs,
    // Reverb's generated config has no cluster (Echo blanks it); Pusher's always has one.
    ...(broadcaster === 'pusher' ? { cluster: 'mt1' } : {}),
    wsHost: '127.0.0.1',
    wsPort: server.port,
    wssPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    csrfToken: CSRF,
    bearerToken: token,
    authEndpoint: `${app.url}/broadcasting/auth`,
    auth: { headers: { 'X-Tenant': 'acme' } },
    userAuthentication: { endpoint: `${app.url}/broadcasting/user-auth`, transport: 'ajax', headers: {} },
  });
  echoes.push(e);
  return e;
}

/** Resolves once Echo's channel is subscribed; rejects with the error Echo reports. */
function subscribed(channel, ms = 4000) {
  if (channel.subscription.subscribed) return Promise.resolve(channel);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out subscribing to ${channel.name}`)), ms);
    channel.subscribed(() => { clearTimeout(timer); resolve(channel); });
    channel.error((e) => { clearTimeout(timer); reject(new Error(`${channel.name}: ${JSON.stringify(e)}`)); });
  });
}

/** A callback that keeps the arguments of each call; `until(n)` waits for the nth call and gives its arguments. */
function recorder(label) {
  const calls = [];
  const fn = (...args) => { calls.push(args); };
  fn.calls = calls;
  fn.until = async (n = 1, ms = 4000) => {
    for (let waited = 0; calls.length < n; waited += 20) {
      if (waited >= ms) throw new Error(`${label}: ${calls.length} of ${n} calls after ${ms} ms`);
      await sleep(20);
    }
    return calls[n - 1];
  };
  return fn;
}

/** Polls `probe` until it returns something `ok` accepts; returns that, or fails naming the last value. */
async function eventually(probe, ok, ms = 4000) {
  let last;
  for (let waited = 0; waited < ms; waited += 50) {
    last = await probe();
    if (ok(last)) return last;
    await sleep(50);
  }
  assert.fail(`still ${JSON.stringify(last)} after ${ms} ms`);
}

async function subscriptionCount(channel) {
  const res = await rest.get({ path: `/channels/${channel}`, params: { info: 'subscription_count' } });
  assert.equal(res.status, 200);
  return (await res.json()).subscription_count ?? 0;
}

/** Resolves once the pusher-js user of `e` is signed in: pusher-js then subscribes to #server-to-user-{id}. */
async function signedIn(e) {
  const { user } = e.connector.pusher;
  for (let i = 0; i < 160 && !user.serverToUserChannel?.subscribed; i++) await sleep(25);
  assert.ok(user.serverToUserChannel?.subscribed, 'server-to-user channel subscribed');
}

/** The messages the server sends `e` on `channel`, as pusher-js parsed them off the socket. */
function wire(e, channel) {
  const seen = [];
  e.connector.pusher.connection.bind('message', (m) => { if (m.channel === channel) seen.push(m); });
  return seen;
}

for (const broadcaster of ['pusher', 'reverb']) {
  describe(`broadcaster: '${broadcaster}'`, () => {
    const b = broadcaster;

    test('connects; socketId() is the socket id the server gave', async () => {
      const e = echo(b, 'token-alice');
      await connected(e.connector.pusher);
      assert.equal(e.connectionStatus(), 'connected');
      assert.match(e.socketId(), /^\d+\.\d+$/);
      assert.equal(e.connector.pusher.config.wsHost, '127.0.0.1');
    });

    test("channel().listen('OrderShipped') receives App\\Events\\OrderShipped, and only that", async () => {
      const e = echo(b, 'token-alice');
      const orders = await subscribed(e.channel(`orders.${b}`));
      const shipped = recorder('OrderShipped');
      const nested = recorder('Orders.Refunded');
      orders.listen('OrderShipped', shipped).listen('Orders.Refunded', nested);
      // A bare `OrderShipped` is not what the listener is bound to.
      await rest.trigger(`orders.${b}`, 'OrderShipped', { id: 0 });
      await rest.trigger(`orders.${b}`, 'App\\Events\\OrderShipped', { order: { id: 1 } });
      // Echo turns the dots of a name into backslashes: Orders.Refunded is App\Events\Orders\Refunded.
      await rest.trigger(`orders.${b}`, 'App\\Events\\Orders\\Refunded', { order: { id: 2 } });
      assert.deepEqual((await shipped.until(1))[0], { order: { id: 1 } });
      assert.deepEqual((await nested.until(1))[0], { order: { id: 2 } });
      await sleep(150);
      assert.equal(shipped.calls.length, 1, 'the bare OrderShipped must not reach the listener');
    });

    test(".listen('.custom-name') receives an event triggered literally as custom-name", async () => {
      const e = echo(b, 'token-alice');
      const feed = await subscribed(e.channel(`custom.${b}`));
      const dotted = recorder('.custom-name');
      const bare = recorder('custom-name');
      // Without the dot the name is namespaced: App\Events\custom-name.
      feed.listen('.custom-name', dotted).listen('custom-name', bare);
      await rest.trigger(`custom.${b}`, 'custom-name', { n: 1 });
      assert.deepEqual((await dotted.until(1))[0], { n: 1 });
      await sleep(150);
      assert.equal(bare.calls.length, 0);
    });

    test('toOthers(): an event sent with socket_id = socketId() skips that client only', async () => {
      const me = echo(b, 'token-alice');
      const other = echo(b, 'token-bob');
      const mine = recorder('mine');
      const theirs = recorder('theirs');
      (await subscribed(me.channel(`others.${b}`))).listen('Ping', mine);
      (await subscribed(other.channel(`others.${b}`))).listen('Ping', theirs);
      await rest.trigger(`others.${b}`, 'App\\Events\\Ping', { p: 1 }, { socket_id: me.socketId() });
      assert.deepEqual((await theirs.until(1))[0], { p: 1 });
      await sleep(150);
      assert.equal(mine.calls.length, 0, 'the excluded socket must not receive the event');
    });

    test('private(): listen() and listenForWhisper()/whisper(), authorized over HTTP like /broadcasting/auth', async () => {
      const alice = echo(b, 'token-alice');
      const bob = echo(b, 'token-bob');
      const name = `chat.${b}`;
      const ca = await subscribed(alice.private(name));
      const cb = await subscribed(bob.private(name));

      // What Echo (through pusher-js's ajax transport) sends the app.
      const req = app.authRequest(alice.socketId(), `private-${name}`);
      assert.ok(req, 'alice\'s auth request reached the app');
      assert.equal(req.method, 'POST');
      assert.equal(req.path, '/broadcasting/auth');
      assert.equal(req.headers['content-type'], 'application/x-www-form-urlencoded');
      assert.equal(req.body, `socket_id=${encodeURIComponent(alice.socketId())}&channel_name=${encodeURIComponent(`private-${name}`)}`);
      assert.equal(req.headers['x-csrf-token'], CSRF);
      assert.equal(req.headers.authorization, 'Bearer token-alice');
      assert.equal(req.headers['x-tenant'], 'acme', 'Echo\'s auth.headers are sent');
      // Echo adds X-Socket-ID only to the app's own axios/jQuery/Vue/Turbo requests (for
      // toOthers()); the auth POST carries the socket id in its body.
      assert.equal(req.headers['x-socket-id'], undefined);
      assert.equal(req.status, 200);

      const posted = recorder('MessagePosted');
      cb.listen('MessagePosted', posted);
      await rest.trigger(`private-${name}`, 'App\\Events\\MessagePosted', { body: 'hi' });
      assert.deepEqual((await posted.until(1))[0], { body: 'hi' });

      const bobHears = recorder('whisper at bob');
      const aliceHears = recorder('whisper at alice');
      cb.listenForWhisper('typing', bobHears);
      ca.listenForWhisper('typing', aliceHears);
      ca.whisper('typing', { name: 'Alice' });
      const [data, meta] = await bobHears.until(1);
      assert.deepEqual(data, { name: 'Alice' });
      assert.equal(meta?.user_id, undefined, 'no user_id on a private channel');
      await sleep(150);
      assert.equal(aliceHears.calls.length, 0, 'a whisper is not echoed to its sender');
    });

    test('private(): a 403 from the auth endpoint reaches error(), the connection stays up', async () => {
      const e = echo(b, 'token-alice');
      const failed = recorder('error');
      const ch = e.private(`admin.${b}`).error(failed);
      const [status] = await failed.until(1);
      assert.equal(status.type, 'AuthError');
      assert.equal(status.status, 403);
      assert.equal(ch.subscription.subscribed, false);
      assert.equal(app.authRequest(e.socketId(), `private-admin.${b}`).status, 403);
      const ok = await subscribed(e.private(`chat-after-403.${b}`));
      assert.ok(ok.subscription.subscribed);
      assert.equal(e.connectionStatus(), 'connected');
    });

    test('join(): here, joining, leaving, and whispers carrying the sender\'s user_id', async () => {
      const alice = echo(b, 'token-alice');
      const bob = echo(b, 'token-bob');
      const name = `room.${b}`;
      const here = recorder('here');
      const joining = recorder('joining');
      const leaving = recorder('leaving');
      const ca = alice.join(name).here(here).joining(joining).leaving(leaving);
      assert.deepEqual((await here.until(1))[0], [USERS['token-alice']]);

      const bobHere = recorder('bob here');
      const cb = bob.join(name).here(bobHere);
      const [members] = await bobHere.until(1);
      assert.deepEqual([...members].sort((x, y) => x.id.localeCompare(y.id)), [USERS['token-alice'], USERS['token-bob']]);
      assert.deepEqual((await joining.until(1))[0], USERS['token-bob']);
      const presenceReq = app.authRequest(bob.socketId(), `presence-${name}`);
      assert.deepEqual(JSON.parse(presenceReq.reply.channel_data), { user_id: 'bob', user_info: USERS['token-bob'] });

      const users = await (await rest.get({ path: `/channels/presence-${name}/users` })).json();
      assert.deepEqual(users.users.map((u) => u.id).sort(), ['alice', 'bob']);

      const typing = recorder('typing');
      ca.listenForWhisper('typing', typing);
      cb.whisper('typing', { typing: true });
      const [data, meta] = await typing.until(1);
      assert.deepEqual(data, { typing: true });
      assert.equal(meta.user_id, 'bob');

      bob.leave(name);
      assert.deepEqual((await leaving.until(1))[0], USERS['token-bob']);
      assert.equal(joining.calls.length, 1);
    });

    test('encryptedPrivate(): listen() gets what the library encrypted; only ciphertext crosses the wire', async () => {
      const e = echo(b, 'token-alice');
      const name = `vault.${b}`;
      const vault = await subscribed(e.encryptedPrivate(name));
      const req = app.authRequest(e.socketId(), `private-encrypted-${name}`);
      assert.equal(typeof req.reply.shared_secret, 'string', 'the app handed out the channel\'s key');
      const raw = wire(e, `private-encrypted-${name}`);
      const got = recorder('SecretShared');
      vault.listen('SecretShared', got);
      await rest.trigger(`private-encrypted-${name}`, 'App\\Events\\SecretShared', { code: 'open sesame' });
      assert.deepEqual((await got.until(1))[0], { code: 'open sesame' });
      assert.equal(raw.length, 1);
      assert.equal(raw[0].event, 'App\\Events\\SecretShared');
      assert.deepEqual(Object.keys(raw[0].data).sort(), ['ciphertext', 'nonce']);
      assert.doesNotMatch(JSON.stringify(raw[0].data), /open sesame/);
    });

    test('connector.pusher.user: sign-in over /broadcasting/user-auth, then sendToUser reaches that user only', async () => {
      const alice = echo(b, 'token-alice');
      const bob = echo(b, 'token-bob');
      await Promise.all([connected(alice.connector.pusher), connected(bob.connector.pusher)]);
      alice.connector.pusher.signin();
      bob.connector.signin();
      await Promise.all([signedIn(alice), signedIn(bob)]);
      assert.deepEqual(alice.connector.pusher.user.user_data, { id: 'alice', user_info: { name: 'Alice' } });

      const req = app.requests.find((r) => r.path === '/broadcasting/user-auth' && r.params.socket_id === alice.socketId());
      assert.ok(req, 'alice\'s user-auth request reached the app');
      assert.equal(req.method, 'POST');
      assert.equal(req.headers['content-type'], 'application/x-www-form-urlencoded');
      assert.equal(req.body, `socket_id=${encodeURIComponent(alice.socketId())}`);
      assert.equal(req.headers['x-csrf-token'], CSRF, 'Echo copies the CSRF token to userAuthentication.headers');
      assert.equal(req.headers.authorization, 'Bearer token-alice');
      assert.equal(req.status, 200);

      const aliceGot = recorder('alice');
      const bobGot = recorder('bob');
      alice.connector.pusher.user.bind('invoice-paid', aliceGot);
      bob.connector.pusher.user.bind('invoice-paid', bobGot);
      const res = await rest.sendToUser('alice', 'invoice-paid', { amount: 42 });
      assert.equal(res.status, 200);
      assert.deepEqual((await aliceGot.until(1))[0], { amount: 42 });
      await sleep(150);
      assert.equal(bobGot.calls.length, 0);
    });

    test('leave(): the channel and its private variant are unsubscribed on the server; nothing more arrives', async () => {
      const alice = echo(b, 'token-alice');
      const bob = echo(b, 'token-bob');
      const name = `feed.${b}`;
      const pub = await subscribed(alice.channel(name));
      const priv = await subscribed(alice.private(name));
      const bobs = await subscribed(bob.channel(name));
      await eventually(() => subscriptionCount(name), (n) => n === 2);
      await eventually(() => subscriptionCount(`private-${name}`), (n) => n === 1);

      const late = recorder('alice after leave');
      pub.listen('.tick', late);
      priv.listen('.tick', late);
      const bobGot = recorder('bob');
      bobs.listen('.tick', bobGot);
      const rawPublic = wire(alice, name);
      const rawPrivate = wire(alice, `private-${name}`);

      alice.leave(name);
      assert.deepEqual(Object.keys(alice.connector.channels).filter((c) => c.endsWith(name)), []);
      await eventually(() => subscriptionCount(name), (n) => n === 1);
      await eventually(() => subscriptionCount(`private-${name}`), (n) => n === 0);

      await rest.trigger([name, `private-${name}`], 'tick', { t: 1 });
      assert.deepEqual((await bobGot.until(1))[0], { t: 1 });
      await sleep(200);
      assert.equal(late.calls.length, 0);
      assert.deepEqual([...rawPublic, ...rawPrivate], [], 'the server sends nothing on a channel that was left');
    });
  });
}
