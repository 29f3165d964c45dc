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
 * webrtc.preferPcmu with real Chromium (it then sends PCMU) against two phones that cannot take
 * it as it is: a PCMA-only one (the gateway converts sample by sample: no Opus on either leg),
 * and an Opus-only one (mode transcodeOpusTrunk: PCMU ↔ Opus; before it, such a call had no
 * audio). Each: tones both ways, checked at each end, and a digit through.
 */
interface Phone {
  name: string;
  /** This phone's port block: gateway BASE.., baresip SIP +10, ctrl +20, WebRTC +200.., RTP +300.. */
  base: number;
  number: string;
  accountParams: string;
  codecModules?: string[];
  /** baresip's aufile wants as many channels as its codec (2 for opus/48000/2). */
  wav: { sampleRate: number; channels: 1 | 2 };
  trunkCodecs: Array<'PCMU' | 'PCMA' | 'opus'>;
  expect: { mode: string; sipCodec: string };
  digit: string;
}

const phones: Phone[] = [
  { name: 'a PCMA-only phone', base: 24600, number: '+15551230000', accountParams: ';answermode=auto;audio_codecs=PCMA', wav: { sampleRate: 8000, channels: 1 }, trunkCodecs: ['PCMU', 'PCMA'], expect: { mode: 'lawConvert', sipCodec: 'PCMA' }, digit: '5' },
  { name: 'an Opus-only phone', base: 25100, number: '+15551240000', accountParams: ';answermode=auto;audio_codecs=opus/48000/2', codecModules: ['opus.so'], wav: { sampleRate: 48000, channels: 2 }, trunkCodecs: ['opus', 'PCMU'], expect: { mode: 'transcodeOpusTrunk', sipCodec: 'opus' }, digit: '7' },
];
const work = tempDir('gw-prefer-pcmu-');
const rigs = new Map<string, { gw?: Awaited<ReturnType<typeof startGateway>>; trunk: Baresip }>();
let browser: Awaited<ReturnType<typeof launchChromium>>;

before(async () => {
  const micWav = join(work, 'mic-700hz.wav');
  writeToneWav(micWav, { hz: 700, sampleRate: 48000, seconds: 30 });
  for (const p of phones) {
    const trunkWav = join(work, `trunk-1000hz-${p.base}.wav`);
    writeToneWav(trunkWav, { hz: 1000, sampleRate: p.wav.sampleRate, channels: p.wav.channels, seconds: 60 });
    const trunk = await startBaresip({ sipPort: p.base + 10, rtpPorts: [p.base + 300, p.base + 349], ctrlPort: p.base + 20, audioSourceWav: trunkWav, accountParams: p.accountParams, user: p.number, codecModules: p.codecModules });
    // In the map before the gateway starts: a gateway that fails to start still gets its phone stopped.
    const rig: { gw?: Awaited<ReturnType<typeof startGateway>>; trunk: Baresip } = { trunk };
    rigs.set(p.name, rig);
    rig.gw = await startGateway(p.base, {
      trunk: { uri: `sip:127.0.0.1:${p.base + 10}`, codecs: p.trunkCodecs, sourceCidrs: ['127.0.0.1/32'] },
      webrtc: { portRange: [p.base + 200, p.base + 299], preferPcmu: true },
      demo: { enabled: true, sipPort: p.base + 2 },
      dialplan: { allow: ['+1555*'] },
    }, { captureLogs: true });
  }
  browser = await launchChromium({ fakeMicWav: micWav });
});

afterEach(() => closePages(browser));
after(async () => {
  // Every rig is stopped even when one of the stops fails; the first failure is reported after.
  const stops = [browser?.close(), ...[...rigs.values()].flatMap(({ gw, trunk }) => [gw?.stop(), trunk.stop()])];
  const failed = (await Promise.allSettled(stops)).find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
});

for (const p of phones) {
  test(`preferPcmu with ${p.name}: Chromium sends PCMU, the bridge runs ${p.expect.mode}; 1 kHz heard in the page, 700 Hz at the phone, a digit through`, async (t) => {
    const { gw, trunk } = rigs.get(p.name)!;
    assert.ok(gw, 'the gateway started');
    const page = await openPhone(browser, gw.url);
    t.after(() => page.close());
    await page.getByTestId('dial-input').fill(p.number);
    await page.getByTestId('call-button').click();
    await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 15000 }).catch((e) => { throw new Error(`${e}\nbaresip: ${trunk.output()}`); });
    // The bridge starts on the phone's 180 (its codec not known yet) and takes the mode of its answer.
    const up = gw.logs.find((l) => l.msg === 'media bridge up');
    assert.equal(up?.browserCodec, 'pcmu', 'Chromium was answered PCMU first and sends it');
    const modes = gw.logs.filter((l) => l.msg === 'media bridge up' || l.msg === 'media bridge follows the trunk\'s codec');
    assert.deepEqual({ mode: modes.at(-1)?.mode, sipCodec: modes.at(-1)?.sipCodec }, p.expect);
    const heard = await remotePeakHz(page);
    assert.ok(Math.abs(heard.peakHz - 1000) < 30, `page hears the phone: ${heard.peakHz} Hz`);

    await page.getByTestId(`keypad-${p.digit}`).click();
    const dtmf = await trunk.waitForEvent('CALL_DTMF_START', 5000);
    assert.equal(dtmf.param, p.digit);

    await new Promise((r) => setTimeout(r, 2500));
    await trunk.ctl('hangup');
    await page.getByTestId('call-status').filter({ hasText: 'ended (remote-hangup)' }).waitFor({ timeout: 5000 });
    await page.close();
    await new Promise((r) => setTimeout(r, 500));
    const errors = gw.logs.filter((l) => Number(l.level) >= 50);
    assert.equal(errors.length, 0, `no errors logged: ${JSON.stringify(errors.slice(0, 2))}`);
    const rec = trunk.recordings().dec;
    assert.ok(rec.length > 0, 'baresip recorded the call');
    const { samples, sampleRate } = readWav(rec[rec.length - 1]);
    const steady = samples.subarray(Math.min(samples.length, sampleRate), samples.length);
    assert.ok(steady.length > sampleRate, `recording has ${steady.length} samples`);
    assert.ok(toneRatio(steady, sampleRate, 700) > 0.5, `the phone hears the browser's 700 Hz: ratio ${toneRatio(steady, sampleRate, 700).toFixed(2)}`);
  });
}
