"""The official Python server library (`pusher` on PyPI) against Herald: triggering,
channel queries, and the channel and user signatures it makes for clients.

Receivers are bare WebSocket clients (harness.RawClient), so each test sees the frames as
the server sent them. Every GET the library makes carries `body_md5` (of the empty body),
unlike the Node library's, so every query here also checks that Herald accepts that.
"""

import base64
import hashlib
import json
import os
import unittest

import nacl.secret
import pusher.errors

import harness
from harness import RawClient, library, unique


class Clients(unittest.TestCase):
    """Closes the RawClients a test opens."""

    def setUp(self):
        self.lib = library()
        self.clients = []

    def tearDown(self):
        for client in self.clients:
            client.close()

    def client(self, *channels):
        client = RawClient()
        self.clients.append(client)
        for channel in channels:
            client.subscribed(channel)
        return client


class Trigger(Clients):
    def test_trigger_to_one_channel(self):
        channel = unique("py-one")
        receiver = self.client(channel)
        data = {"text": "héllo ✓", "n": 1}
        self.assertEqual(self.lib.trigger(channel, "greet", data), {})
        frame = receiver.expect("greet", channel)
        # The library sends data as json.dumps(data, ensure_ascii=False), inside a body that
        # json.dumps escapes to ASCII: the subscriber gets the library's text exactly.
        self.assertEqual(frame["data"], json.dumps(data, ensure_ascii=False))

    def test_string_data_is_sent_as_it_is(self):
        channel = unique("py-text")
        receiver = self.client(channel)
        self.lib.trigger([channel], "note", "plain text, not JSON")
        self.assertEqual(receiver.expect("note", channel)["data"], "plain text, not JSON")

    def test_trigger_to_several_channels(self):
        channels = [unique("py-many") for _ in range(3)]
        receivers = [self.client(channel) for channel in channels]
        self.assertEqual(self.lib.trigger(channels, "fanout", {"to": "all"}), {})
        for channel, receiver in zip(channels, receivers):
            frame = receiver.expect("fanout", channel)
            self.assertEqual(json.loads(frame["data"]), {"to": "all"})
            receiver.expect_silence(0.1)

    def test_socket_id_is_excluded(self):
        channel = unique("py-exclude")
        sender, other = self.client(channel), self.client(channel)
        self.lib.trigger(channel, "first", {}, socket_id=sender.socket_id)
        self.lib.trigger(channel, "second", {})
        other.expect("first", channel)
        other.expect("second", channel)
        # The sender's first event is the second one: the first passed it by.
        sender.expect("second", channel)

    def test_socket_id_excluded_from_every_channel(self):
        a, b = unique("py-exclude-a"), unique("py-exclude-b")
        sender = self.client(a, b)
        other = self.client(a, b)
        self.lib.trigger([a, b], "both", {"x": 1}, socket_id=sender.socket_id)
        self.assertEqual(
            sorted(other.expect("both")["channel"] for _ in range(2)), sorted([a, b])
        )
        sender.expect_silence()

    def test_trigger_batch(self):
        a, b = unique("py-batch-a"), unique("py-batch-b")
        sender = self.client(a)
        on_a, on_b = self.client(a), self.client(b)
        batch = [
            {"channel": a, "name": "one", "data": {"n": 1}},
            {"channel": b, "name": "two", "data": "text"},
            {"channel": a, "name": "three", "data": {"n": 3}, "socket_id": sender.socket_id},
        ]
        self.assertEqual(self.lib.trigger_batch(batch), {})
        self.assertEqual(json.loads(on_a.expect("one", a)["data"]), {"n": 1})
        self.assertEqual(json.loads(on_a.expect("three", a)["data"]), {"n": 3})
        self.assertEqual(on_b.expect("two", b)["data"], "text")
        sender.expect("one", a)
        sender.expect_silence()

    def test_channel_names_with_every_allowed_character(self):
        # The library puts the name in the path unescaped and signs it so: = @ , . ; _ -
        channel = unique("py-=@,.;_")
        receiver = self.client(channel)
        self.lib.trigger(channel, "odd", {})
        receiver.expect("odd", channel)
        info = self.lib.channel_info(channel, ["subscription_count"])
        self.assertEqual(info, {"occupied": True, "subscription_count": 1})

    def test_wrong_secret_is_refused(self):
        wrong = library(secret="not-the-secret")
        with self.assertRaises(pusher.errors.PusherBadAuth):
            wrong.trigger("py-refused", "e", {})
        with self.assertRaises(pusher.errors.PusherBadAuth):
            wrong.channels_info()


class Queries(Clients):
    def test_get_requests_carry_body_md5(self):
        # What the rest of this class relies on: the library signs body_md5 into GETs too.
        request = self.lib._pusher_client.channels_info.make_request()
        self.assertEqual(request.method, "GET")
        self.assertEqual(request.query_params["body_md5"], hashlib.md5(b"").hexdigest())
        self.assertIn("body_md5=d41d8cd98f00b204e9800998ecf8427e", request.url)

    def test_channels_info_with_prefix_and_subscription_count(self):
        prefix = unique("py-list") + "-"
        self.client(prefix + "a", prefix + "b")
        self.client(prefix + "a")
        self.client(unique("py-elsewhere"))
        listed = self.lib.channels_info(prefix_filter=prefix)
        self.assertEqual(listed, {"channels": {prefix + "a": {}, prefix + "b": {}}})
        counted = self.lib.channels_info(prefix, ["subscription_count"])
        self.assertEqual(
            counted,
            {
                "channels": {
                    prefix + "a": {"subscription_count": 2},
                    prefix + "b": {"subscription_count": 1},
                }
            },
        )
        everything = self.lib.channels_info()["channels"]
        self.assertIn(prefix + "a", everything)
        self.assertIn(prefix + "b", everything)

    def test_channels_info_user_count_for_presence(self):
        prefix = unique("presence-py-list") + "-"
        channel = prefix + "room"
        for user in ("ann", "bob", "bob"):  # two sockets of one user count once
            self.join(channel, user)
        self.assertEqual(
            self.lib.channels_info(prefix, ["user_count"]),
            {"channels": {channel: {"user_count": 2}}},
        )
        # Two attributes: the comma goes out unescaped, as the library signs it.
        self.assertEqual(
            self.lib.channels_info(prefix, ["user_count", "subscription_count"]),
            {"channels": {channel: {"user_count": 2, "subscription_count": 3}}},
        )

    def test_user_count_needs_a_presence_prefix(self):
        with self.assertRaises(pusher.errors.PusherBadRequest):
            self.lib.channels_info(attributes=["user_count"])

    def test_channel_info(self):
        channel = unique("py-info")
        self.assertEqual(self.lib.channel_info(channel), {"occupied": False})
        self.client(channel)
        self.client(channel)
        self.assertEqual(self.lib.channel_info(channel), {"occupied": True})
        self.assertEqual(
            self.lib.channel_info(channel, ["subscription_count"]),
            {"occupied": True, "subscription_count": 2},
        )

    def test_channel_info_of_a_presence_channel(self):
        channel = unique("presence-py-info")
        self.join(channel, "ann")
        self.join(channel, "ann")
        self.join(channel, "cy")
        self.assertEqual(
            self.lib.channel_info(channel, ["user_count", "subscription_count"]),
            {"occupied": True, "user_count": 2, "subscription_count": 3},
        )

    def test_users_info(self):
        channel = unique("presence-py-users")
        self.assertEqual(self.lib.users_info(channel), {"users": []})
        for user in ("ann", "bob", "ann"):
            self.join(channel, user)
        users = self.lib.users_info(channel)["users"]
        self.assertEqual(sorted(users, key=lambda u: u["id"]), [{"id": "ann"}, {"id": "bob"}])

    def test_users_info_of_a_public_channel_is_refused(self):
        with self.assertRaises(pusher.errors.PusherBadRequest):
            self.lib.users_info(unique("py-not-presence"))

    def join(self, channel, user_id):
        client = self.client()
        auth = self.lib.authenticate(channel, client.socket_id, {"user_id": user_id})
        client.subscribed(channel, auth["auth"], auth["channel_data"])
        return client


class Authentication(Clients):
    """`authenticate` makes what an auth endpoint answers; a client subscribes with it."""

    def test_private_channel(self):
        channel = unique("private-py")
        client = self.client()
        auth = self.lib.authenticate(channel, client.socket_id)
        self.assertEqual(set(auth), {"auth"})
        self.assertTrue(auth["auth"].startswith(harness.KEY + ":"), auth)
        client.subscribed(channel, auth["auth"])
        self.lib.trigger(channel, "secret", {"ok": True})
        self.assertEqual(json.loads(client.expect("secret", channel)["data"]), {"ok": True})

    def test_private_signature_for_another_socket_is_refused(self):
        channel = unique("private-py-stolen")
        owner, thief = self.client(), self.client()
        auth = self.lib.authenticate(channel, owner.socket_id)
        answer = thief.subscribe(channel, auth["auth"])
        self.assertEqual(answer["event"], "pusher:subscription_error", answer)
        self.assertEqual(answer["channel"], channel)
        self.assertEqual(answer["data"]["status"], 401, answer)
        thief.subscribed(channel, self.lib.authenticate(channel, thief.socket_id)["auth"])

    def test_presence_channel(self):
        channel = unique("presence-py")
        client = self.client()
        member = {"user_id": 10, "user_info": {"name": "Ann", "city": "Zürich"}}
        auth = self.lib.authenticate(channel, client.socket_id, member)
        self.assertEqual(set(auth), {"auth", "channel_data"})
        # Python's json.dumps, with its ", " and ": " separators, is what was signed.
        self.assertEqual(auth["channel_data"], json.dumps(member))
        answer = client.subscribed(channel, auth["auth"], auth["channel_data"])
        presence = json.loads(answer["data"])["presence"]
        # A numeric user_id is a string in ids and hash.
        self.assertEqual(presence["ids"], ["10"])
        self.assertEqual(presence["hash"], {"10": member["user_info"]})
        self.assertEqual(presence["count"], 1)

        other = self.client()
        bob = {"user_id": "bob"}
        auth = self.lib.authenticate(channel, other.socket_id, bob)
        answer = other.subscribed(channel, auth["auth"], auth["channel_data"])
        self.assertEqual(json.loads(answer["data"])["presence"]["count"], 2)
        added = client.expect("pusher_internal:member_added", channel)
        self.assertEqual(json.loads(added["data"])["user_id"], "bob")

    def test_presence_channel_data_must_be_what_was_signed(self):
        channel = unique("presence-py-forged")
        client = self.client()
        auth = self.lib.authenticate(channel, client.socket_id, {"user_id": "ann"})
        answer = client.subscribe(channel, auth["auth"], json.dumps({"user_id": "admin"}))
        self.assertEqual(answer["event"], "pusher:subscription_error", answer)

    def test_encrypted_channel(self):
        master_key = base64.b64encode(os.urandom(32))
        lib = library(encryption_master_key_base64=master_key)
        channel = unique("private-encrypted-py")
        client = self.client()
        auth = lib.authenticate(channel, client.socket_id)
        self.assertEqual(set(auth), {"auth", "shared_secret"})
        client.subscribed(channel, auth["auth"])
        lib.trigger(channel, "sealed", {"card": "4111"})
        sealed = json.loads(client.expect("sealed", channel)["data"])
        self.assertEqual(set(sealed), {"nonce", "ciphertext"})
        box = nacl.secret.SecretBox(base64.b64decode(auth["shared_secret"]))
        plain = box.decrypt(
            base64.b64decode(sealed["ciphertext"]), base64.b64decode(sealed["nonce"])
        )
        self.assertEqual(json.loads(plain), {"card": "4111"})

    def test_user_authentication_and_send_to_user(self):
        client = self.client()
        user = {"id": unique("py-user"), "name": "Ann"}
        signin = self.lib.authenticate_user(client.socket_id, user)
        self.assertEqual(set(signin), {"auth", "user_data"})
        client.send("pusher:signin", signin)
        success = client.expect("pusher:signin_success")
        self.assertEqual(json.loads(success["data"]["user_data"]), user)
        # As pusher-js does after signing in: the user's own channel, without a signature.
        to_user = "#server-to-user-" + user["id"]
        client.subscribed(to_user)
        self.lib.send_to_user(user["id"], "direct", {"for": "you"})
        frame = client.expect("direct", to_user)
        self.assertEqual(json.loads(frame["data"]), {"for": "you"})

    def test_signin_with_a_forged_signature_is_refused(self):
        client = self.client()
        signin = self.lib.authenticate_user(client.socket_id, {"id": "ann"})
        signin["user_data"] = json.dumps({"id": "admin"})
        client.send("pusher:signin", signin)
        self.assertEqual(client.next()["event"], "pusher:error")

    def test_terminate_user_connections(self):
        # pusher 3.x posts to /users/<id>/terminate_connections, without /apps/<app_id>.
        client = self.client()
        user = {"id": unique("py-terminated")}
        client.send("pusher:signin", self.lib.authenticate_user(client.socket_id, user))
        client.expect("pusher:signin_success")
        self.lib.terminate_user_connections(user["id"])
        client.expect("pusher:error")


if __name__ == "__main__":
    unittest.main()
