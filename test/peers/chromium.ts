import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

/**
 * Headless Debian Chromium for end-to-end tests (recipe: ../shared/peers/chrome-werift).
 * `--allow-loopback-in-peer-connection` is what makes Chrome gather a 127.0.0.1 candidate, and
 * the host-resolver rule keeps Chrome's own lookups from leaving the machine.
 */
/** The flags every headless Chromium here needs (tests and benchmarks share them). */
export function chromiumArgs(fakeMicWav: string): string[] {
  return [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${fakeMicWav}`,
    '--autoplay-policy=no-user-gesture-required',
    '--allow-loopback-in-peer-connection',
    // Chrome's own lookups never leave the machine.
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
  ];
}

export async function launchChromium(opts: { fakeMicWav: string }): Promise<{ context: BrowserContext; newPage(): Promise<Page>; close(): Promise<void> }> {
  const profile = mkdtempSync(join(tmpdir(), 'gw-chrome-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    headless: true,
    args: chromiumArgs(opts.fakeMicWav),
  });
  return {
    context,
    newPage: () => context.newPage(),
    close: async () => {
      await context.close().catch(() => undefined);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
