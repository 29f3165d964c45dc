import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { launchChromium } from '../peers/chromium';
import { startBaresip, type Baresip } from '../peers/baresip';
import { startGateway } from '../support/gateway';
import { readWav, toneRatio, writeToneWav } from '../support/audio';
import { openPhone, remotePeakHz, closePages } from '../support/page';
import { tempDir } from '../support/tempDir';

/**
 * SDES-SRTP toward a trunk that insists on it: baresip with mediaenc=srtp-mand only accepts an
 * RTP/SAVP offer with a=crypto, and only plays/records if the keys on both sides agree.
 */
const BASE = 18900;
const TRUNK_NUMBER = '+15551230000';
const work = tempDir('gw-srtp-');
let gw: Awaited<ReturnType<typeof startGateway>>;
let browser: Awaited<ReturnType<typeof launchChromium>>;
let trunk: Baresip;

before(async () => {
  const trunkWav = join(work, 'trunk-1000hz.wav');
  writeToneWav(trunkWav, { hz: 1000, sampleRate: 8000, seconds: 120 });
  const micWav = join(work, 'mic-700hz.wav');
  writeToneWav(micWav, { hz: 700, sampleRate: 48000, seconds: 30 });
  trunk = await startBaresip({ sipPort: BASE + 10, rtpPorts: [BASE + 300, BASE + 349], ctrlPort: BASE + 20, audioSourceWav: trunkWav, accountParams: ';answermode=auto;audio_codecs=PCMU;mediaenc=srtp-mand', user: TRUNK_NUMBER });
  gw = await startGateway(BASE, {
    trunk: { uri: `sip:127.0.0.1:${BASE + 10}`, codecs: ['PCMU'], srtp: 'mandatory', sourceCidrs: ['127.0.0.1/32'] },
    demo: { enabled: true, sipPort: BASE + 2 },
    dialplan: { allow: ['+1555*'] },
  }, { captureLogs: true });
  browser = await launchChromium({ fakeMicWav: micWav });
});

afterEach(() => closePages(browser));
after(async () => {
  await browser?.close();
  await gw?.stop();
  await trunk?.stop();
});

test('SRTP-mandatory trunk: RTP/SAVP offer with a=crypto, audio both ways through SRTP', async () => {
  const page = await openPhone(browser, gw.url);
  await page.getByTestId('dial-input').fill(TRUNK_NUMBER);
  await page.getByTestId('call-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 15000 });
  const heard = await remotePeakHz(page);
  assert.ok(Math.abs(heard.peakHz - 1000) < 30, `page hears the SRTP trunk: ${heard.peakHz} Hz`);
  await new Promise((r) => setTimeout(r, 2500));
  await page.getByTestId('hangup-button').click();
  await trunk.waitForEvent('CALL_CLOSED', 5000);
  await page.close();

  const rec = trunk.recordings().dec;
  assert.ok(rec.length > 0, 'baresip recorded the call');
  const { samples, sampleRate } = readWav(rec[rec.length - 1]);
  const steady = samples.subarray(sampleRate);
  assert.ok(steady.length > sampleRate, `recording has ${steady.length} samples`);
  assert.ok(toneRatio(steady, sampleRate, 700) > 0.5, `baresip decrypts the browser's 700 Hz: ratio ${toneRatio(steady, sampleRate, 700).toFixed(2)}`);

  // The keys travel in SDP, which is logged only at debug level: they must not be in any log line.
  const offer = gw.logs.find((l) => l.msg === 'SIP sent' && String(l.sip).startsWith('INVITE '));
  assert.ok(offer, 'the INVITE is traced at debug level');
  assert.match(String(offer!.sip), /m=audio \d+ RTP\/SAVP /);
  assert.match(String(offer!.sip), /a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:\[redacted\]/);
  const keys = gw.logs.map((l) => JSON.stringify(l)).join('\n').match(/inline:[A-Za-z0-9+/=]{20,}/g) ?? [];
  assert.deepEqual(keys, [], 'SRTP master keys were logged');
});
