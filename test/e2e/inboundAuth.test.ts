import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { SipUserAgent, type SipResponse } from '../../src/sip';
import { startGateway } from '../support/gateway';

/**
 * Inbound SIP from a source that is not the trunk: refused with 403 by default; with
 * inbound.digest configured, challenged (401) and let in only with the right credentials.
 * The gateway runs with tokens and no demo endpoint, so loopback is not trusted wholesale.
 */
const BASE = 19300;
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';
const SECRET = 'inbound-auth-test-secret-0123456789abcdef';
let open: Awaited<ReturnType<typeof startGateway>>;
let guarded: Awaited<ReturnType<typeof startGateway>>;
let caller: SipUserAgent;

before(async () => {
  const common = { auth: { mode: 'token' as const, hs256Secret: SECRET }, demo: { enabled: false }, trunk: { uri: 'sip:127.0.0.9:5060', sourceCidrs: [] } };
  open = await startGateway(BASE, common);
  guarded = await startGateway(BASE + 400, { ...common, inbound: { digest: { realm: 'gw.test', users: { pbx: 'pbx-password-1' } } } }, { captureLogs: true });
  caller = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: BASE + 50 }], logger: pino({ level: 'silent' }) });
  await caller.start();
});

after(async () => {
  await caller?.stop();
  await open?.stop();
  await guarded?.stop();
});

function call(port: number, credentials?: { username: string; password: string }): Promise<SipResponse> {
  const inv = caller.invite({ requestUri: `sip:support@127.0.0.1:${port}`, from: { uri: 'sip:+15550001111@127.0.0.1' }, sdp: SDP, credentials });
  return new Promise((resolve, reject) => {
    inv.once('rejected', resolve);
    inv.once('accepted', () => reject(new Error('unexpectedly accepted')));
    inv.once('failed', reject);
  });
}

test('an INVITE from a source that is not the trunk gets 403 when no digest users are configured', async () => {
  assert.equal((await call(open.sipPort)).status, 403);
  assert.equal((await call(open.sipPort, { username: 'pbx', password: 'pbx-password-1' })).status, 403);
});

test('with inbound.digest: no credentials → 401 with a challenge; wrong password → 401; right password → routed (480: nobody online)', async () => {
  const first = await call(guarded.sipPort);
  assert.equal(first.status, 401);
  assert.ok(first.headers('www-authenticate').some((h) => /realm="gw.test"/.test(h) && /algorithm=SHA-256/.test(h)));
  assert.equal((await call(guarded.sipPort, { username: 'pbx', password: 'wrong-password' })).status, 401);
  const ok = await call(guarded.sipPort, { username: 'pbx', password: 'pbx-password-1' });
  assert.equal(ok.status, 480, 'authenticated, then routed: user "support" has no tab open');
  assert.ok(guarded.logs.some((l) => l.msg === 'INVITE digest authentication failed' && l.reason === 'bad-response'));
  assert.ok(guarded.logs.some((l) => l.msg === 'INVITE authenticated by digest' && l.user === 'pbx'));
  assert.ok(!JSON.stringify(guarded.logs).includes('pbx-password-1'), 'the password never reaches a log');
});
