#!/usr/bin/env python3
"""A fake Amazon Bedrock runtime for end-to-end tests of Claude Code.

It serves the requests that Claude Code 2.1.328 sends in Bedrock mode:

- ``GET /inference-profiles``: 404, so Claude Code falls back to its
  built-in model list.
- ``POST /model/{id}/invoke``: a plain JSON Messages response (Claude Code
  sends two ``max_tokens: 1`` model-access probes this way).
- ``POST /model/{id}/invoke-with-response-stream``: the Messages stream,
  each event framed as an AWS event-stream message.

Every request is appended to the request log as one JSON line with the
method, path, the access key id from the SigV4 ``Credential=`` field, the
model id and the token usage reported. The log never contains the signature,
the session token or the request body.

Access keys listed in the deny file (re-read on every request) get a 403
``ExpiredTokenException`` or ``AccessDeniedException``, as Bedrock returns
for a revoked or expired session.

Listens on 127.0.0.1 only and prints ``ready http://127.0.0.1:<port>`` on
stdout once it accepts connections. Stop it with SIGTERM or SIGINT.
"""

import argparse
import base64
import json
import os
import re
import signal
import struct
import sys
import threading
import time
import urllib.parse
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EVENT_STREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"

# Event-stream header value type for a UTF-8 string with a 2-byte length.
HEADER_TYPE_STRING = 7

# Upper bound on a request body, so a broken client cannot fill the memory.
MAX_BODY_BYTES = 16 * 1024 * 1024

# The Anthropic model name that Bedrock model ids such as
# `us.anthropic.claude-sonnet-4-5-20250929-v1:0` stand for.
MODEL_ID_PATTERN = re.compile(r"(?:^|\.)anthropic\.(claude-[a-z0-9-]+?)(?:-v\d+(?::\d+)?)?$")

CREDENTIAL_PATTERN = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request")

DENY_MESSAGES = {
    "ExpiredTokenException": "The security token included in the request is expired",
    "AccessDeniedException": "You don't have access to the model with the specified model ID.",
}


def env_int(name, default):
    """Read a non-negative integer from the environment, else `default`."""
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        sys.exit(f"fake-bedrock: {name}={text!r} is not an integer; set a token count such as 25")
    if value < 0:
        sys.exit(f"fake-bedrock: {name}={value} is negative; set a count of 0 or more")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Fake Amazon Bedrock runtime on 127.0.0.1 for Claude Code tests.",
        epilog="Each option also reads the environment variable named in its help; the option wins.",
    )

    parser.add_argument(
        "--port",
        type=int,
        default=env_int("FAKE_BEDROCK_PORT", 0),
        help="TCP port on 127.0.0.1; 0 picks a free one (FAKE_BEDROCK_PORT, default 0)",
    )

    parser.add_argument(
        "--port-file",
        default=os.environ.get("FAKE_BEDROCK_PORT_FILE"),
        help="file that gets the bound 127.0.0.1:PORT once listening (FAKE_BEDROCK_PORT_FILE)",
    )

    parser.add_argument(
        "--request-log",
        default=os.environ.get("FAKE_BEDROCK_REQUEST_LOG"),
        help="JSON-lines file that gets one record per request (FAKE_BEDROCK_REQUEST_LOG); "
        "without it records go to stderr",
    )

    parser.add_argument(
        "--deny-file",
        default=os.environ.get("FAKE_BEDROCK_DENY_FILE"),
        help="file of access key ids, one a line, optionally followed by "
        "ExpiredTokenException or AccessDeniedException; requests signed with "
        "a listed key get a 403 (FAKE_BEDROCK_DENY_FILE)",
    )

    parser.add_argument(
        "--deny-error",
        choices=sorted(DENY_MESSAGES),
        default=os.environ.get("FAKE_BEDROCK_DENY_ERROR", "ExpiredTokenException"),
        help="error type for deny-file lines that name none (FAKE_BEDROCK_DENY_ERROR, "
        "default ExpiredTokenException)",
    )

    parser.add_argument(
        "--reply",
        default=os.environ.get("FAKE_BEDROCK_REPLY", "Hello from the fake Bedrock endpoint."),
        help="assistant text of every response (FAKE_BEDROCK_REPLY)",
    )

    parser.add_argument(
        "--input-tokens",
        type=int,
        default=env_int("FAKE_BEDROCK_INPUT_TOKENS", 25),
        help="input_tokens reported per response (FAKE_BEDROCK_INPUT_TOKENS, default 25)",
    )

    parser.add_argument(
        "--output-tokens",
        type=int,
        default=env_int("FAKE_BEDROCK_OUTPUT_TOKENS", 12),
        help="output_tokens reported per response, capped at the request's max_tokens "
        "(FAKE_BEDROCK_OUTPUT_TOKENS, default 12)",
    )

    parser.add_argument(
        "--cache-read-tokens",
        type=int,
        default=env_int("FAKE_BEDROCK_CACHE_READ_TOKENS", 300),
        help="cache_read_input_tokens reported per response (FAKE_BEDROCK_CACHE_READ_TOKENS, default 300)",
    )

    parser.add_argument(
        "--cache-creation-tokens",
        type=int,
        default=env_int("FAKE_BEDROCK_CACHE_CREATION_TOKENS", 40),
        help="cache_creation_input_tokens reported per response "
        "(FAKE_BEDROCK_CACHE_CREATION_TOKENS, default 40)",
    )

    args = parser.parse_args(argv)
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more")
    return args


# ---------------------------------------------------------------------------
# AWS event-stream framing


def encode_string_header(name, value):
    name_bytes = name.encode("utf-8")
    value_bytes = value.encode("utf-8")
    return (
        struct.pack(">B", len(name_bytes))
        + name_bytes
        + struct.pack(">BH", HEADER_TYPE_STRING, len(value_bytes))
        + value_bytes
    )


def encode_event_message(headers, payload):
    """Frame one event-stream message.

    Layout: total length (4 bytes, big-endian), headers length (4), CRC32 of
    those 8 bytes (4), headers, payload, CRC32 of everything before it (4).
    """
    header_bytes = b"".join(encode_string_header(name, value) for name, value in headers)
    total_length = 4 + 4 + 4 + len(header_bytes) + len(payload) + 4
    prelude = struct.pack(">II", total_length, len(header_bytes))
    prelude_crc = struct.pack(">I", zlib.crc32(prelude))
    message = prelude + prelude_crc + header_bytes + payload
    return message + struct.pack(">I", zlib.crc32(message))


def encode_chunk(event):
    """Frame one Anthropic streaming event as a Bedrock `chunk` event."""
    event_json = json.dumps(event, separators=(",", ":")).encode("utf-8")
    payload = json.dumps({"bytes": base64.b64encode(event_json).decode("ascii")}).encode("utf-8")
    headers = [
        (":event-type", "chunk"),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ]
    return encode_event_message(headers, payload)


# ---------------------------------------------------------------------------
# Responses


def anthropic_model_name(model_id):
    match = MODEL_ID_PATTERN.search(model_id)
    return match.group(1) if match else model_id


def split_text(text, parts):
    """Split `text` into at most `parts` non-empty pieces, so the stream has several deltas."""
    if len(text) < parts:
        return [text] if text else []
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


class FakeBedrock:
    """Configuration and request log shared by all handler threads."""

    def __init__(self, args):
        self.args = args
        self.log_lock = threading.Lock()
        self.log_file = open(args.request_log, "a", encoding="utf-8") if args.request_log else sys.stderr

    def usage_for(self, max_tokens):
        output_tokens = self.args.output_tokens
        if isinstance(max_tokens, int) and max_tokens >= 0:
            output_tokens = min(output_tokens, max_tokens)
        return {
            "input_tokens": self.args.input_tokens,
            "cache_creation_input_tokens": self.args.cache_creation_tokens,
            "cache_read_input_tokens": self.args.cache_read_tokens,
            "output_tokens": output_tokens,
        }

    def denied_error(self, access_key_id):
        """Return the error type for a denied access key, or None."""
        path = self.args.deny_file
        if not path or not access_key_id:
            return None
        try:
            with open(path, encoding="utf-8") as deny_file:
                lines = deny_file.read().splitlines()
        except FileNotFoundError:
            return None
        for line in lines:
            fields = line.split()
            if not fields or fields[0].startswith("#") or fields[0] != access_key_id:
                continue
            if len(fields) > 1 and fields[1] in DENY_MESSAGES:
                return fields[1]
            return self.args.deny_error
        return None

    def record(self, entry):
        line = json.dumps(entry, separators=(",", ":"))
        with self.log_lock:
            self.log_file.write(line + "\n")
            self.log_file.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeBedrock/1"

    @property
    def fake(self):
        return self.server.fake

    def log_message(self, format, *args):
        # The request log replaces http.server's access log on stderr.
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self.read_chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ValueError(f"request body of {length} bytes is over the {MAX_BODY_BYTES}-byte limit")
        return self.rfile.read(length)

    def read_chunked_body(self):
        body = bytearray()
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            size = int(size_line, 16)
            if size == 0:
                # Trailer section ends with an empty line.
                while self.rfile.readline(1024).strip():
                    pass
                return bytes(body)
            body += self.rfile.read(size)
            self.rfile.readline(1024)
            if len(body) > MAX_BODY_BYTES:
                raise ValueError(f"request body is over the {MAX_BODY_BYTES}-byte limit")

    def credential_fields(self):
        match = CREDENTIAL_PATTERN.search(self.headers.get("Authorization", ""))
        if not match:
            return {"access_key_id": None, "signed_region": None, "signed_service": None}
        return {
            "access_key_id": match.group(1),
            "signed_region": match.group(3),
            "signed_service": match.group(4),
        }

    def send_json(self, status, body, extra_headers=()):
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_error_json(self, status, error_type, message):
        self.send_json(status, {"message": message}, [("x-amzn-ErrorType", error_type)])

    def base_entry(self, path):
        entry = {
            "time": time.time(),
            "method": self.command,
            "path": path,
        }
        entry.update(self.credential_fields())
        entry["has_session_token"] = "X-Amz-Security-Token" in self.headers
        return entry

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        entry = self.base_entry(path)
        entry["status"] = 404
        self.fake.record(entry)
        self.send_error_json(404, "ResourceNotFoundException", f"{path} is not served by the fake Bedrock endpoint")

    def do_POST(self):
        raw_path = urllib.parse.urlsplit(self.path).path
        path = urllib.parse.unquote(raw_path)
        entry = self.base_entry(path)

        try:
            body = self.read_body()
        except ValueError as error:
            entry["status"] = 400
            self.fake.record(entry)
            self.send_error_json(400, "ValidationException", str(error))
            self.close_connection = True
            return

        match = re.fullmatch(r"/model/(.+)/(invoke|invoke-with-response-stream)", path)
        if not match:
            entry["status"] = 404
            self.fake.record(entry)
            self.send_error_json(404, "UnknownOperationException", f"{path} is not a Bedrock runtime operation")
            return
        model_id, operation = match.groups()
        entry["model_id"] = model_id
        entry["operation"] = operation

        denied = self.fake.denied_error(entry["access_key_id"])
        if denied:
            entry["status"] = 403
            entry["error"] = denied
            self.fake.record(entry)
            self.send_error_json(403, denied, DENY_MESSAGES[denied])
            return

        try:
            request = json.loads(body or b"{}")
        except ValueError as error:
            entry["status"] = 400
            self.fake.record(entry)
            self.send_error_json(400, "ValidationException", f"request body is not JSON: {error}")
            return
        max_tokens = request.get("max_tokens")
        entry["max_tokens"] = max_tokens
        usage = self.fake.usage_for(max_tokens)
        entry["usage"] = usage
        entry["status"] = 200
        self.fake.record(entry)

        if operation == "invoke":
            self.send_message(model_id, usage)
        else:
            self.send_stream(model_id, usage)

    def send_message(self, model_id, usage):
        text = self.fake.args.reply
        stop_reason = "end_turn"
        if usage["output_tokens"] < self.fake.args.output_tokens:
            stop_reason = "max_tokens"
            text = text[: usage["output_tokens"]]
        message = {
            "id": f"msg_bdrk_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": anthropic_model_name(model_id),
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        self.send_json(200, message)

    def send_stream(self, model_id, usage):
        events = stream_events(model_id, self.fake.args.reply, usage)
        data = b"".join(encode_chunk(event) for event in events)
        self.send_response(200)
        self.send_header("Content-Type", EVENT_STREAM_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("X-Amzn-Bedrock-Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)


def stream_events(model_id, text, usage):
    """Build the Anthropic streaming events of one reply, as Bedrock wraps them in `chunk` events."""
    start_usage = dict(usage)
    # The Messages API reports a provisional output count in message_start.
    # message_delta carries the final one.
    start_usage["output_tokens"] = min(1, usage["output_tokens"])
    message = {
        "id": f"msg_bdrk_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": anthropic_model_name(model_id),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    events = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]

    for piece in split_text(text, 3):
        delta = {"type": "text_delta", "text": piece}
        events.append({"type": "content_block_delta", "index": 0, "delta": delta})

    # Bedrock adds its own invocation metrics to message_stop.
    invocation_metrics = {
        "inputTokenCount": usage["input_tokens"],
        "outputTokenCount": usage["output_tokens"],
        "invocationLatency": 10,
        "firstByteLatency": 5,
        "cacheReadInputTokenCount": usage["cache_read_input_tokens"],
        "cacheWriteInputTokenCount": usage["cache_creation_input_tokens"],
    }
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
        {"type": "message_stop", "amazon-bedrock-invocationMetrics": invocation_metrics},
    ]
    return events


def main(argv):
    args = parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.fake = FakeBedrock(args)
    host, port = server.server_address[:2]

    def stop(signum, frame):
        # shutdown() waits for serve_forever to return, so it must run on
        # another thread than the one blocked in serve_forever.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.port_file:
        with open(args.port_file + ".tmp", "w", encoding="utf-8") as port_file:
            port_file.write(f"{host}:{port}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"ready http://{host}:{port}", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
