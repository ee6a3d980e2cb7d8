// The Laravel quickstart (docs/quickstart/laravel). PHP and Composer packages cannot be
// installed where these tests run, so Laravel itself is not: its broadcaster (the
// pusher-php-server library) is stood in for by the official `pusher` Node library, given
// exactly the options config/broadcasting.php names, read from the file and resolved
// against the quickstart's .env. The browser side is the quickstart's resources/js/echo.js
// as written, with Laravel Echo and pusher-js, loaded the way Vite builds it
// (vite_env_hooks.mjs: `import.meta.env` from the .env's VITE_ lines).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { register } from 'node:module';
import { startServer, PusherServer, sleep } from './harness.mjs';

const QUICKSTART = new URL('../../docs/quickstart/laravel/', import.meta.url);
const read = (path) => readFileSync(new URL(path, QUICKSTART), 'utf8');

/** A .env file's variables, quotes removed and `${NAME}` references resolved in order. */
function parseDotEnv(text, overrides = {}) {
  const vars = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([A-Z0-9_]+)=(.*)$/);
    assert.ok(m, `not a KEY=VALUE line: ${line}`);
    const value = m[2].replace(/^"(.*)"$/, '$1');
    vars[m[1]] = overrides[m[1]] ?? value.replace(/\$\{([A-Z0-9_]+)\}/g, (_, name) => {
      assert.ok(name in vars, `${m[1]} refers to ${name} before it is set`);
      return vars[name];
    });
  }
  return vars;
}

/** The value of one PHP config expression of the forms config/broadcasting.php uses. */
function phpValue(expr, env) {
  const compare = expr.match(/^(.*?)\s*===\s*(.*)$/);
  if (compare) return phpValue(compare[1], env) === phpValue(compare[2], env);
  const call = expr.match(/^env\('([A-Z0-9_]+)'(?:,\s*(.*))?\)$/);
  if (call) return call[1] in env ? env[call[1]] : (call[2] === undefined ? null : phpValue(call[2], env));
  if (/^'[^']*'$/.test(expr)) return expr.slice(1, -1);
  if (/^\d+$/.test(expr)) return Number(expr);
  if (expr === 'true' || expr === 'false') return expr === 'true';
  throw new Error(`unexpected PHP expression in broadcasting.php: ${expr}`);
}

/**
 * config/broadcasting.php's default connection and its `pusher` connection (`options`
 * flattened into it), each `'name' => expression,` line evaluated against `env`.
 */
function parseBroadcasting(php, env) {
  const lines = php.split('\n').map((l) => l.trim());
  const entry = (l) => l.match(/^'([A-Za-z_]+)' => (.*),$/);
  const def = lines.map(entry).find((m) => m && m[1] === 'default');
  const start = lines.indexOf("'pusher' => [");
  assert.ok(start >= 0, "broadcasting.php has a 'pusher' connection");
  const pusher = {};
  for (const l of lines.slice(start + 1)) {
    if (l.startsWith("'client_options'")) break;
    const m = entry(l);
    if (m) pusher[m[1]] = phpValue(m[2], env);
  }
  return { default: phpValue(def[2], env), pusher };
}

const echoes = [];
after(() => { for (const e of echoes) e.disconnect(); });

test('the .env and broadcasting.php name Herald\'s default app and address', () => {
  const env = parseDotEnv(read('.env'));
  const config = parseBroadcasting(read('config/broadcasting.php'), env);
  assert.equal(config.default, 'pusher');
  assert.deepEqual(config.pusher, {
    driver: 'pusher',
    key: 'app-key',
    secret: 'app-secret',
    app_id: '1',
    cluster: 'mt1',
    host: '127.0.0.1',
    port: '6001',
    scheme: 'http',
    useTLS: false,
  });
  // What the browser gets is the same app and address, and never the secret.
  assert.equal(env.VITE_PUSHER_APP_KEY, env.PUSHER_APP_KEY);
  assert.equal(env.VITE_PUSHER_HOST, env.PUSHER_HOST);
  assert.equal(env.VITE_PUSHER_PORT, env.PUSHER_PORT);
  assert.ok(!Object.entries(env).some(([k, v]) => k.startsWith('VITE_') && v === env.PUSHER_APP_SECRET));
});

test('echo.js as written receives what the broadcasting.php connection publishes', async () => {
  const herald = await startServer();
  try {
    // The one edit a reader makes when Herald is not on 6001: PUSHER_PORT.
    const env = parseDotEnv(read('.env'), { PUSHER_PORT: String(herald.port) });
    const { pusher: php } = parseBroadcasting(read('config/broadcasting.php'), env);
    // pusher-php-server's options, given to the Node library under its names.
    const broadcaster = new PusherServer({
      appId: php.app_id,
      key: php.key,
      secret: php.secret,
      cluster: php.cluster,
      host: php.host,
      port: String(php.port),
      scheme: php.scheme,
      useTLS: php.useTLS,
    });

    const vite = Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith('VITE_')));
    const echoJs = new URL('resources/js/echo.js', QUICKSTART).href;
    register('./vite_env_hooks.mjs', import.meta.url, {
      data: { env: vite, target: echoJs, resolveFrom: import.meta.url },
    });
    globalThis.window = globalThis;
    await import(echoJs);
    const { Echo } = globalThis.window;
    assert.ok(Echo, 'echo.js set window.Echo');
    echoes.push(Echo);
    assert.equal(Echo.options.wsPort, String(herald.port));
    assert.equal(Echo.options.forceTLS, false);

    // The quickstart's listener for App\Events\OrderShipped.
    const got = [];
    const channel = Echo.channel('orders').listen('OrderShipped', (e) => got.push(e));
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('echo.js did not subscribe to orders')), 5000);
      channel.subscribed(() => { clearTimeout(timer); resolve(); });
      channel.error((e) => { clearTimeout(timer); reject(new Error(JSON.stringify(e))); });
    });

    // What Laravel sends for `OrderShipped::dispatch(42)`: the class name as the event,
    // its public properties as the data.
    const res = await broadcaster.trigger('orders', 'App\\Events\\OrderShipped', { orderId: 42 });
    assert.equal(res.status, 200);
    for (let waited = 0; got.length === 0 && waited < 4000; waited += 20) await sleep(20);
    assert.deepEqual(got, [{ orderId: 42 }]);
  } finally {
    await herald.stop();
  }
});

test('the quickstart\'s event class broadcasts on the channel and name the test uses', () => {
  const php = read('app/Events/OrderShipped.php');
  assert.match(php, /^namespace App\\Events;$/m);
  assert.match(php, /class OrderShipped implements ShouldBroadcastNow/);
  assert.match(php, /new Channel\('orders'\)/);
  assert.match(php, /public int \$orderId/);
});
