"""pysher (the Python WebSocket client) against Herald, receiving what the official server
library triggers.

pysher differs from pusher-js on the wire: it connects with `protocol=6&client=Pysher`,
sends `pusher:ping` with `"data": ""` as soon as the socket opens (before it has read
`pusher:connection_established`), leaves `auth` out of a public subscription, and sends
client events with their data as a JSON object.

Private and presence channels are signed both ways pysher offers: with the app secret
given to pysher (it signs `socket_id:channel[:channel_data]` itself), and through an auth
endpoint, a local HTTP server answering with the official library's `authenticate`.
"""

import json
import unittest
import urllib.parse

import harness
from harness import Endpoint, PysherClient, RawClient, library, unique

ALICE = {"user_id": "alice", "user_info": {"name": "Alice"}}
BOB = {"user_id": "bob", "user_info": {"name": "Bob", "langs": ["py", "rs"]}}


class Pysher(unittest.TestCase):
    def setUp(self):
        self.lib = library()
        self.clients = []

    def tearDown(self):
        for client in self.clients:
            client.disconnect()

    def pysher(self, **options):
        client = PysherClient(**options)
        self.clients.append(client)
        return client.connect()

    def test_connects_and_is_answered_its_ping(self):
        client = self.pysher()
        self.assertRegex(client.socket_id, r"^\d+\.\d+$")
        # The ping pysher sends on open, "data": "", gets a pong.
        client.pongs.get(timeout=harness.TIMEOUT)

    def test_public_channel(self):
        client = self.pysher()
        channel = unique("py-pysher-public")
        self.assertEqual(json.loads(client.subscribe(channel, "greet")), {})
        self.lib.trigger(channel, "greet", {"hello": "pysher"})
        self.assertEqual(json.loads(client.expect(channel, "greet")), {"hello": "pysher"})

    def test_events_from_many_channel_triggers_and_batches(self):
        client = self.pysher()
        a, b = unique("py-pysher-a"), unique("py-pysher-b")
        client.subscribe(a, "multi", "batched")
        client.subscribe(b, "multi")
        self.lib.trigger([a, b], "multi", "to both")
        got = sorted(client.events.get(timeout=harness.TIMEOUT) for _ in range(2))
        self.assertEqual(got, sorted([(a, "multi", "to both"), (b, "multi", "to both")]))
        self.lib.trigger_batch([{"channel": a, "name": "batched", "data": {"n": 1}}])
        self.assertEqual(json.loads(client.expect(a, "batched")), {"n": 1})

    def test_socket_id_exclusion(self):
        sender, other = self.pysher(), self.pysher()
        channel = unique("py-pysher-exclude")
        for client in (sender, other):
            client.subscribe(channel, "news", "more")
        self.lib.trigger(channel, "news", {}, socket_id=sender.socket_id)
        self.lib.trigger(channel, "more", {})
        other.expect(channel, "news")
        other.expect(channel, "more")
        sender.expect(channel, "more")

    def test_private_channel_signed_with_the_secret(self):
        client = self.pysher(secret=harness.SECRET)
        channel = unique("private-py-pysher")
        client.subscribe(channel, "secret")
        self.lib.trigger(channel, "secret", {"for": "members"})
        self.assertEqual(json.loads(client.expect(channel, "secret")), {"for": "members"})

    def test_private_channel_with_a_wrong_secret_is_refused(self):
        client = self.pysher(secret="not-the-secret")
        channel = unique("private-py-pysher-refused")
        self.assertEqual(client.refused(channel)["status"], 401)

    def test_private_channel_through_an_auth_endpoint(self):
        endpoint = self.auth_endpoint()
        client = self.pysher(auth_endpoint=endpoint.url)
        channel = unique("private-py-pysher-endpoint")
        client.subscribe(channel, "secret")
        # pysher POSTs a form with the channel and its socket id.
        _, headers, body = endpoint.requests[0]
        self.assertEqual(headers["Content-Type"], "application/x-www-form-urlencoded")
        form = urllib.parse.parse_qs(body.decode())
        self.assertEqual(form, {"channel_name": [channel], "socket_id": [client.socket_id]})
        self.lib.trigger(channel, "secret", [1, 2, 3])
        self.assertEqual(json.loads(client.expect(channel, "secret")), [1, 2, 3])

    def test_presence_members_signed_with_the_secret(self):
        channel = unique("presence-py-pysher")
        alice = self.pysher(secret=harness.SECRET, user_data=ALICE)
        joined = json.loads(alice.subscribe(channel, "pusher_internal:member_added",
                                            "pusher_internal:member_removed", "hi"))
        self.assertEqual(
            joined["presence"],
            {"ids": ["alice"], "hash": {"alice": ALICE["user_info"]}, "count": 1},
        )
        bob = self.pysher(secret=harness.SECRET, user_data=BOB)
        seen_by_bob = json.loads(bob.subscribe(channel, "hi"))["presence"]
        self.assertEqual(sorted(seen_by_bob["ids"]), ["alice", "bob"])
        self.assertEqual(seen_by_bob["count"], 2)
        self.assertEqual(
            seen_by_bob["hash"], {"alice": ALICE["user_info"], "bob": BOB["user_info"]}
        )
        self.assertEqual(json.loads(alice.expect(channel, "pusher_internal:member_added")), BOB)

        users = self.lib.users_info(channel)["users"]
        self.assertEqual(sorted(u["id"] for u in users), ["alice", "bob"])
        self.assertEqual(
            self.lib.channel_info(channel, ["user_count"]), {"occupied": True, "user_count": 2}
        )
        self.lib.trigger(channel, "hi", {"all": True})
        self.assertEqual(json.loads(alice.expect(channel, "hi")), {"all": True})
        self.assertEqual(json.loads(bob.expect(channel, "hi")), {"all": True})

        bob.disconnect()
        self.clients.remove(bob)
        removed = json.loads(alice.expect(channel, "pusher_internal:member_removed"))
        self.assertEqual(removed, {"user_id": "bob"})

    def test_presence_through_an_auth_endpoint(self):
        endpoint = self.auth_endpoint(user=BOB)
        channel = unique("presence-py-pysher-endpoint")
        # pysher sends json.dumps(user_data) as channel_data: the endpoint signed the same.
        client = self.pysher(auth_endpoint=endpoint.url, user_data=BOB)
        presence = json.loads(client.subscribe(channel))["presence"]
        self.assertEqual(presence, {"ids": ["bob"], "hash": {"bob": BOB["user_info"]}, "count": 1})

    def test_client_events_between_pysher_clients(self):
        channel = unique("private-py-pysher-chat")
        alice = self.pysher(secret=harness.SECRET)
        bob = self.pysher(secret=harness.SECRET)
        alice.subscribe(channel, "client-typing")
        bob.subscribe(channel, "client-typing")
        alice.client.channel(channel).trigger("client-typing", {"typing": True})
        # Relayed as sent (an object), to the others only.
        self.assertEqual(bob.expect(channel, "client-typing"), {"typing": True})
        alice.expect_silence()

    def test_presence_client_events_carry_the_sender(self):
        channel = unique("presence-py-pysher-chat")
        alice = self.pysher(secret=harness.SECRET, user_data=ALICE)
        alice.subscribe(channel)
        # pysher hands a callback the data only: a bare client sees the whole frame.
        watcher = RawClient()
        self.addCleanup(watcher.close)
        auth = self.lib.authenticate(channel, watcher.socket_id, {"user_id": "watcher"})
        watcher.subscribed(channel, auth["auth"], auth["channel_data"])
        alice.client.channel(channel).trigger("client-wave", "hello")
        frame = watcher.expect("client-wave", channel)
        self.assertEqual((frame["data"], frame["user_id"]), ("hello", "alice"))

    def auth_endpoint(self, user=None):
        """An auth endpoint signing with the official library, for `user` on presence
        channels (the endpoint knows its user; pysher's form does not carry it usably)."""

        def handle(_path, _headers, body):
            form = urllib.parse.parse_qs(body.decode())
            channel, socket_id = form["channel_name"][0], form["socket_id"][0]
            member = user if channel.startswith("presence-") else None
            return 200, self.lib.authenticate(channel, socket_id, member)

        endpoint = Endpoint(handle)
        self.addCleanup(endpoint.close)
        return endpoint


if __name__ == "__main__":
    unittest.main()
