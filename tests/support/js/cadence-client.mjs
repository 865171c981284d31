// A long-running AWS SDK for JavaScript v3 client for the re-check cadence
// tests. One STSClient with the default provider chain (the profile in
// AWS_PROFILE, whose credential_process is the Tollgate shim) calls
// GetCallerIdentity in a loop, pausing PAUSE seconds between calls, until
// the file STOP exists. Each call prints one JSON line:
// {"t": <epoch seconds at the call>, "ok": true, "arn": <caller ARN>}
// or {"t": ..., "ok": false, "error": "..."}. Nothing else resolves the
// client's credentials, so every credential_process run comes from the
// SDK's own refresh before a call.
//
// Usage: AWS_PROFILE=NAME node cadence-client.mjs STOP PAUSE

import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { fromNodeProviderChain } from '@aws-sdk/credential-providers';

const [stop, pauseText] = process.argv.slice(2);
const pause = Number(pauseText);
if (!stop || !Number.isFinite(pause) || pause < 0) {
  process.stderr.write(`cadence-client: expected STOP and PAUSE (seconds) arguments, got ${JSON.stringify(process.argv.slice(2))}\n`);
  process.exit(2);
}
if (!process.env.AWS_ENDPOINT_URL) {
  process.stderr.write('cadence-client: AWS_ENDPOINT_URL is not set; point it at the test STS endpoint\n');
  process.exit(2);
}

const client = new STSClient({
  region: process.env.AWS_REGION ?? 'us-east-1',
  endpoint: process.env.AWS_ENDPOINT_URL,
  credentials: fromNodeProviderChain(),
});

while (!existsSync(stop)) {
  const started = Date.now() / 1000;
  let line;
  try {
    const identity = await client.send(new GetCallerIdentityCommand({}));
    line = { t: started, ok: true, arn: identity.Arn };
  } catch (error) {
    line = { t: started, ok: false, error: `${error.name}: ${error.message}` };
  }
  process.stdout.write(`${JSON.stringify(line)}\n`);
  await sleep(pause * 1000);
}
