import { join } from 'node:path';
import { launchChromium } from '../peers/chromium';
import { startGateway } from './gateway';
import { writeToneWav } from './audio';
import { tempDir } from './tempDir';

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
