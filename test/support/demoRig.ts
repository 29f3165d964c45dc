import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { launchChromium } from '../peers/chromium';
import { startGateway } from './gateway';
import { writeToneWav } from './audio';
import { tempDir } from './tempDir';
import { until } from './tabs';

export interface DemoRig {
  gw: Awaited<ReturnType<typeof startGateway>>;
  browser: Awaited<ReturnType<typeof launchChromium>>;
  stop(): Promise<void>;
}

/**
 * A gateway on the `base` ports (demo endpoint on) and a headless Chromium whose microphone
 * plays a 700 Hz tone: what the demo-call tests start with. stop() closes both.
 */
export async function startDemoRig(base: number, overrides: Parameters<typeof startGateway>[1] = {}): Promise<DemoRig> {
  const gw = await startGateway(base, overrides);
  try {
    const wav = join(tempDir('gw-e2e-'), 'mic-700hz.wav');
    writeToneWav(wav, { hz: 700, sampleRate: 48000, seconds: 30 });
    const browser = await launchChromium({ fakeMicWav: wav });
    return { gw, browser, stop: async () => { await browser.close(); await gw.stop(); } };
  } catch (err) {
    await gw.stop();
    throw err;
  }
}

/** The gateway's CDR lines so far, parsed. */
export function cdrLines(gw: DemoRig['gw']): Array<Record<string, any>> {
  return readFileSync(gw.cdrPath, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

/** The CDR line of `callId`, once it is written; exactly one. */
export async function cdrOf(gw: DemoRig['gw'], callId: string): Promise<Record<string, any>> {
  await until(() => cdrLines(gw).some((l) => l.callId === callId), `the CDR line of ${callId}`);
  const lines = cdrLines(gw).filter((l) => l.callId === callId);
  assert.equal(lines.length, 1, JSON.stringify(lines));
  return lines[0];
}
