import { after, afterEach, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import type { Page } from 'playwright-core';
import { launchChromium } from '../peers/chromium';
import { startBaresip, type Baresip } from '../peers/baresip';
import { heldResources, startGateway } from '../support/gateway';
import { readWav, toneRatio, writeToneWav } from '../support/audio';
import { openPhone, remotePeakHz, closePages } from '../support/page';
import { tempDir } from '../support/tempDir';

/**
 * SIP over TLS against a third-party TLS peer: Chromium → gateway → baresip (Debian's, libre
 * built with OpenSSL) as the trunk, reached at a sips: URI, its certificate issued by a CA made
 * here and trusted by the gateway. baresip auto-answers, plays 1 kHz and records what it hears.
 *
 * The gateway trusts the throwaway CA through sip.tls.caFile (besides Node's public roots), as
 * an operator with a private CA configures it.
 *
 * baresip 1.0.0 listens for TLS on its sip_listen port + 1 (UDP and TCP on the port itself); its
 * own SIP trace (-s) names the transport each message came or went over. Its requests (a BYE)
 * go to our Contact on a TLS connection of its own to our TLS port. It does not verify the
 * certificate of a server it connects to (tried: a gateway certificate from a CA baresip was not
 * given still gets its BYE), so only the gateway's verification is tested here.
 *
 * Ports 27970-27999 only (TCP and UDP):
 *   gateway: HTTP 27970, SIP UDP 27971, SIP TLS 27972, demo endpoint 27998 (UDP), RTP 27992-27995,
 *     WebRTC 27996-27997 (one gateway at a time: each test starts and stops its own);
 *   baresip "trusted" (certificate from the trusted CA): SIP 27974, TLS 27975, control 27973, RTP 27982-27985;
 *   baresip "rogue" (certificate from another CA): SIP 27976, TLS 27977, control 27978, RTP 27990-27991;
 *   baresip "srtp" (trusted CA, mediaenc=srtp-mand): SIP 27979, TLS 27980, control 27981, RTP 27986-27989;
 *   a UDP listener on each baresip's TLS port number (27975, 27977, 27980), where baresip binds
 *   only TCP: SIP sent there over UDP instead of TLS would land in it.
 */
const TRUNK_NUMBER = '+15551230000';
const GW = { http: 27970, sipUdp: 27971, sipTls: 27972, demo: 27998, rtp: [27992, 27995] as [number, number], webrtc: [27996, 27997] as [number, number] };
const PEERS = {
  trusted: { sip: 27974, ctrl: 27973, rtp: [27982, 27985] as [number, number] },
  rogue: { sip: 27976, ctrl: 27978, rtp: [27990, 27991] as [number, number] },
  srtp: { sip: 27979, ctrl: 27981, rtp: [27986, 27989] as [number, number] },
};

const work = tempDir('gw-tls-baresip-');
let browser: Awaited<ReturnType<typeof launchChromium>>;
let trustedCa: Ca;
let rogueCa: Ca;
let gatewayCert: { certFile: string; keyFile: string };
let trunkWav: string;
const peers: Baresip[] = [];
type Gw = Awaited<ReturnType<typeof startGateway>>;
const gateways: Gw[] = [];
/** Datagrams that reached the UDP side of a baresip TLS port. */
const udpSniffed: Array<{ port: number; text: string }> = [];
const sniffers: dgram.Socket[] = [];

interface Ca { dir: string; cert: string; key: string }

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A throwaway CA (EC P-256, 2 days). */
function makeCa(name: string): Ca {
  const dir = tempDir(`ca-${name}-`);
  const ca = { dir, cert: join(dir, 'ca.pem'), key: join(dir, 'ca.key') };
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-sha256',
    '-keyout', ca.key, '-out', ca.cert, '-subj', `/CN=${name} test CA`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return ca;
}

/**
 * A server certificate for 127.0.0.1 (subjectAltName IP:127.0.0.1) issued by `ca`: its key, the
 * certificate, and both in one file (what baresip's sip_certificate wants).
 */
function issueServerCert(ca: Ca, name: string): { certFile: string; keyFile: string; combined: string } {
  const base = join(ca.dir, name);
  const ext = `${base}.ext`;
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n');
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', '/CN=127.0.0.1']);
  openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-sha256', '-out', `${base}.pem`, '-extfile', ext]);
  writeFileSync(`${base}-combined.pem`, readFileSync(`${base}.pem`, 'utf8') + readFileSync(`${base}.key`, 'utf8'));
  return { certFile: `${base}.pem`, keyFile: `${base}.key`, combined: `${base}-combined.pem` };
}

async function startPeer(p: { sip: number; ctrl: number; rtp: [number, number] }, certificate: string, accountParams: string): Promise<Baresip> {
  const b = await startBaresip({
    sipPort: p.sip, rtpPorts: p.rtp, ctrlPort: p.ctrl, audioSourceWav: trunkWav, user: TRUNK_NUMBER, accountParams,
    tls: { certificate, cafile: trustedCa.cert }, sipTrace: true,
  });
  peers.push(b);
  return b;
}

/** A gateway whose trunk is `trunkUri`, trusting the throwaway CA; stopped after the test. */
async function startTlsGateway(t: TestContext, trunk: { uri: string; srtp?: 'off' | 'optional' | 'mandatory' }): Promise<Gw> {
  const gw = await startGateway(GW.http, {
    sip: { host: '127.0.0.1', port: GW.sipUdp, tlsPort: GW.sipTls, transports: ['udp', 'tls'], tls: { ...gatewayCert, caFile: trustedCa.cert } },
    trunk: { uri: trunk.uri, srtp: trunk.srtp ?? 'off', codecs: ['PCMU'], sourceCidrs: ['127.0.0.1/32'] },
    // The demo endpoint only for the demo page's token-less auth (as trunkCall.test.ts); never called.
    demo: { enabled: true, sipPort: GW.demo },
    dialplan: { allow: ['+1555*'] },
    media: { portRange: GW.rtp },
    webrtc: { portRange: GW.webrtc },
  }, { captureLogs: true });
  gateways.push(gw);
  t.after(async () => { gateways.splice(gateways.indexOf(gw), 1); await gw.stop(); });
  return gw;
}

before(async () => {
  trustedCa = makeCa('trusted');
  rogueCa = makeCa('rogue');
  const g = issueServerCert(trustedCa, 'gateway');
  gatewayCert = { certFile: g.certFile, keyFile: g.keyFile };
  trunkWav = join(work, 'trunk-1000hz.wav');
  writeToneWav(trunkWav, { hz: 1000, sampleRate: 8000, seconds: 120 });
  const micWav = join(work, 'mic-700hz.wav');
  writeToneWav(micWav, { hz: 700, sampleRate: 48000, seconds: 30 });
  for (const port of [PEERS.trusted.sip + 1, PEERS.rogue.sip + 1, PEERS.srtp.sip + 1]) {
    const s = dgram.createSocket('udp4');
    s.on('message', (m) => udpSniffed.push({ port, text: m.toString('latin1') }));
    await new Promise<void>((r) => s.bind(port, '127.0.0.1', () => r()));
    sniffers.push(s);
  }
  browser = await launchChromium({ fakeMicWav: micWav });
});

afterEach(() => closePages(browser));
after(async () => {
  await browser?.close();
  for (const gw of gateways) await gw.stop();
  for (const b of peers) await b.stop();
  for (const s of sniffers) s.close();
});

async function dial(page: Page, number: string): Promise<void> {
  await page.getByTestId('dial-input').fill(number);
  await page.getByTestId('call-button').click();
}

/** What the demo page's status settles on after dialing: "answered" or "ended (cause status)". */
async function callOutcome(page: Page, timeoutMs: number): Promise<string> {
  await page.getByTestId('call-status').filter({ hasText: /^(answered|ended)/ }).waitFor({ timeout: timeoutMs });
  const status = (await page.getByTestId('call-status').textContent()) ?? '';
  return status.startsWith('answered') ? 'answered' : status; // the page shows "answered 00:00"
}

async function until<T>(what: string, ms: number, get: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() > end) assert.fail(`${what}: still ${JSON.stringify(v)} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const NOTHING_HELD = { legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0, activeCalls: 0 };
/** What the gateway still holds, and its calls. */
const stillHeld = async (gw: Gw) => ({ ...heldResources(gw.gateway), activeCalls: gw.gateway.activeCalls });

/** The gateway's own SIP trace (debug level): every message it sent or received (its only peer is the baresip of the test). */
async function gatewaySipTrace(gw: Gw): Promise<Array<{ direction: string; protocol: string; remote: string; sip: string }>> {
  return gw.logs
    .filter((l) => l.msg === 'SIP sent' || l.msg === 'SIP received')
    .map((l) => ({ direction: String(l.direction), protocol: String(l.protocol), remote: String(l.remote), sip: String(l.sip) }));
}

/** What the gateway's trace says went over anything but TLS (one line each). */
function notTls(trace: Awaited<ReturnType<typeof gatewaySipTrace>>): string[] {
  return trace.filter((l) => l.protocol !== 'tls').map((l) => `${l.direction} ${l.protocol} ${l.remote}: ${l.sip.split('\r\n')[0]}`);
}

/** baresip's recording of what it heard: the 700 Hz tone of Chromium's fake microphone. */
function assertBaresipHeard700(trunk: Baresip): void {
  const rec = trunk.recordings().dec;
  assert.ok(rec.length > 0, 'baresip recorded the call');
  const { samples, sampleRate } = readWav(rec[rec.length - 1]);
  const steady = samples.subarray(Math.min(samples.length, sampleRate));
  assert.ok(steady.length > sampleRate, `recording has ${steady.length} samples`);
  const ratio = toneRatio(steady, sampleRate, 700);
  assert.ok(ratio > 0.5, `baresip hears the browser's 700 Hz: ratio ${ratio.toFixed(2)}`);
}

/**
 * Every SIP message baresip traced went over TLS: on connections to its TLS port, or on one it
 * opened to our TLS port (its own requests go to our Contact); and the requests `methods` came
 * in on its TLS port. Returns the trace.
 */
function assertAllTls(trunk: Baresip, tlsPort: number, methods: string[]): ReturnType<Baresip['sipTrace']> {
  const trace = trunk.sipTrace();
  assert.ok(trace.length > 0, `baresip traced SIP (output: ${trunk.output()})`);
  const tlsEnds = new Set([`127.0.0.1:${tlsPort}`, `127.0.0.1:${GW.sipTls}`]);
  const notTls = trace.filter((e) => e.transport !== 'TLS' || !(tlsEnds.has(e.to) || tlsEnds.has(e.from)));
  assert.deepEqual(notTls.map((e) => `${e.transport} ${e.from} -> ${e.to}: ${e.startLine}`), [], 'every SIP message baresip saw went over TLS');
  const received = trace.filter((e) => e.to === `127.0.0.1:${tlsPort}`).map((e) => e.startLine.split(' ')[0]);
  for (const m of methods) assert.ok(received.includes(m), `baresip received ${m} over TLS (got ${received.join(', ')})`);
  return trace;
}

test('a call to baresip over TLS (sips:, certificate from the trusted throwaway CA): answered, audio both ways, every SIP message over TLS, hang-up, nothing held', async (t) => {
  const trunk = await startPeer(PEERS.trusted, issueServerCert(trustedCa, 'baresip-trusted').combined, ';answermode=auto;audio_codecs=PCMU');
  const tlsPort = PEERS.trusted.sip + 1;
  const gw = await startTlsGateway(t, { uri: `sips:127.0.0.1:${tlsPort}` });

  const page = await openPhone(browser, gw.url);
  const t0 = Date.now();
  await dial(page, TRUNK_NUMBER);
  assert.equal(await callOutcome(page, 15000), 'answered', `the call is answered (baresip: ${trunk.output()})`);
  const answeredMs = Date.now() - t0;
  await trunk.waitForEvent('CALL_ESTABLISHED', 5000);
  const heard = await remotePeakHz(page);
  assert.ok(Math.abs(heard.peakHz - 1000) < 30, `the page hears baresip's 1 kHz: ${heard.peakHz} Hz (${heard.peakDb} dB)`);

  // Let baresip record a couple of seconds of the browser's tone, then hang up from the page.
  await new Promise((r) => setTimeout(r, 2500));
  await page.getByTestId('hangup-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'ended (local-hangup)' }).waitFor({ timeout: 5000 });
  await trunk.waitForEvent('CALL_CLOSED', 5000);
  await page.close();
  await new Promise((r) => setTimeout(r, 500));
  assertBaresipHeard700(trunk);

  // The SIP went over TLS, as baresip saw it: INVITE, ACK and BYE came in on its TLS port,
  // with our TLS Via and Contact; nothing reached it (or the UDP side of that port) otherwise.
  const trace = assertAllTls(trunk, tlsPort, ['INVITE', 'ACK', 'BYE']);
  const invite = trace.find((e) => e.startLine.startsWith('INVITE '))!;
  assert.match(invite.startLine, new RegExp(`^INVITE sips:\\${TRUNK_NUMBER}@127\\.0\\.0\\.1:${tlsPort} SIP/2\\.0$`));
  assert.match(invite.text, new RegExp(`^Via: SIP/2\\.0/TLS 127\\.0\\.0\\.1:${GW.sipTls};`, 'm'), 'our Via names TLS and our TLS port');
  assert.match(invite.text, /^Contact: <sips?:[^>]*127\.0\.0\.1:27972[^>]*>/m, 'our Contact is our TLS address');
  const ok = trace.find((e) => e.startLine.startsWith('SIP/2.0 200') && /CSeq: \d+ INVITE/.test(e.text));
  assert.ok(ok, 'baresip answered 200 over TLS');
  assert.deepEqual(udpSniffed, [], 'no SIP over UDP to the TLS port');
  // And as the gateway saw it: every message with baresip was on the TLS transport.
  const gwTrace = await gatewaySipTrace(gw);
  assert.ok(gwTrace.some((l) => l.direction === 'out' && l.remote === `127.0.0.1:${tlsPort}` && l.sip.startsWith('INVITE ')), 'the gateway traced its INVITE to baresip');
  assert.deepEqual(notTls(gwTrace), [], 'the gateway used TLS for all of it');

  const held = await until('gateway resources after the call', 3000, () => stillHeld(gw), (h) => JSON.stringify(h) === JSON.stringify(NOTHING_HELD));
  assert.deepEqual(held, NOTHING_HELD);
  t.diagnostic(`answered ${answeredMs} ms after the click; page heard ${heard.peakHz} Hz at ${heard.peakDb} dB`);
});

test('baresip presenting a certificate from a CA the gateway does not trust: no INVITE reaches it, the call fails at once (503), nothing held', async (t) => {
  const rogueCert = issueServerCert(rogueCa, 'baresip-rogue');
  const trunk = await startPeer(PEERS.rogue, rogueCert.combined, ';answermode=auto;audio_codecs=PCMU');
  const tlsPort = PEERS.rogue.sip + 1;
  const gw = await startTlsGateway(t, { uri: `sips:127.0.0.1:${tlsPort}` });

  const page = await openPhone(browser, gw.url);
  const t0 = Date.now();
  await dial(page, TRUNK_NUMBER);
  const status = await callOutcome(page, 10000);
  const endedMs = Date.now() - t0;
  assert.equal(status, 'ended (unavailable 503)', 'the page is told: unavailable, SIP 503');
  assert.ok(endedMs < 3000, `the call failed at once, not after Timer B (${endedMs} ms)`);

  // The CDR says why: a transport failure, the certificate not verified.
  const cdr = readFileSync(gw.cdrPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(cdr.length, 1, 'one call record');
  assert.equal(cdr[0].cause, 'unavailable');
  assert.equal(cdr[0].sipStatus, 503);
  assert.match(String(cdr[0].sipReason), /transport/i);
  assert.match(String(cdr[0].sipReason), /certificate|verify/i, `the reason names the certificate: ${String(cdr[0].sipReason)}`);

  // baresip never got a SIP message: the handshake was refused before the INVITE was written.
  assert.equal(trunk.events.filter((e) => e.type === 'CALL_INCOMING').length, 0, 'no call reached baresip');
  assert.deepEqual(trunk.sipTrace().map((e) => e.startLine), [], 'baresip received no SIP message');
  assert.deepEqual(udpSniffed.filter((d) => d.port === tlsPort), [], 'nor anything over UDP');
  const gwTrace = await gatewaySipTrace(gw);
  assert.deepEqual(notTls(gwTrace), [], 'the gateway tried TLS only');
  assert.deepEqual(gwTrace.filter((l) => l.direction === 'in'), [], 'and got nothing back');

  const held = await until('gateway resources after the refused call', 3000, () => stillHeld(gw), (h) => JSON.stringify(h) === JSON.stringify(NOTHING_HELD));
  assert.deepEqual(held, NOTHING_HELD);

  // Control: the same baresip answers a client that does trust its CA (so what the gateway
  // refused was the certificate's issuer, not a broken peer).
  const sock = tls.connect({ host: '127.0.0.1', port: tlsPort, ca: readFileSync(rogueCa.cert, 'utf8') });
  try {
    await new Promise<void>((resolve, reject) => { sock.once('secureConnect', resolve); sock.once('error', reject); });
    assert.ok(sock.authorized, 'verified against the rogue CA');
    let got = '';
    sock.on('data', (d: Buffer) => { got += d.toString('latin1'); });
    sock.write([`OPTIONS sip:${TRUNK_NUMBER}@127.0.0.1:${tlsPort} SIP/2.0`, 'Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-control;rport', 'Max-Forwards: 70',
      'From: <sip:control@127.0.0.1>;tag=c1', `To: <sip:${TRUNK_NUMBER}@127.0.0.1>`, 'Call-ID: tls-control@test', 'CSeq: 1 OPTIONS', 'Content-Length: 0', '', ''].join('\r\n'));
    await until('baresip answering the control OPTIONS', 3000, async () => got, (g) => /^SIP\/2\.0 200 /.test(g));
  } finally {
    sock.destroy();
  }
  t.diagnostic(`ended ${endedMs} ms after the click: ${String(cdr[0].sipReason)}`);
});

test('SDES-SRTP over TLS (baresip mediaenc=srtp-mand, trunk.srtp mandatory): the keys go only over TLS, audio both ways through SRTP', async (t) => {
  const trunk = await startPeer(PEERS.srtp, issueServerCert(trustedCa, 'baresip-srtp').combined, ';answermode=auto;audio_codecs=PCMU;mediaenc=srtp-mand');
  const tlsPort = PEERS.srtp.sip + 1;
  const gw = await startTlsGateway(t, { uri: `sips:127.0.0.1:${tlsPort}`, srtp: 'mandatory' });

  const page = await openPhone(browser, gw.url);
  await dial(page, TRUNK_NUMBER);
  assert.equal(await callOutcome(page, 15000), 'answered', `the call is answered (baresip: ${trunk.output()})`);
  const heard = await remotePeakHz(page);
  assert.ok(Math.abs(heard.peakHz - 1000) < 30, `the page hears baresip's 1 kHz through SRTP: ${heard.peakHz} Hz`);
  // This time baresip hangs up: its BYE comes to us over TLS (to our TLS Contact).
  await new Promise((r) => setTimeout(r, 2500));
  await trunk.ctl('hangup');
  await page.getByTestId('call-status').filter({ hasText: 'ended (remote-hangup)' }).waitFor({ timeout: 5000 });
  await trunk.waitForEvent('CALL_CLOSED', 5000);
  await page.close();
  await new Promise((r) => setTimeout(r, 500));
  assertBaresipHeard700(trunk);

  // Both offers' keys (ours in the INVITE, baresip's in its 200) crossed TLS and only TLS.
  const trace = assertAllTls(trunk, tlsPort, ['INVITE', 'ACK']);
  const bye = trace.find((e) => e.startLine.startsWith('BYE '));
  assert.ok(bye, 'baresip sent its BYE');
  assert.equal(bye!.to, `127.0.0.1:${GW.sipTls}`, 'to our TLS port');
  assert.ok(trace.some((e) => e.startLine.startsWith('SIP/2.0 200') && /^CSeq: \d+ BYE$/m.test(e.text)), 'our 200 to the BYE came back');
  const gwTrace = await gatewaySipTrace(gw);
  assert.ok(gwTrace.some((l) => l.direction === 'in' && l.sip.startsWith('BYE ')), 'the gateway traced the BYE');
  assert.deepEqual(notTls(gwTrace), [], 'the gateway used TLS for all of it');
  const withKeys = trace.filter((e) => /^a=crypto:\d+ \S+ inline:[A-Za-z0-9+/=]{20,}/m.test(e.text));
  assert.ok(withKeys.some((e) => e.startLine.startsWith('INVITE ') && /^m=audio \d+ RTP\/SAVP /m.test(e.text)), 'our INVITE offered RTP/SAVP with a key');
  assert.ok(withKeys.some((e) => e.startLine.startsWith('SIP/2.0 200')), 'baresip answered with its key');
  assert.ok(withKeys.every((e) => e.transport === 'TLS'), 'keys only ever over TLS');
  assert.deepEqual(udpSniffed, [], 'no SIP over UDP to the TLS port');
  // The keys are not in the gateway's logs either (its trace redacts them).
  const keys = trace.flatMap((e) => e.text.match(/inline:[A-Za-z0-9+/=]{20,}/g) ?? []).map((k) => k.slice('inline:'.length, 'inline:'.length + 30));
  assert.ok(keys.length >= 2);
  const logText = gw.logs.map((l) => JSON.stringify(l)).join('\n');
  assert.deepEqual(keys.filter((k) => logText.includes(k)), [], 'SRTP master keys in the gateway log');

  const held = await until('gateway resources after the call', 3000, () => stillHeld(gw), (h) => JSON.stringify(h) === JSON.stringify(NOTHING_HELD));
  assert.deepEqual(held, NOTHING_HELD);
});
