/**
 * Mints a call token for a browser, as a site's backend would (docs/tokens.md).
 *
 *   GATEWAY_AUTH__HS256SECRET=… npm run --silent mint-token -- --sub visitor-42 --dest +15551230000 \
 *     --origin https://shop.example --ttl 300
 *   npm run --silent mint-token -- --es256-key private.pem --sub agent-7 --dest '+1555*' --caller-id +15550001111
 *
 * Prints the token on stdout and nothing else, so `$(…)` works. Errors go to stderr, exit 2.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { mintToken } from '../src/edge';

const USAGE = 'usage: mint-token --sub ID [--dest NUMBER_OR_PATTERN]... [--origin URL]... [--caller-id NUMBER] [--max-calls N] [--ttl SECONDS] [--issuer S] [--audience S] [--es256-key private.pem]\n(HS256 secret from GATEWAY_AUTH__HS256SECRET)';

async function main(): Promise<number> {
  let a;
  try {
    a = parseArgs({
      options: {
        sub: { type: 'string' }, dest: { type: 'string', multiple: true }, origin: { type: 'string', multiple: true },
        'caller-id': { type: 'string' }, 'max-calls': { type: 'string' }, ttl: { type: 'string', default: '300' },
        issuer: { type: 'string' }, audience: { type: 'string' }, 'es256-key': { type: 'string' }, help: { type: 'boolean' },
      },
      strict: true,
    }).values;
  } catch (e) {
    process.stderr.write(`mint-token: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (a.help) { process.stdout.write(`${USAGE}\n`); return 0; }
  const fail = (m: string) => { process.stderr.write(`mint-token: ${m}\n${USAGE}\n`); return 2; };
  if (!a.sub) return fail('--sub is required');
  const ttl = Number(a.ttl);
  if (!Number.isInteger(ttl) || ttl < 1) return fail('--ttl must be a positive number of seconds');
  const maxCalls = a['max-calls'] === undefined ? undefined : Number(a['max-calls']);
  if (maxCalls !== undefined && (!Number.isInteger(maxCalls) || maxCalls < 1)) return fail('--max-calls must be a positive integer');
  let key: { hs256Secret: string } | { es256PrivateKeyPem: string };
  if (a['es256-key']) {
    try { key = { es256PrivateKeyPem: readFileSync(a['es256-key'], 'utf8') }; } catch (e) { return fail(`cannot read ${a['es256-key']}: ${(e as NodeJS.ErrnoException).code}`); }
  } else {
    const secret = process.env.GATEWAY_AUTH__HS256SECRET;
    if (!secret || secret.length < 32) return fail('set GATEWAY_AUTH__HS256SECRET (at least 32 characters) or pass --es256-key');
    key = { hs256Secret: secret };
  }
  try {
    const token = await mintToken({ sub: a.sub, dest: a.dest, origins: a.origin, callerId: a['caller-id'], maxCalls }, key, { ttlSec: ttl, issuer: a.issuer, audience: a.audience });
    process.stdout.write(`${token}\n`);
    return 0;
  } catch (e) {
    return fail((e as Error).message);
  }
}

main().then((code) => { process.exitCode = code; });
