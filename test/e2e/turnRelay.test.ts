/**
 * A browser that can reach the gateway only through TURN (a strict firewall; here Chromium told
 * to use relay candidates only): its connectivity checks and its DTLS come from coturn's relay
 * address, which the gateway must accept like any other browser address — the ICE socket guard
 * lets DTLS in only from addresses a signed check came from. coturn runs with the config we ship
 * (deploy/coturn/turnserver.conf) and the gateway hands its TURN server to the page, as
 * `webrtc.turnServers` does in production.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { openPhone, remotePeakHz, closePages } from '../support/page';
import { startDemoRig, type DemoRig } from '../support/demoRig';
import { heldResources } from '../support/gateway';
import { tempDir } from '../support/tempDir';
import { until } from '../support/tabs';
import { dtlsTransportOf } from '../../src/webrtc/weriftInternals';

const TURN_PORT = 26360;
const RELAY_PORTS = [26362, 26399] as const;
const TURN_CONF = join(__dirname, '..', '..', 'deploy', 'coturn', 'turnserver.conf');

let turn: ChildProcess;
let turnOutput = '';
let rig: DemoRig;

before(async () => {
  const work = tempDir('gw-turn-');
  // The shipped file; port, relay range, pid file and user db moved for the test, the user
  // given on the command line as docker-compose.yml does.
  turn = spawn('turnserver', ['-c', TURN_CONF, `--listening-port=${TURN_PORT}`, `--min-port=${RELAY_PORTS[0]}`, `--max-port=${RELAY_PORTS[1]}`,
    `--pidfile=${join(work, 'turnserver.pid')}`, `--userdb=${join(work, 'turndb')}`, '--user=lab:turn-pw-for-test'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (d: Buffer) => { turnOutput = (turnOutput + d.toString()).slice(-20000); };
  turn.stdout!.on('data', keep);
  turn.stderr!.on('data', keep);
  await until(() => {
    if (turn.exitCode !== null) throw new Error(`turnserver exited:\n${turnOutput}`);
    return /Total General servers/.test(turnOutput);
  }, 'turnserver started', 15000);
  rig = await startDemoRig(26400, { webrtc: { turnServers: [{ urls: `turn:127.0.0.1:${TURN_PORT}?transport=udp`, username: 'lab', credential: 'turn-pw-for-test' }] } });
});

after(async () => {
  await closePages(rig?.browser);
  await rig?.stop();
  if (turn && turn.exitCode === null) {
    const exited = new Promise((r) => turn.once('exit', r));
    turn.kill('SIGTERM');
    const t = setTimeout(() => turn.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  }
});

test('a browser that can only use TURN: the call connects through coturn\'s relay, audio both ways (echo), and nothing is held after', async () => {
  // Relay candidates only, whatever the page asks: the browser's network lets nothing else out.
  await rig.browser.context.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    (window as unknown as { RTCPeerConnection: unknown }).RTCPeerConnection = class extends Native {
      constructor(config?: RTCConfiguration) { super({ ...config, iceTransportPolicy: 'relay' }); }
    };
  });
  const p = await openPhone(rig.browser, rig.gw.url);
  await p.getByTestId('dial-input').fill('1000');
  await p.getByTestId('call-button').click();
  await p.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 15000 });
  const heard = await remotePeakHz(p);
  assert.ok(Math.abs(heard.peakHz - 700) < 30, `echo peak ${heard.peakHz} Hz (${heard.peakDb} dB)`);

  // The browser's side of the pair in use is its relay candidate...
  const pair = await p.evaluate(async () => {
    const pc = (window as unknown as { __gw: { currentCall: { pc: RTCPeerConnection } } }).__gw.currentCall.pc;
    const stats = [...(await pc.getStats()).values()] as Array<Record<string, unknown>>;
    const transport = stats.find((s) => s.type === 'transport');
    const selected = stats.find((s) => s.id === transport?.selectedCandidatePairId);
    const local = stats.find((s) => s.id === selected?.localCandidateId);
    return { localType: local?.candidateType, localPort: local?.port };
  });
  assert.equal(pair.localType, 'relay');
  // ...and the gateway's nominated pair points at coturn's relay port.
  const calls = [...(rig.gw.gateway['manager'] as unknown as { calls: Map<string, { browser: { transceiver?: unknown } | null }> }).calls.values()];
  assert.equal(calls.length, 1);
  const remote = dtlsTransportOf((calls[0].browser as unknown as { transceiver: Parameters<typeof dtlsTransportOf>[0] }).transceiver)!.iceTransport.connection.nominated!.remoteAddr;
  assert.ok(remote[1] >= RELAY_PORTS[0] && remote[1] <= RELAY_PORTS[1], `gateway sends to ${remote.join(':')}, coturn relays ${RELAY_PORTS.join('–')}`);
  assert.equal(remote[1], pair.localPort);

  await p.getByTestId('hangup-button').click();
  await p.getByTestId('call-status').filter({ hasText: 'ended' }).waitFor({ timeout: 5000 });
  await p.close();
  await until(() => { const h = heldResources(rig.gw.gateway); return h.legs + h.bridges + h.portsAllocated + h.icePorts === 0; }, 'nothing held after the call');
});
