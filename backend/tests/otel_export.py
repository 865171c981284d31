"""Export Claude Code-shaped token usage with the OpenTelemetry Python SDK.

The ingest tests run this with the virtual environment from
scripts/install-deps.sh. It records `claude_code.token.usage` on a counter
as Claude Code does, with the attribute `type` (input, output, cacheRead,
cacheCreation) and `model`. The real OTLP/HTTP exporter, protobuf or JSON,
sends it with delta temporality and the bearer token in the Authorization
header. The token comes from the OTLP_BEARER_TOKEN environment variable, so
it never shows in the process list; `--token` is kept for tests that use
throwaway tokens. Each round is one export request.

It prints one JSON object: the tokens it recorded per "model/type", and
the result of every export. It exits 1 when an export failed.
"""

import argparse
import json
import os
import random
import sys

from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

TYPES = ["input", "output", "cacheRead", "cacheCreation"]


def exporter_class(protocol):
    if protocol == "protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter,
        )
    elif protocol == "json":
        from opentelemetry.exporter.otlp.json.http.metric_exporter import (
            OTLPMetricExporter,
        )
    else:
        raise SystemExit(f"unknown protocol {protocol!r}; use protobuf or json")
    return OTLPMetricExporter


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True, help="the /v1/metrics URL")
    parser.add_argument(
        "--token",
        default=os.environ.get("OTLP_BEARER_TOKEN"),
        help="the bearer ID token (default: $OTLP_BEARER_TOKEN)",
    )
    parser.add_argument("--protocol", default="protobuf", help="protobuf or json")
    parser.add_argument("--rounds", type=int, default=3, help="export requests")
    parser.add_argument("--seed", type=int, default=1, help="seed of the values")
    parser.add_argument("--max-value", type=int, default=5000)
    parser.add_argument(
        "--models",
        default="us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        help="comma-separated model ids",
    )
    parser.add_argument("--session", default="session-1", help="session.id")
    parser.add_argument(
        "--spoof-email", help="a user.email attribute naming someone else"
    )
    parser.add_argument(
        "--integers", action="store_true", help="record ints (asInt), not doubles"
    )
    parser.add_argument(
        "--fixed-value",
        type=int,
        help="record this value for every type and model instead of random ones",
    )
    args = parser.parse_args()
    if not args.token:
        parser.error("no bearer token: set OTLP_BEARER_TOKEN or pass --token")

    exporter = exporter_class(args.protocol)(
        endpoint=args.endpoint,
        headers={"Authorization": f"Bearer {args.token}"},
        timeout=30,
        preferred_temporality={Counter: AggregationTemporality.DELTA},
    )
    results = []
    export = exporter.export

    def recording_export(*positional, **named):
        result = export(*positional, **named)
        results.append(result)
        return result

    exporter.export = recording_export

    # A long interval: exports happen only on force_flush, one per round.
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=Resource.create(
            {"service.name": "claude-code", "service.version": "2.1.328"}
        ),
        metric_readers=[reader],
    )
    meter = provider.get_meter("com.anthropic.claude_code", "2.1.328")
    counter = meter.create_counter(
        "claude_code.token.usage", unit="tokens", description="Number of tokens used"
    )
    session_counter = meter.create_counter("claude_code.session.count")

    rng = random.Random(args.seed)
    totals = {}
    models = [model for model in args.models.split(",") if model]
    for _ in range(args.rounds):
        session_counter.add(1, {"session.id": args.session})
        for model in models:
            for token_type in TYPES:
                if args.fixed_value is not None:
                    tokens = args.fixed_value
                else:
                    tokens = rng.randint(0, args.max_value)
                attributes = {
                    "type": token_type,
                    "model": model,
                    "session.id": args.session,
                    "user.id": "0" * 64,
                    "query_source": "main",
                }
                if args.spoof_email:
                    attributes["user.email"] = args.spoof_email
                counter.add(tokens if args.integers else float(tokens), attributes)
                key = f"{model}/{token_type}"
                totals[key] = totals.get(key, 0) + tokens
        provider.force_flush(timeout_millis=60_000)
    provider.shutdown()

    failed = [result for result in results if result != MetricExportResult.SUCCESS]
    print(
        json.dumps(
            {
                "totals": totals,
                "exports": [result.name for result in results],
            }
        )
    )
    return 1 if failed or len(results) < args.rounds else 0


if __name__ == "__main__":
    sys.exit(main())
