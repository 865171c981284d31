#!/usr/bin/env python3
"""A recording OTLP/HTTP receiver for tests of Claude Code's telemetry.

Accepts ``POST /v1/metrics``, ``/v1/logs`` and ``/v1/traces`` in JSON
(``application/json``) or protobuf (``application/x-protobuf``), optionally
gzip-compressed. Each request appends one JSON line to the record file with
the path, the content type and the decoded body. The Authorization header is
recorded as its scheme plus a SHA-256 hex digest, because in real use it is
an ID token, so the value itself is never stored.

Protobuf bodies are decoded with the ``opentelemetry-proto`` package when it
is importable. Without it, the record gets an ``error`` field naming the
missing package and keeps only the raw body file.

With ``--body-dir``, each raw (decompressed) body is also written to a
numbered file there, for saving samples.

Listens on 127.0.0.1 only and prints ``ready http://127.0.0.1:<port>`` on
stdout once it accepts connections. Stop it with SIGTERM or SIGINT.
"""

import argparse
import gzip
import hashlib
import itertools
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    PROTOBUF_REQUESTS = {
        "/v1/metrics": metrics_service_pb2.ExportMetricsServiceRequest,
        "/v1/logs": logs_service_pb2.ExportLogsServiceRequest,
        "/v1/traces": trace_service_pb2.ExportTraceServiceRequest,
    }
except ImportError:
    PROTOBUF_REQUESTS = None

# Upper bound on a request body, so a broken client cannot fill the memory.
MAX_BODY_BYTES = 16 * 1024 * 1024

OTLP_PATHS = ("/v1/metrics", "/v1/logs", "/v1/traces")


def decode_protobuf(path, body):
    """Decode an OTLP protobuf export request into the OTLP JSON shape.

    Field names come out in lowerCamelCase and enums as integers, as in OTLP
    JSON; 64-bit integers come out as strings, which OTLP JSON also allows.
    """
    message = PROTOBUF_REQUESTS[path]()
    message.ParseFromString(body)
    return MessageToDict(message, use_integers_for_enums=True)


class Receiver:
    """Record file, body folder and request counter shared by handler threads."""

    def __init__(self, record_path, body_dir):
        self.lock = threading.Lock()
        self.counter = itertools.count(1)
        self.record_file = open(record_path, "a", encoding="utf-8")
        self.body_dir = body_dir

    def record(self, entry, body, extension):
        with self.lock:
            number = next(self.counter)
            if self.body_dir:
                name = os.path.join(self.body_dir, f"{number:04d}{entry['path'].replace('/', '-')}.{extension}")
                with open(name, "wb") as body_file:
                    body_file.write(body)
                entry["body_file"] = name
            entry["number"] = number
            self.record_file.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self.record_file.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "RecordingOtlpReceiver/1"

    def log_message(self, format, *args):
        pass

    def reply(self, status, content_type, data):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.reply(413, "text/plain", b"request body too large\n")
            self.close_connection = True
            return
        body = self.rfile.read(length)
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)

        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        authorization = self.headers.get("Authorization")
        entry = {
            "time": time.time(),
            "path": path,
            "content_type": content_type,
            "content_encoding": self.headers.get("Content-Encoding"),
            "user_agent": self.headers.get("User-Agent"),
            "authorization_scheme": authorization.split(" ", 1)[0] if authorization else None,
            "authorization_sha256": (
                hashlib.sha256(authorization.encode("utf-8")).hexdigest() if authorization else None
            ),
        }

        if path not in OTLP_PATHS:
            entry["status"] = 404
            self.server.receiver.record(entry, body, "bin")
            self.reply(404, "text/plain", f"{path} is not an OTLP/HTTP path\n".encode())
            return

        if content_type == "application/json":
            try:
                entry["body"] = json.loads(body)
            except ValueError as error:
                entry["status"] = 400
                entry["error"] = f"invalid JSON: {error}"
                self.server.receiver.record(entry, body, "json")
                self.reply(400, "text/plain", b"invalid JSON\n")
                return
            entry["status"] = 200
            self.server.receiver.record(entry, body, "json")
            self.reply(200, "application/json", b"{}")
        elif content_type == "application/x-protobuf":
            if PROTOBUF_REQUESTS is None:
                entry["error"] = "opentelemetry-proto is not installed, so the body was not decoded"
            else:
                try:
                    entry["body"] = decode_protobuf(path, body)
                except Exception as error:  # Protobuf raises DecodeError and others.
                    entry["status"] = 400
                    entry["error"] = f"invalid protobuf: {error}"
                    self.server.receiver.record(entry, body, "pb")
                    self.reply(400, "text/plain", b"invalid protobuf\n")
                    return
            entry["status"] = 200
            self.server.receiver.record(entry, body, "pb")
            # An empty Export*ServiceResponse encodes to zero bytes.
            self.reply(200, "application/x-protobuf", b"")
        else:
            entry["status"] = 415
            self.server.receiver.record(entry, body, "bin")
            self.reply(415, "text/plain", f"unsupported content type {content_type!r}\n".encode())


def main(argv):
    parser = argparse.ArgumentParser(description="Recording OTLP/HTTP receiver on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--records", required=True, help="JSON-lines file that gets one record per request")
    parser.add_argument("--body-dir", help="folder that gets each raw request body as a numbered file")
    args = parser.parse_args(argv)
    if args.body_dir:
        os.makedirs(args.body_dir, exist_ok=True)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.receiver = Receiver(args.records, args.body_dir)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    host, port = server.server_address[:2]
    print(f"ready http://{host}:{port}", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
