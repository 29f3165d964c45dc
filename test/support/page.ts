import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import type { launchChromium } from '../peers/chromium';

/** Opens the demo phone and waits until it has said hello to the gateway. */
export async function openPhone(browser: Awaited<ReturnType<typeof launchChromium>>, url: string): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(url);
  await page.getByTestId('call-status').filter({ hasText: 'ready' }).waitFor({ timeout: 10000 });
  return page;
}

/**
 * Closes every page a test left open (for afterEach): a test that fails half-way must not leave
 * its call up for the next test of the file, whose assertions on active calls or on what a far
 * end hears would then fail for a reason that is not theirs.
 */
export async function closePages(browser: Awaited<ReturnType<typeof launchChromium>> | undefined): Promise<void> {
  await Promise.all((browser?.context.pages() ?? []).map((p) => p.close().catch(() => undefined)));
}

/** Peak frequency of what the page hears from the gateway (WebAudio analyser on the remote stream). */
export async function remotePeakHz(page: Page, listenMs = 1500, from: 'demo-page' | 'widget' = 'demo-page'): Promise<{ peakHz: number; peakDb: number }> {
  return page.evaluate(async ([ms, from]) => {
    const call = from === 'widget' ? (document.querySelector('gateway-call-widget') as any).currentCall : (window as any).__gw.currentCall;
    const ctx = new AudioContext();
    const src = ctx.createMediaStreamSource(call.remoteStream);
    const an = ctx.createAnalyser();
    an.fftSize = 4096;
    src.connect(an);
    await new Promise((r) => setTimeout(r, ms));
    const f = new Float32Array(an.frequencyBinCount);
    an.getFloatFrequencyData(f);
    let best = 1;
    for (let i = 2; i < f.length; i++) if (f[i] > f[best]) best = i;
    await ctx.close();
    return { peakHz: Math.round((best * ctx.sampleRate) / an.fftSize), peakDb: Math.round(f[best]) };
  }, [listenMs, from] as const);
}

/** The page hears the demo rig's 700 Hz microphone tone back (the echo, 1000). */
export async function expectEcho(page: Page): Promise<void> {
  const heard = await remotePeakHz(page);
  assert.ok(Math.abs(heard.peakHz - 700) < 30, `echo peak ${heard.peakHz} Hz (${heard.peakDb} dB)`);
}
