/**
 * Opus in-band FEC with a real browser: Chromium calls the echo test through the gateway while
 * the path from the browser loses one packet in eight. The gateway's RTCP receiver reports tell
 * Chromium about the loss; Chromium's Opus encoder then adds FEC to its (narrowband, voiced)
 * packets, and the bridge rebuilds lost frames from it. Loopback loses nothing, so the loss is
 * made here: packets are dropped as they reach the browser leg, before the bridge sees them.
 *
 * Ports: 22000-22299 (startGateway's block).
 */
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openPhone, closePages } from '../support/page';
import { until } from '../support/tabs';
import { launchChromium } from '../peers/chromium';
import { startGateway } from '../support/gateway';
import { writeSpeechWav } from '../support/audio';
import { BrowserLeg } from '../../src/webrtc/browserLeg';
import { hasLbrr } from '../../src/media/codecs/opusFec';
import { tempDir } from '../support/tempDir';

const seen = { packets: 0, dropped: 0, withFec: 0, withFecBeforeLoss: 0 };
// The lossy network: every 8th audio packet after the first 2 s never reaches the bridge.
const onRtp = BrowserLeg.prototype.onRtp;
BrowserLeg.prototype.onRtp = function (listener) {
  return onRtp.call(this, (pkt) => {
    seen.packets++;
    if (pkt.payloadType === 111 && hasLbrr(pkt.payload)) {
      seen.withFec++;
      if (seen.packets <= 100) seen.withFecBeforeLoss++;
    }
    if (seen.packets > 100 && seen.packets % 8 === 0) { seen.dropped++; return; }
    listener(pkt);
  });
};

let gw: Awaited<ReturnType<typeof startGateway>>;
let browser: Awaited<ReturnType<typeof launchChromium>>;

before(async () => {
  gw = await startGateway(22000);
  const wav = join(tempDir('gw-fec-'), 'speech.wav');
  writeSpeechWav(wav, { sampleRate: 48000, seconds: 30 });
  browser = await launchChromium({ fakeMicWav: wav });
});

afterEach(() => closePages(browser));
after(async () => {
  BrowserLeg.prototype.onRtp = onRtp;
  await browser?.close();
  await gw?.stop();
});

test('Chromium adds Opus in-band FEC once our reports show loss, and the bridge recovers lost frames with it', async () => {
  const page = await openPhone(browser, gw.url);
  await page.getByTestId('dial-input').fill('1000');
  await page.getByTestId('call-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 });
  // Loss starts after ~2 s; Chromium reacts to the first reports of it within a second or two.
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline && (seen.packets < 500 || seen.withFec < 20)) await new Promise((r) => setTimeout(r, 250));
  await page.getByTestId('hangup-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'ended' }).waitFor({ timeout: 5000 });
  await page.close();

  assert.ok(seen.withFec >= 20, `packets carrying FEC: ${seen.withFec} of ${seen.packets} (${seen.dropped} dropped)`);
  // FEC costs bits, and Chromium spends them only on the loss our reports tell it about: none in
  // the first 2 s, before there was any.
  assert.equal(seen.withFecBeforeLoss, 0, `packets carrying FEC before any loss: ${seen.withFecBeforeLoss} of 100`);
  // The CDR line is written once the media plane gave the bridge's final figures back.
  await until(() => readFileSync(gw.cdrPath, 'utf8').trim() !== '', 'the call\'s CDR line');
  const cdr = readFileSync(gw.cdrPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const q = cdr[cdr.length - 1].quality.browser as { packetsLost: number; concealed: number; fecRecovered: number };
  assert.ok(q.packetsLost >= seen.dropped - 1, `lost ${q.packetsLost}, dropped ${seen.dropped}`);
  assert.ok(q.fecRecovered > 0, `frames recovered from FEC: ${q.fecRecovered} (concealed ${q.concealed})`);
  // Every lost frame was filled one way or the other (DTMF gaps aside: none here).
  assert.equal(q.fecRecovered + q.concealed, q.packetsLost);
});
