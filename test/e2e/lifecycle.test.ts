import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import { launchChromium } from '../peers/chromium';
import { writeToneWav } from '../support/audio';
import { openPhone, closePages } from '../support/page';
import { SipUserAgent } from '../../src/sip';
import { tempDir } from '../support/tempDir';

/**
 * The gateway as a real process (`node dist/src/main.js`), the way it is deployed: health and
 * readiness with an OPTIONS-watched trunk, then SIGTERM with a call up — no new calls, the
 * live call drained then hung up, CDR written, exit 0, every port released.
 */
const BASE = 19200;
const work = tempDir('gw-life-');
const cdrPath = join(work, 'cdr.jsonl');
const url = `http://127.0.0.1:${BASE}`;
let browser: Awaited<ReturnType<typeof launchChromium>>;
let trunk: SipUserAgent | null = null;
const procs: ChildProcess[] = [];

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PORT: String(BASE), SIP_PORT: String(BASE + 1),
    GATEWAY_DEMO__ENABLED: 'true', GATEWAY_DEMO__SIPPORT: String(BASE + 2), GATEWAY_AUTH__MODE: 'demo',
    GATEWAY_MEDIA__PORTRANGE: `[${BASE + 100}, ${BASE + 149}]`, GATEWAY_WEBRTC__PORTRANGE: `[${BASE + 150}, ${BASE + 199}]`,
    GATEWAY_TRUNK__URI: `sip:127.0.0.1:${BASE + 10}`, GATEWAY_TRUNK__OPTIONSKEEPALIVESEC: '1', GATEWAY_TRUNK__SOURCECIDRS: '["127.0.0.1/32"]',
    GATEWAY_CDR__PATH: cdrPath, GATEWAY_DRAIN__TIMEOUTSEC: '3', GATEWAY_LOG__LEVEL: 'info',
    ...extra,
  };
}

function startProcess(): { proc: ChildProcess; output: () => string; exited: Promise<{ code: number | null; at: number }> } {
  const proc = spawn(process.execPath, [join(__dirname, '../../dist/src/main.js')], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  let out = '';
  proc.stdout!.on('data', (d) => { out += d.toString(); });
  proc.stderr!.on('data', (d) => { out += d.toString(); });
  const exited = new Promise<{ code: number | null; at: number }>((r) => proc.once('exit', (code) => r({ code, at: Date.now() })));
  return { proc, output: () => out, exited };
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The gateway process started, ready, and a page on it in a call to the echo test. */
async function startWithEchoCall() {
  const gw = startProcess();
  await waitFor(ready, 15000, 'gateway ready');
  const page = await openPhone(browser, url);
  await page.getByTestId('dial-input').fill('1000');
  await page.getByTestId('call-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 15000 });
  return { gw, page };
}

const ready = async () => (await fetch(`${url}/readyz`)).status === 200;

async function startTrunk(): Promise<void> {
  trunk = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: BASE + 10 }], logger: pino({ level: 'silent' }) });
  await trunk.start();
}


before(async () => {
  assert.ok(existsSync(join(__dirname, '../../dist/src/main.js')), 'run the build first (npm test does)');
  const micWav = join(work, 'mic.wav');
  writeToneWav(micWav, { hz: 700, sampleRate: 48000, seconds: 30 });
  browser = await launchChromium({ fakeMicWav: micWav });
  await startTrunk();
});

afterEach(() => closePages(browser));
after(async () => {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  await trunk?.stop();
  await browser?.close();
});

test('healthz, and readyz following the trunk\'s OPTIONS reachability', async () => {
  const gw = startProcess();
  await waitFor(async () => (await fetch(`${url}/healthz`)).status === 200, 15000, '/healthz');
  await waitFor(ready, 5000, '/readyz 200 with the trunk answering OPTIONS');
  const body = await (await fetch(`${url}/readyz`)).json();
  assert.deepEqual(body.checks, { sipBound: true, notDraining: true, trunkReachable: true });

  await trunk!.stop();
  await waitFor(async () => (await fetch(`${url}/readyz`)).status === 503, 8000, '/readyz 503 once the trunk is silent');
  assert.equal((await (await fetch(`${url}/readyz`)).json()).checks.trunkReachable, false);
  assert.match(await (await fetch(`${url}/metrics`)).text(), /^gateway_trunk_reachable 0$/m);
  await startTrunk();
  await waitFor(ready, 8000, '/readyz back to 200');

  gw.proc.kill('SIGTERM');
  assert.equal((await gw.exited).code, 0);
});

// That stop() closes every socket is shown on an in-process gateway (stopReleases.test.ts): once
// a process has exited the kernel has closed its sockets anyway, so probing its ports here would
// prove nothing.
test('SIGTERM with a call up: no new calls, the call drains then gets BYE, CDR written, exit 0', async () => {
  const { gw, page } = await startWithEchoCall();

  const t0 = Date.now();
  gw.proc.kill('SIGTERM');
  await waitFor(async () => (await fetch(`${url}/readyz`)).status === 503, 2000, '/readyz 503 while draining');
  assert.equal((await (await fetch(`${url}/readyz`)).json()).checks.notDraining, false);

  // An INVITE from the trunk is refused with 503 while draining.
  const caller = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: BASE + 12 }], logger: pino({ level: 'silent' }) });
  await caller.start();
  const inv = caller.invite({ requestUri: `sip:guest@127.0.0.1:${BASE + 1}`, from: { uri: 'sip:+15550001111@127.0.0.1' }, sdp: 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n' });
  const rejected = await new Promise<number>((r) => inv.once('rejected', (res) => r(res.status)));
  await caller.stop();
  assert.equal(rejected, 503);

  // The live call keeps going until the 3 s drain timeout, then ends as shutdown.
  assert.match(await page.getByTestId('call-status').textContent() ?? '', /^answered/);
  await page.getByTestId('call-status').filter({ hasText: 'ended (shutdown)' }).waitFor({ timeout: 8000 }).catch(async (e) => {
    throw new Error(`page shows "${await page.getByTestId('call-status').textContent()}"; gateway said:\n${gw.output().slice(-3000)}\n${e}`);
  });
  const { code, at } = await gw.exited;
  assert.equal(code, 0, gw.output().slice(-2000));
  assert.ok(at - t0 >= 2500, `drained for ${at - t0} ms before exiting`);
  await page.close();

  const cdrs = readFileSync(cdrPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const last = cdrs[cdrs.length - 1];
  assert.equal(last.to, '1000');
  assert.equal(last.cause, 'shutdown');
  assert.ok(last.answerTime && last.endTime);
  // Logs are JSON with the call id on the call's lines.
  const lines = gw.output().trim().split('\n').map((l) => JSON.parse(l));
  const answered = lines.find((l) => l.msg === 'call answered');
  assert.ok(answered?.callId, 'call lines carry callId');
});

test('a second signal exits at once, without waiting for the drain', async () => {
  const { gw, page } = await startWithEchoCall();
  const t0 = Date.now();
  gw.proc.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 200));
  gw.proc.kill('SIGINT');
  const { at } = await gw.exited;
  assert.ok(at - t0 < 1500, `exited ${at - t0} ms after the first signal`);
  await page.close();
});

test('a port already in use stops the start with one clear line and exit 1 (what it had bound is released: stopReleases.test.ts)', async () => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(BASE, '127.0.0.1', () => r()));
  try {
    const gw = startProcess();
    const { code } = await gw.exited;
    assert.equal(code, 1);
    const lines = gw.output().trim().split('\n');
    const fatal = lines.map((l) => JSON.parse(l)).find((l) => l.level === 60);
    assert.match(fatal?.err ?? '', new RegExp(`cannot listen for HTTP on 127\\.0\\.0\\.1:${BASE}: EADDRINUSE`));
    assert.doesNotMatch(gw.output(), /\n\s+at /, 'no stack trace');
  } finally {
    blocker.close();
  }
});
