"""Smoke test of the real Claude Code CLI against the fake Bedrock runtime.

Started by smoke.sh, which puts it inside a loopback-only network namespace.
Anywhere else it exits with an error before starting anything. Each scenario starts its own servers
on 127.0.0.1, runs `claude` with a throwaway HOME and a static-credentials
`credential_process`, checks what happened, and stops what it started. The
last line is `N passed, N failed`; the exit status is 1 when a check failed.

Options:
    --keep           keep the run folder (its path is printed) for reading
    --save-samples   write sanitised OTLP sample bodies to samples/
    --only NAME      run only the named scenario (repeatable)
"""

import argparse
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SUPPORT = os.path.dirname(HERE)
BEDROCK_SERVER = os.path.join(SUPPORT, "bedrock", "server.py")
OTLP_RECEIVER = os.path.join(HERE, "otlp_receiver.py")
CLAUDE = os.path.join(HERE, "bin", "claude")
CHECK_LOOPBACK = os.path.join(HERE, "bin", "check-loopback-only")
SAMPLES = os.path.join(HERE, "samples")

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
PROMPT = "say hi"
STATIC_KEY = "AKIATESTSTATIC"
SECOND_KEY = "AKIATESTSECOND"
REPLY = "Hi from the fake Bedrock runtime, smoke test."
HEADERS_HELPER_VALUE = "Bearer test"
REFRESH_MARKER = "Monthly quota of 500M tokens used up; resets 2027-01-01."

# Token usage the fake endpoint reports for every response, distinct per
# type so a swapped type shows up in the comparison.
USAGE = {
    "input_tokens": 37,
    "output_tokens": 19,
    "cache_read_input_tokens": 1234,
    "cache_creation_input_tokens": 56,
}
# claude_code.token.usage `type` attribute for each Messages usage field.
METRIC_TYPES = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cacheRead": "cache_read_input_tokens",
    "cacheCreation": "cache_creation_input_tokens",
}

# Seconds Claude Code gets per run, as `timeout` enforces.
CLAUDE_TIMEOUT = 120
# Seconds a server gets to print its ready line.
READY_TIMEOUT = 20
# Attribute keys that identify an installation or a session. Saved samples
# get a placeholder in their place.
IDENTIFYING_ATTRIBUTES = {"user.id", "session.id", "user.account_uuid", "organization.id", "user.email"}
# Strings that must never appear in a saved sample.
SECRET_MARKERS = ("AKIA", "static-secret", "static-session-token", HEADERS_HELPER_VALUE)


class Checks:
    """Collects named pass/fail results and prints them as they come."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def expect(self, condition, name, detail=""):
        if condition:
            self.passed += 1
            print(f"ok - {name}", flush=True)
        else:
            self.failed += 1
            print(f"not ok - {name}" + (f": {detail}" if detail else ""), flush=True)
        return condition

    def equal(self, actual, expected, name):
        return self.expect(actual == expected, name, f"expected {expected!r}, got {actual!r}")


def write_executable(path, text):
    with open(path, "w", encoding="utf-8") as script:
        script.write(text)
    os.chmod(path, 0o755)


def read_json_lines(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def count_lines(path):
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as lines:
        return sum(1 for _ in lines)


class Server:
    """A child server process on 127.0.0.1.

    Without `port`, the server must print `ready URL` on stdout once it
    listens; with `port`, it is ready once that port accepts connections.
    """

    def __init__(self, name, argv, port=None):
        self.name = name
        # A server polled by port may print freely, so its output is discarded
        # rather than left to fill an unread pipe.
        stdout = subprocess.PIPE if port is None else subprocess.DEVNULL
        self.process = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.DEVNULL, text=True)
        if port is None:
            ready, _, _ = select.select([self.process.stdout], [], [], READY_TIMEOUT)
            line = self.process.stdout.readline().strip() if ready else ""
            if not line.startswith("ready "):
                self.stop()
                raise RuntimeError(f"{name} did not print its ready line within {READY_TIMEOUT} s (got {line!r})")
            self.url = line.split(" ", 1)[1]
        else:
            deadline = time.monotonic() + READY_TIMEOUT
            while not port_open(port):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port} within {READY_TIMEOUT} s")
                time.sleep(0.1)
            self.url = f"http://127.0.0.1:{port}"

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class Scenario:
    """One run folder with a throwaway HOME, AWS config and the servers it started."""

    def __init__(self, root, name):
        self.dir = os.path.join(root, name)
        self.home = os.path.join(self.dir, "home")
        self.work = os.path.join(self.dir, "work")
        self.tmp = os.path.join(self.dir, "tmp")
        self.runtime = os.path.join(self.dir, "runtime")
        for folder in (self.home, self.work, self.tmp, self.runtime):
            os.makedirs(folder, mode=0o700)
        self.servers = []
        self.bedrock = None
        self.config = os.path.join(self.dir, "aws-config")
        self.creds_calls = os.path.join(self.dir, "credential-process.calls")
        self.request_log = os.path.join(self.dir, "bedrock-requests.jsonl")
        self.deny_file = os.path.join(self.dir, "denied-keys.txt")

    def path(self, name):
        return os.path.join(self.dir, name)

    def write_static_credential_process(self, keys=(STATIC_KEY,)):
        """Write a credential_process that hands out `keys` in turn, keeping the last."""
        script = self.path("credential-process.sh")
        key_list = " ".join(keys)
        write_executable(
            script,
            f"""#!/bin/sh
# Static credential_process for the smoke test: call N gets key N of the list.
echo call >> '{self.creds_calls}'
calls=$(wc -l < '{self.creds_calls}')
key=$(echo {key_list} | tr ' ' '\\n' | sed -n "${{calls}}p")
[ -n "$key" ] || key={keys[-1]}
printf '{{"Version":1,"AccessKeyId":"%s","SecretAccessKey":"static-secret-for-tests",\
"SessionToken":"static-session-token","Expiration":"2099-01-01T00:00:00Z"}}\\n' "$key"
""",
        )
        self.write_aws_config(script)

    def write_failing_credential_process(self):
        script = self.path("credential-process.sh")
        write_executable(
            script,
            f"""#!/bin/sh
echo call >> '{self.creds_calls}'
echo "credential_process: quota blocked (stderr of the failing process)" >&2
exit 1
""",
        )
        self.write_aws_config(script)

    def write_aws_config(self, script):
        with open(self.config, "w", encoding="utf-8") as config:
            config.write(f"[profile tollgate-smoke]\ncredential_process = {script}\nregion = us-east-1\n")

    def write_refresh_script(self, exit_code):
        """Write an awsAuthRefresh command that prints REFRESH_MARKER and exits with `exit_code`."""
        script = self.path("aws-auth-refresh.sh")
        write_executable(
            script,
            f"""#!/bin/sh
echo call >> '{self.path("aws-auth-refresh.calls")}'
echo '{REFRESH_MARKER}'
echo 'Ask your administrator to raise the limit.' >&2
exit {exit_code}
""",
        )
        return script

    def write_settings(self, settings):
        path = self.path("settings.json")
        with open(path, "w", encoding="utf-8") as settings_file:
            json.dump(settings, settings_file)
        return path

    def start_bedrock(self, extra_args=()):
        argv = [sys.executable, BEDROCK_SERVER, "--request-log", self.request_log, "--reply", REPLY]
        argv += ["--input-tokens", str(USAGE["input_tokens"]), "--output-tokens", str(USAGE["output_tokens"])]
        argv += ["--cache-read-tokens", str(USAGE["cache_read_input_tokens"])]
        argv += ["--cache-creation-tokens", str(USAGE["cache_creation_input_tokens"])]
        self.bedrock = Server("fake Bedrock", argv + list(extra_args))
        self.servers.append(self.bedrock)
        return self.bedrock

    def start_receiver(self):
        argv = [sys.executable, OTLP_RECEIVER, "--records", self.path("otlp.jsonl")]
        argv += ["--body-dir", self.path("otlp-bodies")]
        server = Server("OTLP receiver", argv)
        self.servers.append(server)
        return server

    def start_moto(self):
        """Start moto_server for STS GetCallerIdentity, or return None when it is not installed."""
        moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
        if not os.path.exists(moto):
            return None
        port = free_port()
        server = Server("moto_server", [moto, "-H", "127.0.0.1", "-p", str(port)], port=port)
        self.servers.append(server)
        return server

    def claude_env(self, extra=None):
        """Build Claude Code's environment from scratch, so nothing from the caller leaks in."""
        env = {
            "PATH": os.environ["PATH"],
            "HOME": self.home,
            "TERM": "dumb",
            "TMPDIR": self.tmp,
            "CLAUDE_CODE_TMPDIR": self.tmp,
            "XDG_RUNTIME_DIR": self.runtime,
            "CLAUDE_CODE_USE_BEDROCK": "1",
            "AWS_REGION": "us-east-1",
            "AWS_PROFILE": "tollgate-smoke",
            "AWS_CONFIG_FILE": self.config,
            "AWS_SHARED_CREDENTIALS_FILE": self.path("aws-credentials-absent"),
            "ANTHROPIC_BEDROCK_BASE_URL": self.bedrock.url,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        env.update(extra or {})
        return env

    def run_claude(self, extra_env=None, extra_args=()):
        argv = ["timeout", str(CLAUDE_TIMEOUT), CLAUDE, "-p", PROMPT, "--model", MODEL, *extra_args]
        started = time.monotonic()
        result = subprocess.run(
            argv,
            cwd=self.work,
            env=self.claude_env(extra_env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLAUDE_TIMEOUT + 30,
        )
        result.seconds = time.monotonic() - started
        with open(self.path("claude.stdout"), "w", encoding="utf-8") as out:
            out.write(result.stdout)
        with open(self.path("claude.stderr"), "w", encoding="utf-8") as err:
            err.write(result.stderr)
        print(
            f"# {os.path.basename(self.dir)}: claude exited {result.returncode} after {result.seconds:.1f} s, "
            f"credential_process ran {count_lines(self.creds_calls)} times",
            flush=True,
        )
        return result

    def requests(self):
        return read_json_lines(self.request_log)

    def stop(self):
        for server in reversed(self.servers):
            server.stop()
        self.servers = []


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port):
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------
# OTLP helpers


def attribute_map(attributes):
    values = {}
    for attribute in attributes:
        value = attribute.get("value", {})
        values[attribute["key"]] = next(iter(value.values()), None) if value else None
    return values


def metric_points(records, name):
    """Yield (temporality, attributes, value) of every data point of metric `name`."""
    for record in records:
        body = record.get("body") or {}
        for resource_metrics in body.get("resourceMetrics", []):
            for scope_metrics in resource_metrics.get("scopeMetrics", []):
                for metric in scope_metrics.get("metrics", []):
                    if metric.get("name") != name or "sum" not in metric:
                        continue
                    temporality = metric["sum"].get("aggregationTemporality")
                    for point in metric["sum"].get("dataPoints", []):
                        value = point.get("asDouble", point.get("asInt"))
                        yield temporality, attribute_map(point.get("attributes", [])), float(value)


def sanitise_otlp_json(body):
    """Replace identifying attribute values in an OTLP JSON body, in place."""

    def walk(node):
        if isinstance(node, dict):
            if node.get("key") in IDENTIFYING_ATTRIBUTES and "value" in node:
                node["value"] = {"stringValue": f"<{node['key']} removed>"}
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(body)
    return body


def sanitise_otlp_protobuf(raw):
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

    request = metrics_service_pb2.ExportMetricsServiceRequest()
    request.ParseFromString(raw)
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.sum.data_points:
                    for attribute in point.attributes:
                        if attribute.key in IDENTIFYING_ATTRIBUTES:
                            attribute.value.string_value = f"<{attribute.key} removed>"
    return request.SerializeToString()


# ---------------------------------------------------------------------------
# Scenarios


def scenario_plain(checks, scenario, options):
    """A plain `-p` run: reply on stdout, every request signed with the static key."""
    scenario.write_static_credential_process()
    scenario.start_bedrock()
    result = scenario.run_claude()
    requests = scenario.requests()

    checks.equal(result.returncode, 0, "plain: claude exits 0")
    checks.equal(result.stdout.strip(), REPLY, "plain: fake stream reply is claude's stdout")
    checks.expect(len(requests) > 0, "plain: fake Bedrock received requests")
    keys = sorted({request["access_key_id"] for request in requests})
    checks.equal(keys, [STATIC_KEY], "plain: every request signed with Credential=AKIATESTSTATIC")
    services = sorted({request["signed_service"] for request in requests})
    checks.equal(services, ["bedrock"], "plain: every request signed for service bedrock")
    streams = [r for r in requests if r.get("operation") == "invoke-with-response-stream"]
    checks.equal(len(streams), 1, "plain: one streaming request")
    checks.equal([s["model_id"] for s in streams], [MODEL], "plain: stream uses the --model id")
    probes = [r for r in requests if r.get("operation") == "invoke"]
    checks.equal([p["max_tokens"] for p in probes], [1, 1], "plain: two max_tokens 1 probes")
    profiles = [r for r in requests if r["path"] == "/inference-profiles"]
    checks.equal(len(profiles), 1, "plain: one inference-profiles lookup")
    checks.expect(count_lines(scenario.creds_calls) >= 1, "plain: credential_process ran")


def scenario_telemetry(checks, scenario, options, protocol):
    """Telemetry over OTLP/HTTP: token.usage points equal the streamed usage, helper header arrives."""
    label = f"telemetry {protocol}"
    scenario.write_static_credential_process()
    helper_calls = scenario.path("otel-headers-helper.calls")
    helper = scenario.path("otel-headers-helper.sh")
    write_executable(
        helper,
        f"#!/bin/sh\necho call >> '{helper_calls}'\nprintf '{{\"Authorization\":\"{HEADERS_HELPER_VALUE}\"}}\\n'\n",
    )
    settings = scenario.write_settings({"otelHeadersHelper": helper})
    scenario.start_bedrock()
    receiver = scenario.start_receiver()
    result = scenario.run_claude(
        {
            "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": receiver.url + "/v1/metrics",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        },
        ["--settings", settings],
    )
    checks.equal(result.returncode, 0, f"{label}: claude exits 0")
    checks.equal(result.stdout.strip(), REPLY, f"{label}: fake stream reply is claude's stdout")

    records = read_json_lines(scenario.path("otlp.jsonl"))
    metric_records = [r for r in records if r["path"] == "/v1/metrics"]
    expected_type = "application/json" if protocol == "http/json" else "application/x-protobuf"
    checks.expect(len(metric_records) > 0, f"{label}: receiver got metric exports")
    checks.equal(
        sorted({r["content_type"] for r in metric_records}), [expected_type], f"{label}: content type"
    )
    checks.equal(
        sorted({r["status"] for r in metric_records}), [200], f"{label}: every export decoded and accepted"
    )

    expected = {metric_type: 0 for metric_type in METRIC_TYPES}
    streams = [
        r
        for r in scenario.requests()
        if r.get("operation") == "invoke-with-response-stream" and r["status"] == 200
    ]
    for stream in streams:
        for metric_type, usage_field in METRIC_TYPES.items():
            expected[metric_type] += stream["usage"][usage_field]

    points = list(metric_points(metric_records, "claude_code.token.usage"))
    reported = {metric_type: 0.0 for metric_type in METRIC_TYPES}
    for _, attributes, value in points:
        reported[attributes.get("type")] = reported.get(attributes.get("type"), 0.0) + value
    for metric_type in METRIC_TYPES:
        checks.equal(
            reported[metric_type],
            float(expected[metric_type]),
            f"{label}: token.usage type {metric_type} equals the streamed usage",
        )
    checks.equal(sorted({t for t, _, _ in points}), [1], f"{label}: token.usage temporality is delta")
    checks.equal(sorted({a.get("model") for _, a, _ in points}), [MODEL], f"{label}: model attribute")

    expected_digest = hashlib.sha256(HEADERS_HELPER_VALUE.encode()).hexdigest()
    digests = sorted({r["authorization_sha256"] for r in metric_records})
    checks.equal(digests, [expected_digest], f"{label}: otelHeadersHelper Authorization reached the receiver")
    checks.equal(count_lines(helper_calls), 1, f"{label}: otelHeadersHelper ran once")

    if options.save_samples and metric_records:
        save_sample(checks, metric_records, protocol)


def save_sample(checks, metric_records, protocol):
    """Save the first export that has token.usage points, sanitised, under samples/."""
    os.makedirs(SAMPLES, exist_ok=True)
    record = next(
        (r for r in metric_records if any(True for _ in metric_points([r], "claude_code.token.usage"))),
        metric_records[0],
    )
    with open(record["body_file"], "rb") as body_file:
        raw = body_file.read()
    if protocol == "http/json":
        data = (json.dumps(sanitise_otlp_json(json.loads(raw)), indent=2) + "\n").encode()
        target = os.path.join(SAMPLES, "metrics-http-json.json")
    else:
        data = sanitise_otlp_protobuf(raw)
        target = os.path.join(SAMPLES, "metrics-http-protobuf.pb")
    leaked = [marker for marker in SECRET_MARKERS if marker.encode() in data]
    if checks.equal(leaked, [], f"sample {os.path.basename(target)} has no keys, tokens or helper header"):
        with open(target, "wb") as sample:
            sample.write(data)
        print(f"# saved {target}", flush=True)


def scenario_refresh_print(checks, scenario, options, exit_code):
    """A failing credential_process with awsAuthRefresh set, in `-p` mode."""
    label = f"refresh -p exit {exit_code}"
    scenario.write_failing_credential_process()
    settings = scenario.write_settings({"awsAuthRefresh": scenario.write_refresh_script(exit_code)})
    scenario.start_bedrock()
    result = scenario.run_claude(extra_args=["--settings", settings])

    checks.expect(result.returncode != 0, f"{label}: claude exits non-zero", f"exit {result.returncode}")
    checks.expect(
        "Could not load AWS credentials" in result.stdout,
        f"{label}: stdout has the generic credentials error",
        repr(result.stdout[:300]),
    )
    checks.equal(count_lines(scenario.path("aws-auth-refresh.calls")), 1, f"{label}: awsAuthRefresh ran once")
    # Observed with 2.1.328: `-p` mode shows no awsAuthRefresh output at all.
    checks.expect(
        REFRESH_MARKER not in result.stdout + result.stderr,
        f"{label}: awsAuthRefresh output not shown on stdout or stderr",
    )
    if exit_code != 0:
        checks.expect(
            "Error running awsAuthRefresh" in result.stderr,
            f"{label}: stderr names the failed awsAuthRefresh",
            repr(result.stderr[:300]),
        )
    signed = [r for r in scenario.requests() if r.get("access_key_id")]
    checks.equal(signed, [], f"{label}: no request reached the fake Bedrock endpoint")


def scenario_refresh_interactive(checks, scenario, options):
    """The interactive UI shows a failed awsAuthRefresh's output in a Sign-in box."""
    label = "refresh interactive exit 1"
    if shutil.which("tmux") is None:
        checks.expect(False, f"{label}: tmux is installed", "install the tmux Debian package")
        return
    scenario.write_failing_credential_process()
    settings = scenario.write_settings({"awsAuthRefresh": scenario.write_refresh_script(1)})
    # Skip the first-run theme picker and the folder trust dialog.
    with open(os.path.join(scenario.home, ".claude.json"), "w", encoding="utf-8") as state:
        json.dump(
            {
                "hasCompletedOnboarding": True,
                "theme": "dark",
                "projects": {scenario.work: {"hasTrustDialogAccepted": True}},
            },
            state,
        )
    scenario.start_bedrock()
    env = scenario.claude_env({"TERM": "xterm-256color"})
    launcher = scenario.path("run-claude.sh")
    exports = "".join(f"export {name}='{value}'\n" for name, value in env.items())
    write_executable(
        launcher,
        f"#!/bin/sh\n{exports}cd '{scenario.work}'\n"
        f"exec timeout {CLAUDE_TIMEOUT} '{CLAUDE}' --model '{MODEL}' --settings '{settings}'\n",
    )
    # A private tmux socket, so the session cannot land in a tmux server
    # outside this namespace.
    tmux = ["tmux", "-S", scenario.path("tmux.sock")]
    subprocess.run(tmux + ["new-session", "-d", "-s", "smoke", "-x", "140", "-y", "40", launcher], check=True)
    screen = ""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            screen = subprocess.run(
                tmux + ["capture-pane", "-p", "-t", "smoke"], capture_output=True, text=True
            ).stdout
            if REFRESH_MARKER in screen:
                break
            time.sleep(0.5)
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
    with open(scenario.path("screen.txt"), "w", encoding="utf-8") as screen_file:
        screen_file.write(screen)
    checks.expect(REFRESH_MARKER in screen, f"{label}: screen shows awsAuthRefresh stdout", screen[-600:])
    checks.expect("Sign-in" in screen, f"{label}: output sits in the Sign-in box")
    checks.expect(
        "Ask your administrator to raise the limit." in screen, f"{label}: screen shows awsAuthRefresh stderr"
    )


def scenario_refresh_skipped(checks, scenario, options):
    """With valid credentials, awsAuthRefresh runs only when STS GetCallerIdentity fails."""
    label = "refresh with valid credentials"
    scenario.write_static_credential_process()
    settings = scenario.write_settings({"awsAuthRefresh": scenario.write_refresh_script(0)})
    scenario.start_bedrock()
    moto = scenario.start_moto()
    if moto is None:
        checks.expect(False, f"{label}: moto_server is installed", "run scripts/install-deps.sh")
        return
    calls = scenario.path("aws-auth-refresh.calls")

    result = scenario.run_claude({"AWS_ENDPOINT_URL_STS": moto.url}, ["--settings", settings])
    checks.equal(result.stdout.strip(), REPLY, f"{label}: reply with STS answering")
    checks.equal(count_lines(calls), 0, f"{label}: awsAuthRefresh skipped when GetCallerIdentity answers")

    # Without an STS endpoint override the lookup goes to the public STS
    # host, which this namespace cannot reach, so it fails.
    result = scenario.run_claude(extra_args=["--settings", settings])
    checks.equal(result.stdout.strip(), REPLY, f"{label}: reply with STS unreachable")
    checks.equal(count_lines(calls), 1, f"{label}: awsAuthRefresh runs when GetCallerIdentity fails")


def scenario_revoked_key(checks, scenario, options):
    """A 403 ExpiredTokenException makes Claude Code run credential_process again and retry."""
    label = "revoked key"
    scenario.write_static_credential_process(keys=(STATIC_KEY, SECOND_KEY))
    with open(scenario.deny_file, "w", encoding="utf-8") as deny:
        deny.write(f"{STATIC_KEY} ExpiredTokenException\n")
    scenario.start_bedrock(["--deny-file", scenario.deny_file])
    result = scenario.run_claude()
    requests = scenario.requests()

    checks.equal(result.returncode, 0, f"{label}: claude exits 0")
    checks.equal(result.stdout.strip(), REPLY, f"{label}: reply after the retry")
    denied = [r for r in requests if r["status"] == 403]
    checks.expect(
        all(r["access_key_id"] == STATIC_KEY for r in denied) and denied,
        f"{label}: requests with the revoked key got 403",
    )
    served = [r for r in requests if r.get("operation") == "invoke-with-response-stream" and r["status"] == 200]
    checks.equal([r["access_key_id"] for r in served], [SECOND_KEY], f"{label}: stream served with the new key")
    checks.expect(count_lines(scenario.creds_calls) >= 2, f"{label}: credential_process ran again")


def scenario_denied_key(checks, scenario, options):
    """Every key denied: Claude Code gives up with the 403 text and names the awsAuthRefresh command."""
    label = "denied key"
    scenario.write_static_credential_process()
    refresh = scenario.write_refresh_script(0)
    settings = scenario.write_settings({"awsAuthRefresh": refresh})
    with open(scenario.deny_file, "w", encoding="utf-8") as deny:
        deny.write(f"{STATIC_KEY}\n")
    scenario.start_bedrock(["--deny-file", scenario.deny_file])
    moto = scenario.start_moto()
    if moto is None:
        checks.expect(False, f"{label}: moto_server is installed", "run scripts/install-deps.sh")
        return
    # The default of 10 retries with backoff takes over 2 minutes.
    result = scenario.run_claude(
        {"AWS_ENDPOINT_URL_STS": moto.url, "CLAUDE_CODE_MAX_RETRIES": "1"}, ["--settings", settings]
    )
    requests = scenario.requests()

    checks.equal(result.returncode, 1, f"{label}: claude exits 1")
    checks.expect(
        "The security token included in the request is expired" in result.stdout,
        f"{label}: stdout has the 403 message",
        repr(result.stdout[:400]),
    )
    checks.expect(refresh in result.stdout, f"{label}: stdout names the awsAuthRefresh command")
    checks.equal(
        count_lines(scenario.path("aws-auth-refresh.calls")), 0, f"{label}: a 403 does not run awsAuthRefresh"
    )
    served = [r for r in requests if r["status"] == 200]
    checks.equal(served, [], f"{label}: no request served")
    checks.expect(count_lines(scenario.creds_calls) >= 2, f"{label}: credential_process ran again after a 403")


SCENARIOS = {
    "plain": scenario_plain,
    "telemetry-json": lambda c, s, o: scenario_telemetry(c, s, o, "http/json"),
    "telemetry-protobuf": lambda c, s, o: scenario_telemetry(c, s, o, "http/protobuf"),
    "refresh-print-exit-0": lambda c, s, o: scenario_refresh_print(c, s, o, 0),
    "refresh-print-exit-1": lambda c, s, o: scenario_refresh_print(c, s, o, 1),
    "refresh-interactive": scenario_refresh_interactive,
    "refresh-skipped": scenario_refresh_skipped,
    "revoked-key": scenario_revoked_key,
    "denied-key": scenario_denied_key,
}


def main(argv):
    parser = argparse.ArgumentParser(description="Smoke test of Claude Code against the fake Bedrock runtime.")
    parser.add_argument("--keep", action="store_true", help="keep the run folder and print its path")
    parser.add_argument("--save-samples", action="store_true", help="write sanitised OTLP samples to samples/")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only this scenario")
    options = parser.parse_args(argv)

    if subprocess.run([CHECK_LOOPBACK]).returncode != 0:
        sys.exit("smoke.py: not inside a loopback-only network namespace; start it with smoke.sh")

    root = tempfile.mkdtemp(prefix="tollgate-claude-smoke-")
    checks = Checks()
    try:
        for name in options.only or SCENARIOS:
            scenario = Scenario(root, name)
            try:
                SCENARIOS[name](checks, scenario, options)
            except Exception as error:
                checks.expect(False, f"{name}: scenario ran to the end", f"{error!r}")
                traceback.print_exc()
            finally:
                scenario.stop()
    finally:
        if options.keep:
            print(f"# run folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
