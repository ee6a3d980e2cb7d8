"""Webhooks Herald really sends, checked with the official library's `validate_webhook`.

The hook app (HERALD_HOOK_*) is configured with one webhook URL, on HERALD_WEBHOOK_PORT,
where this file listens with a local http.server; nothing else uses that app.
"""

import json
import threading
import unittest

import harness
from harness import Endpoint, RawClient, library, unique


class Webhooks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.arrived = threading.Condition()
        cls.endpoint = Endpoint(cls.receive, port=harness.WEBHOOK_PORT)
        cls.lib = library(harness.HOOK_APP_ID, harness.HOOK_KEY, harness.HOOK_SECRET)

    @classmethod
    def tearDownClass(cls):
        cls.endpoint.close()

    @classmethod
    def receive(cls, _path, _headers, _body):
        with cls.arrived:
            cls.arrived.notify_all()
        return 200, {}

    def webhook(self, name, channel):
        """The first webhook received holding event `name` on `channel`: (headers, raw body)."""

        def find():
            for _, headers, body in self.endpoint.requests:
                events = json.loads(body)["events"]
                if any(e["name"] == name and e["channel"] == channel for e in events):
                    return headers, body
            return None

        with self.arrived:
            found = self.arrived.wait_for(find, timeout=harness.TIMEOUT)
        self.assertTrue(found, "no %s webhook for %s" % (name, channel))
        return found

    def validated(self, headers, body):
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(headers["X-Pusher-Key"], harness.HOOK_KEY)
        hook = self.lib.validate_webhook(
            key=headers["X-Pusher-Key"], signature=headers["X-Pusher-Signature"], body=body
        )
        self.assertIsNotNone(hook, "validate_webhook refused %r" % body)
        return hook

    def client(self):
        client = RawClient(harness.HOOK_KEY)
        self.addCleanup(client.close)
        return client

    def test_channel_occupied_webhook_is_valid(self):
        channel = unique("py-hooked")
        self.client().subscribed(channel)
        headers, body = self.webhook("channel_occupied", channel)
        hook = self.validated(headers, body)
        # validate_webhook also checked that time_ms is within 5 minutes of now.
        self.assertIsInstance(hook["time_ms"], int)
        self.assertIn({"name": "channel_occupied", "channel": channel}, hook["events"])

    def test_tampered_webhooks_are_refused(self):
        channel = unique("py-hooked-tampered")
        self.client().subscribed(channel)
        headers, body = self.webhook("channel_occupied", channel)
        key, signature = headers["X-Pusher-Key"], headers["X-Pusher-Signature"]
        self.assertIsNotNone(self.lib.validate_webhook(key, signature, body))
        forged = body.replace(channel.encode(), b"py-other")
        self.assertIsNone(self.lib.validate_webhook(key, signature, forged))
        self.assertIsNone(self.lib.validate_webhook(key, "0" * 64, body))
        self.assertIsNone(self.lib.validate_webhook("another-key", signature, body))
        other_secret = library(harness.HOOK_APP_ID, harness.HOOK_KEY, "another-secret")
        self.assertIsNone(other_secret.validate_webhook(key, signature, body))

    def test_presence_and_vacated_webhooks_are_valid(self):
        channel = unique("presence-py-hooked")
        client = RawClient(harness.HOOK_KEY)
        auth = self.lib.authenticate(channel, client.socket_id, {"user_id": "ann"})
        client.subscribed(channel, auth["auth"], auth["channel_data"])
        hook = self.validated(*self.webhook("member_added", channel))
        self.assertIn(
            {"name": "member_added", "channel": channel, "user_id": "ann"}, hook["events"]
        )
        client.close()
        hook = self.validated(*self.webhook("channel_vacated", channel))
        self.assertIn({"name": "channel_vacated", "channel": channel}, hook["events"])
        self.validated(*self.webhook("member_removed", channel))


if __name__ == "__main__":
    unittest.main()
