// Calls STS GetCallerIdentity with the AWS SDK for JavaScript v3, taking
// credentials from the default provider chain and the profile in
// AWS_PROFILE, which is how Claude Code gets them. With a profile whose
// credential_process is the Tollgate shim, this is a real SDK client of it.
//
// Usage: AWS_PROFILE=NAME node caller-identity.mjs [CALLS]
//
// Prints {"arns": [...], "access_key_id": "..."} with one ARN per call.
// The STS endpoint comes from AWS_ENDPOINT_URL (the tests point it at moto).

import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { fromNodeProviderChain } from '@aws-sdk/credential-providers';

const calls = Number(process.argv[2] ?? '1');
if (!Number.isInteger(calls) || calls < 1) {
  process.stderr.write(`caller-identity: invalid call count ${JSON.stringify(process.argv[2])}: expected a positive integer\n`);
  process.exit(2);
}
if (!process.env.AWS_ENDPOINT_URL) {
  process.stderr.write('caller-identity: AWS_ENDPOINT_URL is not set; point it at the test STS endpoint\n');
  process.exit(2);
}

const credentials = fromNodeProviderChain();
const client = new STSClient({
  region: process.env.AWS_REGION ?? 'us-east-1',
  endpoint: process.env.AWS_ENDPOINT_URL,
  credentials,
});

const arns = [];
for (let call = 0; call < calls; call += 1) {
  const identity = await client.send(new GetCallerIdentityCommand({}));
  arns.push(identity.Arn);
}
// The client's own memoized provider, so this resolves nothing new.
const resolved = await client.config.credentials();
process.stdout.write(`${JSON.stringify({ arns, access_key_id: resolved.accessKeyId })}\n`);
