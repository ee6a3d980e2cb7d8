// Runs in Chromium. Loads pusher-js's browser build from npm (?build=encrypted: the one with
// tweetnacl, for private-encrypted- channels) and gives the test (browser.test.mjs, through
// page.evaluate) a few commands; everything pusher-js reports goes into window.log, which
// the test waits on with page.waitForFunction.
//
// Query: port (Herald's), key, build. Channel and user auth use pusher-js's defaults: an XHR
// POST, form-encoded, to /pusher/auth and /pusher/user-auth on this page's own server,
// carrying `auth` (the client's commands give user_id and name) as extra form fields.
const query = new URLSearchParams(location.search);
const clients = {};
const log = [];
window.log = log;
// What the test reads back must be plain data (presence hands listeners its Members object).
const plain = (data) => (data === undefined ? null : JSON.parse(JSON.stringify(data)));

window.ready = new Promise((resolve, reject) => {
  const script = document.createElement('script');
  const build = query.get('build') === 'encrypted' ? 'pusher-with-encryption.min.js' : 'pusher.min.js';
  script.src = `/pusher-js/${build}`;
  script.onload = resolve;
  script.onerror = () => reject(new Error(`cannot load ${script.src}`));
  document.head.append(script);
});

/** Makes client `name` (a Pusher instance, with pusher-js `options` if any) and records its connection states. */
window.connect = (name, auth = {}, options = {}) => {
  const pusher = new Pusher(query.get('key'), {
    ...options,
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: Number(query.get('port')),
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization: { endpoint: '/pusher/auth', transport: 'ajax', params: auth },
    userAuthentication: { endpoint: '/pusher/user-auth', transport: 'ajax', params: auth },
  });
  clients[name] = pusher;
  pusher.connection.bind('state_change', ({ current }) => {
    log.push({ client: name, kind: 'state', state: current, socketId: pusher.connection.socket_id ?? null });
  });
  pusher.connection.bind('error', (error) => {
    log.push({ client: name, kind: 'error', data: error?.data ?? error?.error?.data ?? String(error?.type ?? error) });
  });
};

/**
 * The extensions client `name`'s WebSocket negotiated (`WebSocket.extensions`), read from
 * pusher-js's connection internals: there is no public accessor.
 */
window.extensions = (name) => clients[name].connection.connection?.transport?.socket?.extensions ?? null;

/** Subscribes client `name` to `channel`; every event on it (pusher: ones too) is logged. */
window.subscribe = (name, channel) => {
  clients[name].subscribe(channel).bind_global((event, data) => {
    log.push({ client: name, kind: 'event', channel, event, data: plain(data) });
  });
};

/** Signs client `name` in; events sent to its user are logged with channel null. */
window.signin = (name) => {
  const pusher = clients[name];
  pusher.user.bind_global((event, data) => {
    log.push({ client: name, kind: 'event', channel: null, event, data: plain(data) });
  });
  pusher.signin();
};

/** True once client `name`'s sign-in went through (it then has its #server-to-user channel). */
window.signedIn = (name) => Boolean(clients[name].user.serverToUserChannel?.subscribed);

/** A client event from client `name`; pusher-js's answer (false: it refused to send). */
window.trigger = (name, channel, event, data) => clients[name].channel(channel).trigger(event, data);

/** The members of a presence channel as client `name` sees them. */
window.members = (name, channel) => {
  const { members } = clients[name].channel(channel);
  const all = [];
  members.each((member) => all.push(member));
  all.sort((a, b) => (a.id < b.id ? -1 : 1));
  return { count: members.count, me: members.me, all };
};

window.disconnect = (name) => clients[name].disconnect();
