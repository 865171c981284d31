"""A long-running boto3 client for the re-check cadence tests.

One boto3 session and one STS client call GetCallerIdentity in a loop,
pausing PAUSE seconds between calls, until the file STOP exists. Each call
prints one JSON line: {"t": <epoch seconds at the call>, "ok": true,
"arn": <caller ARN>} or {"t": ..., "ok": false, "error": "..."}. Nothing
else reads the session's credentials, so every credential_process run
comes from botocore's own refresh before a call.

Usage: AWS_PROFILE=NAME python cadence_client.py STOP PAUSE
"""

import json
import os
import sys
import time

import boto3
from botocore.exceptions import BotoCoreError, ClientError


def main() -> int:
    if len(sys.argv) != 3:
        print(f"cadence_client: expected STOP and PAUSE arguments, got {sys.argv[1:]}", file=sys.stderr)
        return 2
    stop, pause = sys.argv[1], float(sys.argv[2])
    session = boto3.Session(profile_name=os.environ["AWS_PROFILE"])
    sts = session.client("sts")
    while not os.path.exists(stop):
        started = time.time()
        try:
            arn = sts.get_caller_identity()["Arn"]
            line = {"t": started, "ok": True, "arn": arn}
        except (BotoCoreError, ClientError) as error:
            line = {"t": started, "ok": False, "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(line), flush=True)
        time.sleep(pause)
    return 0


if __name__ == "__main__":
    sys.exit(main())
