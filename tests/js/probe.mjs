// A normal client after an attack: pusher-js connects to the server named on the command
// line, subscribes, and must receive an event the official Node library triggers. Exits 0
// on success, 1 with a reason otherwise. Used by the Rust black-box tests
// (crates/herald-cli/tests/support: `assert_pusher_js_served`).
//
//   node probe.mjs HOST:PORT [APP_ID KEY SECRET]
//
// With PROBE_TLS=1 both clients use TLS (wss:// and https://, `forceTLS` and `useTLS`); a
// private CA is trusted through NODE_EXTRA_CA_CERTS.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const PusherJs = require('pusher-js');
const PusherServer = require('pusher');

const [addr, appId = '1', key = 'app-key', secret = 'app-secret'] = process.argv.slice(2);
const port = Number(addr.split(':').pop());
const host = addr.slice(0, addr.lastIndexOf(':'));
const fail = (why) => { console.error(`probe: ${why}`); process.exit(1); };
const timer = setTimeout(() => fail('no event within 10 s'), 10000);
const tls = process.env.PROBE_TLS === '1';

const client = new PusherJs(key, {
  cluster: 'mt1', wsHost: host, wsPort: port, wssPort: port, forceTLS: tls,
  enabledTransports: ['ws', 'wss'], disableStats: true,
});
client.connection.bind('error', (e) => fail(`connection error ${JSON.stringify(e?.data ?? e)}`));
const name = `probe-${process.pid}-${Date.now()}`;
const channel = client.subscribe(name);
channel.bind('pusher:subscription_error', (e) => fail(`subscription error ${JSON.stringify(e)}`));
channel.bind('pusher:subscription_succeeded', async () => {
  const server = new PusherServer({ appId, key, secret, host, port: String(port), useTLS: tls });
  try {
    await server.trigger(name, 'probe', { ok: true });
  } catch (e) {
    fail(`trigger failed: ${e.status ?? ''} ${e.body ?? e}`);
  }
});
channel.bind('probe', (data) => {
  if (data?.ok !== true) fail(`unexpected data ${JSON.stringify(data)}`);
  clearTimeout(timer);
  client.disconnect();
  console.log('ok');
  process.exit(0);
});
