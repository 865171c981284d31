"""Tests for the fake Bedrock runtime in server.py.

Each test starts the server as a child process on 127.0.0.1 and talks to it
over HTTP. The event stream is decoded with botocore's EventStreamBuffer (the
AWS SDK for Python's own decoder, which checks both CRCs), so a framing
mistake in the server fails here rather than inside Claude Code.

Run with a Python that has botocore, for example the test venv:
    python -m unittest discover -s tests/support/bedrock
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

from botocore.eventstream import EventStreamBuffer

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "server.py")
MODEL_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIATESTUNIT/20261204/us-east-1/bedrock/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0000"
)

# Requests go straight to 127.0.0.1, whatever proxy the environment names.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FakeBedrockTest(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.log_path = os.path.join(self.folder.name, "requests.jsonl")
        self.deny_path = os.path.join(self.folder.name, "deny.txt")
        env = dict(
            os.environ,
            FAKE_BEDROCK_REQUEST_LOG=self.log_path,
            FAKE_BEDROCK_DENY_FILE=self.deny_path,
            FAKE_BEDROCK_REPLY="Hi there, unit test.",
            FAKE_BEDROCK_INPUT_TOKENS="31",
            FAKE_BEDROCK_OUTPUT_TOKENS="17",
            FAKE_BEDROCK_CACHE_READ_TOKENS="505",
            FAKE_BEDROCK_CACHE_CREATION_TOKENS="66",
        )
        self.process = subprocess.Popen(
            [sys.executable, SERVER], stdout=subprocess.PIPE, env=env, text=True
        )
        ready = self.process.stdout.readline().strip()
        self.assertTrue(ready.startswith("ready http://127.0.0.1:"), ready)
        self.base_url = ready.split(" ", 1)[1]

    def tearDown(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()
        self.folder.cleanup()

    def post(self, path, body):
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Authorization": AUTHORIZATION,
                "Content-Type": "application/json",
                "X-Amz-Security-Token": "not-a-real-token",
            },
        )
        return OPENER.open(request, timeout=10)

    def records(self):
        with open(self.log_path, encoding="utf-8") as log:
            return [json.loads(line) for line in log]

    def model_path(self, operation):
        return "/model/" + urllib.request.quote(MODEL_ID, safe="") + "/" + operation

    def test_stream_frames_decode_with_botocore(self):
        with self.post(self.model_path("invoke-with-response-stream"), {"max_tokens": 4096}) as response:
            self.assertEqual(response.status, 200)
            self.assertEqual(response.headers["Content-Type"], "application/vnd.amazon.eventstream")
            data = response.read()

        buffer = EventStreamBuffer()
        buffer.add_data(data)
        events = []
        for message in buffer:
            self.assertEqual(message.headers[":event-type"], "chunk")
            self.assertEqual(message.headers[":content-type"], "application/json")
            self.assertEqual(message.headers[":message-type"], "event")
            payload = json.loads(message.payload)
            events.append(json.loads(base64.b64decode(payload["bytes"])))

        types = [event["type"] for event in events]
        self.assertEqual(types[0], "message_start")
        self.assertEqual(types[1], "content_block_start")
        self.assertEqual(types[-3:], ["content_block_stop", "message_delta", "message_stop"])
        self.assertGreater(types.count("content_block_delta"), 1)

        text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
        self.assertEqual(text, "Hi there, unit test.")

        start_usage = events[0]["message"]["usage"]
        self.assertEqual(start_usage["input_tokens"], 31)
        self.assertEqual(start_usage["cache_read_input_tokens"], 505)
        self.assertEqual(start_usage["cache_creation_input_tokens"], 66)
        self.assertEqual(events[-2]["usage"]["output_tokens"], 17)
        self.assertEqual(events[-2]["delta"]["stop_reason"], "end_turn")
        self.assertEqual(events[0]["message"]["model"], "claude-sonnet-4-5-20250929")

    def test_stream_request_is_logged(self):
        self.post(self.model_path("invoke-with-response-stream"), {"max_tokens": 4096}).close()
        [record] = self.records()
        self.assertEqual(record["method"], "POST")
        self.assertEqual(record["operation"], "invoke-with-response-stream")
        self.assertEqual(record["model_id"], MODEL_ID)
        self.assertEqual(record["access_key_id"], "AKIATESTUNIT")
        self.assertEqual(record["signed_service"], "bedrock")
        self.assertEqual(record["signed_region"], "us-east-1")
        self.assertTrue(record["has_session_token"])
        self.assertEqual(record["status"], 200)
        self.assertEqual(
            record["usage"],
            {
                "input_tokens": 31,
                "output_tokens": 17,
                "cache_read_input_tokens": 505,
                "cache_creation_input_tokens": 66,
            },
        )

    def test_log_has_no_secrets(self):
        self.post(self.model_path("invoke"), {"max_tokens": 1}).close()
        with open(self.log_path, encoding="utf-8") as log:
            text = log.read()
        self.assertNotIn("not-a-real-token", text)
        self.assertNotIn("Signature", text)

    def test_probe_output_capped_at_max_tokens(self):
        with self.post(self.model_path("invoke"), {"max_tokens": 1}) as response:
            message = json.load(response)
        self.assertEqual(message["type"], "message")
        self.assertEqual(message["usage"]["output_tokens"], 1)
        self.assertEqual(message["usage"]["input_tokens"], 31)
        self.assertEqual(message["stop_reason"], "max_tokens")
        [record] = self.records()
        self.assertEqual(record["operation"], "invoke")
        self.assertEqual(record["max_tokens"], 1)
        self.assertEqual(record["usage"]["output_tokens"], 1)

    def test_inference_profiles_not_found(self):
        with self.assertRaises(urllib.error.HTTPError) as caught:
            OPENER.open(self.base_url + "/inference-profiles?maxResults=1000", timeout=10)
        self.assertEqual(caught.exception.code, 404)
        caught.exception.close()
        [record] = self.records()
        self.assertEqual(record["path"], "/inference-profiles")
        self.assertEqual(record["status"], 404)

    def test_denied_key_gets_expired_token(self):
        with open(self.deny_path, "w", encoding="utf-8") as deny:
            deny.write("AKIATESTUNIT\n")
        with self.assertRaises(urllib.error.HTTPError) as caught:
            self.post(self.model_path("invoke-with-response-stream"), {"max_tokens": 10})
        error = caught.exception
        self.assertEqual(error.code, 403)
        self.assertEqual(error.headers["x-amzn-ErrorType"], "ExpiredTokenException")
        self.assertIn("security token included in the request is expired", json.load(error)["message"])
        error.close()
        [record] = self.records()
        self.assertEqual(record["status"], 403)
        self.assertEqual(record["error"], "ExpiredTokenException")
        self.assertNotIn("usage", record)

    def test_deny_line_names_error_type(self):
        with open(self.deny_path, "w", encoding="utf-8") as deny:
            deny.write("# revoked sessions\nAKIAOTHER\nAKIATESTUNIT AccessDeniedException\n")
        with self.assertRaises(urllib.error.HTTPError) as caught:
            self.post(self.model_path("invoke"), {"max_tokens": 1})
        self.assertEqual(caught.exception.code, 403)
        self.assertEqual(caught.exception.headers["x-amzn-ErrorType"], "AccessDeniedException")
        caught.exception.close()

    def test_unlisted_key_is_served(self):
        with open(self.deny_path, "w", encoding="utf-8") as deny:
            deny.write("AKIAOTHER\n")
        with self.post(self.model_path("invoke"), {"max_tokens": 1}) as response:
            self.assertEqual(response.status, 200)

    def test_unknown_operation_not_found(self):
        with self.assertRaises(urllib.error.HTTPError) as caught:
            self.post("/model/x/converse", {})
        self.assertEqual(caught.exception.code, 404)
        caught.exception.close()


if __name__ == "__main__":
    unittest.main()
