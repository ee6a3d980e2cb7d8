// User sign-in with pusher-js and the server-to-user features of the `pusher` library:
// sendToUser, terminateUserConnections, watchlists, presence via the signed-in user.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  fixture, restClient, once, connected, subscribed, sleep, collect,
} from './harness.mjs';

const { server, client } = fixture();

/**
 * Signs `c` in and resolves once the server confirmed it: pusher-js handles
 * signin_success internally and then subscribes to #server-to-user-{id}, so that
 * subscription succeeding is the observable proof.
 */
async function signedIn(c) {
  await connected(c);
  c.signin();
  for (let i = 0; i < 120 && !c.user.serverToUserChannel?.subscribed; i++) await sleep(25);
  assert.ok(c.user.serverToUserChannel?.subscribed, 'server-to-user channel subscribed');
}

test('sendToUser reaches every connection signed in as that user, and only those', async () => {
  const { port } = await server('');
  const rest = restClient(port);
  const alice1 = client(port, { user: { id: 'alice', user_info: { name: 'Alice' } } });
  const alice2 = client(port, { user: { id: 'alice' } });
  const bob = client(port, { user: { id: 'bob' } });
  await Promise.all([signedIn(alice1), signedIn(alice2), signedIn(bob)]);
  const got = [once(alice1.user, 'greeting'), once(alice2.user, 'greeting')];
  const bobGot = collect(bob.user, 'greeting');
  const res = await rest.sendToUser('alice', 'greeting', { hi: 1 });
  assert.equal(res.status, 200);
  assert.deepEqual(await Promise.all(got), [{ hi: 1 }, { hi: 1 }]);
  await sleep(150);
  assert.equal(bobGot.length, 0);
});

test('terminateUserConnections closes that user\'s sockets with 4009 and leaves others', async () => {
  const { port } = await server('');
  const rest = restClient(port);
  const victim = client(port, { user: { id: 'mallory' } });
  const other = client(port, { user: { id: 'trent' } });
  await Promise.all([signedIn(victim), signedIn(other)]);
  const err = once(victim.connection, 'error');
  const res = await rest.terminateUserConnections('mallory');
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});
  const e = await err;
  assert.equal(e?.data?.code ?? e?.error?.data?.code, 4009);
  await sleep(300);
  assert.notEqual(victim.connection.state, 'connected', '4009 means pusher-js does not reconnect');
  assert.equal(other.connection.state, 'connected');
});

test('terminate_close_code = 4200 lets the client reconnect and sign in again', async () => {
  const { port } = await server(`
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
terminate_close_code = 4200
`);
  const rest = restClient(port);
  const c = client(port, { user: { id: 'dave' } });
  await signedIn(c);
  const firstSocket = c.connection.socket_id;
  await rest.terminateUserConnections('dave');
  for (let i = 0; i < 80 && (c.connection.state !== 'connected' || c.connection.socket_id === firstSocket); i++) {
    await sleep(25);
  }
  assert.equal(c.connection.state, 'connected');
  assert.notEqual(c.connection.socket_id, firstSocket);
});

test('presence without channel_data uses the signed-in user', async () => {
  const { port } = await server('');
  // No userId given: the channel authorizer signs without channel_data.
  const c = client(port, { user: { id: 'carol', user_info: { name: 'Carol' } } });
  await signedIn(c);
  const ch = await subscribed(c, 'presence-signed');
  assert.equal(ch.members.count, 1);
  assert.deepEqual(ch.members.me, { id: 'carol', info: { name: 'Carol' } });
});

test('watchlist: current status after sign-in, then online and offline events', async () => {
  const { port } = await server('');
  const online = client(port, { user: { id: 'w-online' } });
  await signedIn(online);
  const watcher = client(port, { user: { id: 'w-watcher', watchlist: ['w-online', 'w-later'] } });
  const initial = new Promise((resolve) => {
    const seen = {};
    const done = () => { if (seen.online && seen.offline) resolve(seen); };
    watcher.user.watchlist.bind('online', (e) => { seen.online ??= e.user_ids; done(); });
    watcher.user.watchlist.bind('offline', (e) => { seen.offline ??= e.user_ids; done(); });
  });
  await signedIn(watcher);
  assert.deepEqual(await initial, { online: ['w-online'], offline: ['w-later'] });

  const cameOnline = once(watcher.user.watchlist, 'online');
  const later = client(port, { user: { id: 'w-later' } });
  await signedIn(later);
  assert.deepEqual((await cameOnline).user_ids, ['w-later']);

  const wentOffline = once(watcher.user.watchlist, 'offline');
  later.disconnect();
  assert.deepEqual((await wentOffline).user_ids, ['w-later']);
});

test('a sign-in with a bad signature is refused with 4009', async () => {
  const { port } = await server('');
  const wrong = restClient(port, { secret: 'not-the-secret' });
  const c = client(port, { user: { id: 'eve' }, signer: wrong });
  // The user-auth handler signs with the signer's secret too.
  c.config.userAuthenticator = ({ socketId }, cb) => cb(null, wrong.authenticateUser(socketId, { id: 'eve' }));
  await connected(c);
  const err = once(c.connection, 'error');
  c.signin();
  const e = await err;
  assert.equal(e?.data?.code ?? e?.error?.data?.code, 4009);
});

test('user_authentication_timeout closes sockets that never authorize', async () => {
  const { port } = await server(`
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
user_authentication_timeout = 1
`);
  const idle = client(port);
  const err = once(idle.connection, 'error', 4000);
  const member = client(port, { user: { id: 'frank' } });
  await Promise.all([connected(idle), signedIn(member)]);
  const e = await err;
  assert.equal(e?.data?.code ?? e?.error?.data?.code, 4009);
  await sleep(300);
  assert.equal(member.connection.state, 'connected', 'a signed-in socket is kept');
});

test('presence limits surface as pusher:subscription_error the app can catch', async () => {
  const { port } = await server(`
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
max_presence_members = 1
max_presence_user_info_bytes = 32
`);
  const first = client(port, { userId: 'one', userInfo: {} });
  await subscribed(first, 'presence-small');
  const second = client(port, { userId: 'two', userInfo: {} });
  const full = once(second.subscribe('presence-small'), 'pusher:subscription_error');
  const err = await full;
  assert.equal(err.type, 'LimitReached');
  assert.match(err.error, /maximum of 1 members/);
  const big = client(port, { userId: 'one', userInfo: { bio: 'x'.repeat(100) } });
  const tooBig = await once(big.subscribe('presence-small'), 'pusher:subscription_error');
  assert.equal(tooBig.type, 'LimitReached');
  assert.match(tooBig.error, /user_info/);
  assert.equal(second.connection.state, 'connected');
});
