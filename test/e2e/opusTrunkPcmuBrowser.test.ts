import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchChromium } from '../peers/chromium';
import { startBaresip, type Baresip } from '../peers/baresip';
import { startGateway } from '../support/gateway';
import { readWav, toneRatio, writeToneWav } from '../support/audio';
import { openPhone, remotePeakHz } from '../support/page';

/**
 * webrtc.preferPcmu against a phone that speaks only Opus, with real Chromium: the browser
 * sends PCMU, the trunk leg runs Opus, and the bridge transcodes between them both ways
 * (mode transcodeOpusTrunk). Before it, such a call had no audio.
 */
const BASE = 25100; // 25100-25499
const TRUNK_NUMBER = '+15551240000';
const work = mkdtempSync(join(tmpdir(), 'gw-opus-trunk-'));
let gw: Awaited<ReturnType<typeof startGateway>>;
let browser: Awaited<ReturnType<typeof launchChromium>>;
let trunk: Baresip;

before(async () => {
  const trunkWav = join(work, 'trunk-1000hz.wav');
  writeToneWav(trunkWav, { hz: 1000, sampleRate: 48000, seconds: 60, channels: 2 });
  const micWav = join(work, 'mic-700hz.wav');
  writeToneWav(micWav, { hz: 700, sampleRate: 48000, seconds: 30 });
  trunk = await startBaresip({ sipPort: BASE + 10, rtpPorts: [BASE + 300, BASE + 349], ctrlPort: BASE + 20, audioSourceWav: trunkWav, accountParams: ';answermode=auto;audio_codecs=opus/48000/2', user: TRUNK_NUMBER, codecModules: ['opus.so'] });
  gw = await startGateway(BASE, {
    trunk: { uri: `sip:127.0.0.1:${BASE + 10}`, codecs: ['opus', 'PCMU'], sourceCidrs: ['127.0.0.1/32'] },
    webrtc: { portRange: [BASE + 200, BASE + 299], preferPcmu: true },
    demo: { enabled: true, sipPort: BASE + 2 },
    dialplan: { allow: ['+1555*'] },
  }, { captureLogs: true });
  browser = await launchChromium({ fakeMicWav: micWav });
});

after(async () => {
  await browser?.close();
  await gw?.stop();
  await trunk?.stop();
});

test('preferPcmu with an Opus-only phone: Chromium sends PCMU, the trunk leg runs Opus, transcoded both ways; 1 kHz heard in the page, 700 Hz at the phone, a digit through', async () => {
  const page = await openPhone(browser, gw.url);
  await page.getByTestId('dial-input').fill(TRUNK_NUMBER);
  await page.getByTestId('call-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 15000 }).catch((e) => { throw new Error(`${e}\nbaresip: ${trunk.output()}`); });
  const up = gw.logs.find((l) => l.msg === 'media bridge up');
  assert.equal(up?.browserCodec, 'pcmu', 'Chromium was answered PCMU first and sends it');
  const modes = gw.logs.filter((l) => l.msg === 'media bridge up' || l.msg === 'media bridge follows the trunk\'s codec');
  assert.deepEqual({ mode: modes.at(-1)?.mode, sipCodec: modes.at(-1)?.sipCodec }, { mode: 'transcodeOpusTrunk', sipCodec: 'opus' });
  const heard = await remotePeakHz(page);
  assert.ok(Math.abs(heard.peakHz - 1000) < 30, `page hears the phone: ${heard.peakHz} Hz`);

  await page.getByTestId('keypad-7').click();
  const dtmf = await trunk.waitForEvent('CALL_DTMF_START', 5000);
  assert.equal(dtmf.param, '7');

  await new Promise((r) => setTimeout(r, 2500));
  await trunk.ctl('hangup');
  await page.getByTestId('call-status').filter({ hasText: 'ended (remote-hangup)' }).waitFor({ timeout: 5000 });
  await page.close();
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(gw.logs.filter((l) => Number(l.level) >= 50).length, 0, `no errors logged: ${JSON.stringify(gw.logs.filter((l) => Number(l.level) >= 50).slice(0, 2))}`);
  const rec = trunk.recordings().dec;
  assert.ok(rec.length > 0, 'baresip recorded the call');
  const { samples, sampleRate } = readWav(rec[rec.length - 1]);
  const steady = samples.subarray(Math.min(samples.length, sampleRate), samples.length);
  assert.ok(steady.length > sampleRate, `recording has ${steady.length} samples`);
  assert.ok(toneRatio(steady, sampleRate, 700) > 0.5, `the phone hears the browser's 700 Hz: ratio ${toneRatio(steady, sampleRate, 700).toFixed(2)}`);
});
