import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { launchChromium } from '../peers/chromium';
import { startBaresip, type Baresip } from '../peers/baresip';
import { startGateway } from '../support/gateway';
import { readWav, toneRatio, writeToneWav } from '../support/audio';
import { openPhone, remotePeakHz, closePages } from '../support/page';
import { tempDir } from '../support/tempDir';

/**
 * The product's main path against a real SIP phone: Chromium → gateway → baresip acting as the
 * trunk (auto-answer, PCMU, plays 1 kHz, records what it hears), and baresip calling back in.
 */
const BASE = 18400;
/** baresip answers only its own user, so every call goes to this number. */
const TRUNK_NUMBER = '+15551230000';
const work = tempDir('gw-trunk-');
let gw: Awaited<ReturnType<typeof startGateway>>;
let browser: Awaited<ReturnType<typeof launchChromium>>;
let trunk: Baresip;
let manualTrunk: Baresip;

before(async () => {
  const trunkWav = join(work, 'trunk-1000hz.wav');
  writeToneWav(trunkWav, { hz: 1000, sampleRate: 8000, seconds: 120 });
  const micWav = join(work, 'mic-700hz.wav');
  writeToneWav(micWav, { hz: 700, sampleRate: 48000, seconds: 30 });
  trunk = await startBaresip({ sipPort: BASE + 10, rtpPorts: [BASE + 300, BASE + 349], ctrlPort: BASE + 20, audioSourceWav: trunkWav, accountParams: ';answermode=auto;audio_codecs=PCMU', user: TRUNK_NUMBER });
  manualTrunk = await startBaresip({ sipPort: BASE + 13, rtpPorts: [BASE + 350, BASE + 399], ctrlPort: BASE + 25, audioSourceWav: trunkWav, accountParams: ';answermode=manual;audio_codecs=PCMU', user: TRUNK_NUMBER });
  gw = await startGateway(BASE, {
    trunk: { uri: `sip:127.0.0.1:${BASE + 10}`, codecs: ['PCMU'], sourceCidrs: ['127.0.0.1/32'] },
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
  await manualTrunk?.stop();
});

/** Calls whose browser audio went through our SRTP (DirectSrtpPath), and any that fell back to werift's. */
function mediaPaths(): { direct: number; fallback: number } {
  return {
    direct: gw.logs.filter((l) => l.msg === 'browser audio on the direct SRTP path').length,
    fallback: gw.logs.filter((l) => typeof l.msg === 'string' && l.msg.includes("stays on werift's RTP path")).length,
  };
}

async function dial(page: Page, number: string): Promise<void> {
  await page.getByTestId('dial-input').fill(number);
  await page.getByTestId('call-button').click();
}

test('outbound call: audio both ways (1 kHz heard in the page, 700 Hz in baresip), DTMF, remote BYE', async () => {
  const paths0 = mediaPaths();
  const page = await openPhone(browser, gw.url);
  await dial(page, '+1 555 123 0000');
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 15000 });
  const heard = await remotePeakHz(page);
  assert.ok(Math.abs(heard.peakHz - 1000) < 30, `page hears the trunk: ${heard.peakHz} Hz`);
  assert.deepEqual(mediaPaths(), { direct: paths0.direct + 1, fallback: 0 }, 'Chromium\'s audio goes through our SRTP (AES_CM_128_HMAC_SHA1_80 negotiated in DTLS)');

  await page.getByTestId('keypad-5').click();
  const dtmf = await trunk.waitForEvent('CALL_DTMF_START', 5000);
  assert.equal(dtmf.param, '5');

  // Let baresip record a couple of seconds of the browser's tone before it hangs up.
  await new Promise((r) => setTimeout(r, 2500));
  await trunk.ctl('hangup');
  await page.getByTestId('call-status').filter({ hasText: 'ended (remote-hangup)' }).waitFor({ timeout: 5000 });
  await page.close();
  await new Promise((r) => setTimeout(r, 500));
  const rec = trunk.recordings().dec;
  assert.ok(rec.length > 0, 'baresip recorded the call');
  const { samples, sampleRate } = readWav(rec[rec.length - 1]);
  const steady = samples.subarray(Math.min(samples.length, sampleRate), samples.length);
  assert.ok(steady.length > sampleRate, `recording has ${steady.length} samples`);
  assert.ok(toneRatio(steady, sampleRate, 700) > 0.5, `baresip hears the browser's 700 Hz: ratio ${toneRatio(steady, sampleRate, 700).toFixed(2)}`);
});

test('a digit from the trunk (baresip, RFC 4733): the page gets a dtmf event, and Chromium plays the digit\'s tones from our events', async () => {
  const page = await openPhone(browser, gw.url);
  await page.evaluate(() => { (window as any).__digits = []; });
  await dial(page, TRUNK_NUMBER);
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 15000 });
  // Listen to what the page plays while baresip sends 7 (852 + 1209 Hz), every 10 ms.
  const listening = page.evaluate(async () => {
    const call = (window as any).__gw.currentCall;
    call.on('dtmf', (d: string) => (window as any).__digits.push(d));
    const ctx = new AudioContext();
    const an = ctx.createAnalyser();
    an.fftSize = 2048;
    an.smoothingTimeConstant = 0;
    ctx.createMediaStreamSource(call.remoteStream).connect(an);
    const f = new Float32Array(an.frequencyBinCount);
    // Bins of 852, 1209 and 1000 Hz (no helper function: the page gets this code as it is).
    const [b852, b1209, b1000] = [852, 1209, 1000].map((hz) => Math.round((hz * an.fftSize) / ctx.sampleRate));
    let best = { low: -200, high: -200, tone1k: 0 };
    for (let i = 0; i < 300; i++) {
      await new Promise((r) => setTimeout(r, 10));
      an.getFloatFrequencyData(f);
      if (Math.min(f[b852], f[b1209]) > Math.min(best.low, best.high)) best = { low: f[b852], high: f[b1209], tone1k: f[b1000] };
    }
    await ctx.close();
    return best;
  });
  await new Promise((r) => setTimeout(r, 500));
  await trunk.ctl('sndcode', '7');
  const heard = await listening;
  assert.deepEqual(await page.evaluate(() => (window as any).__digits), ['7'], 'the digit reached the page');
  // Measured: about -30 dB each, the 1 kHz at -40 to -68 dB in the same 43 ms window (its tail);
  // without our events (the gap in the trunk's audio concealed) -48 / -51 dB under a 1 kHz at -33.
  assert.ok(heard.low > -42 && heard.high > -42, `Chromium played 852 + 1209 Hz: ${heard.low.toFixed(0)} / ${heard.high.toFixed(0)} dB`);
  assert.ok(Math.min(heard.low, heard.high) > heard.tone1k, `the digit, not the trunk's 1 kHz (${heard.tone1k.toFixed(0)} dB), is what plays`);
  await page.getByTestId('hangup-button').click();
  await trunk.waitForEvent('CALL_CLOSED', 5000, () => true);
});

test('Chromium\'s own RTP digit (insertDTMF, telephone-event/8000 beside Opus) reaches baresip', async () => {
  const page = await openPhone(browser, gw.url);
  await dial(page, TRUNK_NUMBER);
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 15000 });
  const seen = trunk.events.length;
  const fromNow = (e: { param?: string }) => trunk.events.indexOf(e as never) >= seen;
  // Dropped before: Chromium sends its digits as telephone-event/8000 even beside Opus, and the
  // bridge read only the format on Opus's clock. (Their length is checked in the bridge's tests:
  // baresip reports a digit's start and end with delays of its own.)
  await page.evaluate(() => (window as any).__gw.currentCall.pc.getSenders().find((s: RTCRtpSender) => s.track?.kind === 'audio').dtmf.insertDTMF('9', 400));
  const start = await trunk.waitForEvent('CALL_DTMF_START', 5000, fromNow);
  assert.equal(start.param, '9');
  await trunk.waitForEvent('CALL_DTMF_END', 5000, fromNow);
  await page.getByTestId('hangup-button').click();
  await trunk.waitForEvent('CALL_CLOSED', 5000, () => true);
});

test('hold and resume re-INVITE the trunk (sendonly, then sendrecv); silence while held, audio again after resume', async () => {
  const page = await openPhone(browser, gw.url);
  await dial(page, TRUNK_NUMBER);
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 15000 });
  const reinvites = () => gw.logs.filter((l) => l.msg === 'SIP sent' && typeof l.sip === 'string' && l.sip.startsWith('INVITE ') && /^To:.*;tag=/mi.test(l.sip)).map((l) => String(l.sip));
  const before = reinvites().length;
  await page.getByTestId('hold-button').click();
  await page.getByTestId('hold-button').filter({ hasText: 'Resume' }).waitFor({ timeout: 5000 });
  const hold = reinvites().slice(before);
  assert.equal(hold.length, 1, 'one re-INVITE for the hold');
  assert.match(hold[0], /^a=sendonly\r?$/m, 'the hold offer is sendonly (RFC 3264 §8.4)');
  // Held: the trunk's tone no longer reaches the page.
  const held = await remotePeakHz(page);
  assert.ok(held.peakDb < -90, `silence while held: peak ${held.peakHz} Hz at ${held.peakDb} dB`);
  await page.getByTestId('hold-button').click();
  await page.getByTestId('hold-button').filter({ hasText: 'Hold' }).waitFor({ timeout: 5000 });
  const resume = reinvites().slice(before + 1);
  assert.equal(resume.length, 1, 'one re-INVITE for the resume');
  assert.match(resume[0], /^a=sendrecv\r?$/m);
  const heard = await remotePeakHz(page);
  assert.ok(Math.abs(heard.peakHz - 1000) < 30, `audio after resume: ${heard.peakHz} Hz`);
  await page.getByTestId('hangup-button').click();
  await trunk.waitForEvent('CALL_CLOSED', 5000, () => true);
  await page.close();
});

test('closing the tab mid-call sends BYE to the trunk within 5 s', async () => {
  const before = trunk.events.filter((e) => e.type === 'CALL_CLOSED').length;
  const page = await openPhone(browser, gw.url);
  await dial(page, TRUNK_NUMBER);
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 15000 });
  const t0 = Date.now();
  await page.close();
  for (;;) {
    if (trunk.events.filter((e) => e.type === 'CALL_CLOSED').length > before) break;
    assert.ok(Date.now() - t0 < 5000, 'trunk saw the call end within 5 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(gw.gateway.activeCalls, 0);
});

test('cancel before answer: the page hears local ringback, the ringing trunk sees the call go away, the page shows ended', async () => {
  // The auto-answering trunk would answer at once: this test needs one that only rings, so it
  // runs a second gateway whose trunk is the manual-answer baresip.
  const gw2 = await startGateway(BASE + 500, {
    trunk: { uri: `sip:127.0.0.1:${BASE + 13}`, codecs: ['PCMU'] },
    demo: { enabled: true, sipPort: BASE + 502 },
    dialplan: { allow: ['+1555*'] },
  });
  try {
    const page = await openPhone(browser, gw2.url);
    await dial(page, TRUNK_NUMBER);
    await page.getByTestId('call-status').filter({ hasText: 'ringing' }).waitFor({ timeout: 15000 });
    await manualTrunk.waitForEvent('CALL_INCOMING', 5000);
    // 180 without SDP: the gateway plays ringback (440 + 480 Hz) to the browser itself.
    const ring = await remotePeakHz(page, 700); // inside the first 2 s "on" of the cadence
    assert.ok(Math.abs(ring.peakHz - 440) < 25 || Math.abs(ring.peakHz - 480) < 25, `ringback heard while ringing: ${ring.peakHz} Hz`);
    await page.getByTestId('hangup-button').click();
    await page.getByTestId('call-status').filter({ hasText: 'ended (local-hangup)' }).waitFor({ timeout: 5000 });
    await manualTrunk.waitForEvent('CALL_CLOSED', 5000);
    await page.close();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(gw2.gateway.activeCalls, 0);
  } finally {
    await gw2.stop();
  }
});

test('inbound: baresip calls the browser user; the page rings, answers, hears the trunk, and follows the far end\'s hold/resume', async () => {
  const paths0 = mediaPaths();
  const page = await openPhone(browser, gw.url);
  const identity = await page.evaluate(() => (window as any).__gw.client.identity as string);
  await trunk.ctl('dial', `sip:${identity}@127.0.0.1:${gw.sipPort}`);
  await page.getByTestId('incoming-accept').waitFor({ state: 'visible', timeout: 10000 });
  await page.getByTestId('incoming-accept').click();
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 });
  const heard = await remotePeakHz(page);
  assert.ok(Math.abs(heard.peakHz - 1000) < 30, `inbound audio: ${heard.peakHz} Hz`);
  assert.deepEqual(mediaPaths(), { direct: paths0.direct + 1, fallback: 0 }, 'inbound (gateway offers, DTLS server): our SRTP path too');

  // The far end puts the call on hold and takes it back with re-INVITEs; our answers mirror them.
  await page.evaluate(() => {
    const w = window as any;
    w.__holdEvents = [];
    w.__gw.currentCall.on('held', (by: string) => w.__holdEvents.push(`held:${by}`));
    w.__gw.currentCall.on('resumed', (by: string) => w.__holdEvents.push(`resumed:${by}`));
  });
  await trunk.ctl('hold');
  await page.waitForFunction(() => (window as any).__holdEvents.includes('held:remote'), undefined, { timeout: 5000 });
  await trunk.ctl('resume');
  await page.waitForFunction(() => (window as any).__holdEvents.includes('resumed:remote'), undefined, { timeout: 5000 });
  const after = await remotePeakHz(page);
  assert.ok(Math.abs(after.peakHz - 1000) < 30, `audio after the far end resumed: ${after.peakHz} Hz`);
  await page.getByTestId('hangup-button').click();
  await page.getByTestId('call-status').filter({ hasText: 'ended' }).waitFor({ timeout: 5000 });
  await page.close();
});

test('inbound call cancelled while ringing: the prompt goes away and the page shows cancelled', async () => {
  const page = await openPhone(browser, gw.url);
  const identity = await page.evaluate(() => (window as any).__gw.client.identity as string);
  await trunk.ctl('dial', `sip:${identity}@127.0.0.1:${gw.sipPort}`);
  await page.getByTestId('incoming-accept').waitFor({ state: 'visible', timeout: 10000 });
  await trunk.ctl('hangup');
  await page.getByTestId('call-status').filter({ hasText: 'ended (cancelled)' }).waitFor({ timeout: 5000 });
  assert.equal(await page.getByTestId('incoming-accept').isVisible(), false);
  await page.close();
});
