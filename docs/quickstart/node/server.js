// Your app's server: signs pusher-js's channel authorization and user authentication
// requests, and publishes events through Herald's HTTP API, with the official `pusher`
// library. Plain Node, no framework: `npm install`, then `node server.js`.
//
// PUSHER_URL is the line `herald serve` prints (for its default app); PORT is this server's.
const http = require('node:http');
const Pusher = require('pusher');

const pusher = Pusher.forURL(
  process.env.PUSHER_URL ?? 'http://app-key:app-secret@127.0.0.1:6001/apps/1',
);
const port = Number(process.env.PORT ?? 3000);

// Who is making the request. A real app reads its session cookie or bearer token here and
// answers 403 when there is none; this demo lets everyone in as the same user.
function currentUser(req) {
  return { id: 'demo-user', name: 'Demo User' };
}

// May this user join this channel? Decide per channel: here, the chat and nothing else.
function mayJoin(user, channel) {
  return channel === 'private-chat' || channel === 'presence-chat';
}

const routes = {
  // pusher-js's channelAuthorization endpoint: a form with socket_id and channel_name.
  'POST /pusher/auth': (req, form) => {
    const user = currentUser(req);
    const channel = form.get('channel_name');
    if (!user || !mayJoin(user, channel)) return [403, { error: 'forbidden' }];
    // Presence channels also carry who the member is, which the other members see.
    const member = channel.startsWith('presence-')
      ? { user_id: user.id, user_info: { name: user.name } }
      : undefined;
    return [200, pusher.authorizeChannel(form.get('socket_id'), channel, member)];
  },
  // pusher-js's userAuthentication endpoint (pusher.signin()): a form with socket_id.
  'POST /pusher/user-auth': (req, form) => {
    const user = currentUser(req);
    if (!user) return [403, { error: 'not signed in' }];
    return [200, pusher.authenticateUser(form.get('socket_id'), {
      id: user.id,
      user_info: { name: user.name },
    })];
  },
  // Your own action that publishes: `curl -d text=hello http://127.0.0.1:3000/messages`.
  'POST /messages': async (req, form) => {
    await pusher.trigger('private-chat', 'message', { text: form.get('text') });
    return [200, { ok: true }];
  },
  // A message for one signed-in user, on every connection they have open.
  'POST /notices': async (req, form) => {
    await pusher.sendToUser(form.get('user') ?? 'demo-user', 'notice', { text: form.get('text') });
    return [200, { ok: true }];
  },
};

const server = http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk) => { body += chunk; });
  req.on('end', async () => {
    const route = routes[`${req.method} ${new URL(req.url, 'http://x').pathname}`];
    let [status, json] = [404, { error: 'not found' }];
    try {
      // pusher-js posts application/x-www-form-urlencoded, as curl -d does.
      if (route) [status, json] = await route(req, new URLSearchParams(body));
    } catch (e) {
      console.error(e);
      [status, json] = [500, { error: String(e.message ?? e) }];
    }
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(json));
  });
});

server.listen(port, '127.0.0.1', () => {
  console.log(`app listening on http://127.0.0.1:${server.address().port}`);
});
