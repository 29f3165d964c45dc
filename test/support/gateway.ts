import pino from 'pino';
import { join } from 'node:path';
import { validateConfig, type GatewayConfigInput } from '../../src/config';
import { Gateway } from '../../src/gateway';
import { tempDir } from './tempDir';

/**
 * Starts a whole gateway in this process on loopback test ports. Each test file passes its own
 * port base so files never collide.
 */
export async function startGateway(base: number, overrides: Partial<GatewayConfigInput> = {}, opts: { captureLogs?: boolean; directSrtp?: boolean } = {}): Promise<{ gateway: Gateway; url: string; sipPort: number; cdrPath: string; logs: Array<Record<string, unknown>>; stop(): Promise<void> }> {
  const dir = tempDir('gw-test-');
  const cdrPath = join(dir, 'cdr.jsonl');
  const input = {
    http: { host: '127.0.0.1', port: base },
    sip: { host: '127.0.0.1', port: base + 1 },
    demo: { sipPort: base + 2 },
    webrtc: { portRange: [base + 200, base + 299] as [number, number] },
    cdr: { path: cdrPath },
    drain: { timeoutSec: 1 },
    ...overrides,
    // Merged, not replaced: GW_TEST_MEDIA_WORKERS=n runs the media plane of every test that does
    // not set media.workers itself in n worker threads.
    media: { portRange: [base + 100, base + 199] as [number, number], inactivityTimeoutSec: 20, workers: Number(process.env.GW_TEST_MEDIA_WORKERS ?? 0), ...overrides.media },
  };
  const r = validateConfig(input as Record<string, unknown>);
  if (!r.ok) throw new Error(r.errors.join('\n'));
  // captureLogs: every line at debug level kept as parsed JSON, for assertions about logging.
  const logs: Array<Record<string, unknown>> = [];
  const logger = opts.captureLogs
    ? pino({ level: 'debug' }, { write: (line: string) => { logs.push(JSON.parse(line)); } })
    : pino({ level: process.env.GW_TEST_LOG ?? 'silent' });
  const gateway = new Gateway(r.config, logger, { directSrtp: opts.directSrtp });
  await gateway.start();
  return { gateway, url: `http://127.0.0.1:${base}`, sipPort: base + 1, cdrPath, logs, stop: () => gateway.stop() };
}

/**
 * What a gateway still holds (a leak check once calls have ended): media legs, bridges and RTP
 * ports, and ICE ports. Reads private members, read-only.
 */
export function heldResources(gateway: Gateway): { legs: number; bridges: number; portsAllocated: number; icePorts: number } {
  const media = (gateway as unknown as { media: { usage: { legs: number; bridges: number; portsAllocated: number } } }).media.usage;
  const manager = (gateway as unknown as { manager: { opts: { ctx: { ice: { portPool?: { used: number } } } } } }).manager;
  return { legs: media.legs, bridges: media.bridges, portsAllocated: media.portsAllocated, icePorts: manager.opts.ctx.ice.portPool?.used ?? 0 };
}

/**
 * Every call `gw` creates and every refused attempt it records (the callId of each), from the
 * call manager's hooks: what a test then expects one CDR line for.
 */
export function recordCallIds(gw: Gateway): { created: Set<string>; refused: Set<string> } {
  const created = new Set<string>();
  const refused = new Set<string>();
  const hooks = (gw['manager'] as unknown as { opts: { hooks: { callStarted(c: { id: string }): void; callRefused(r: { callId: string }): void } } }).opts.hooks;
  const onStarted = hooks.callStarted.bind(hooks);
  const onRefused = hooks.callRefused.bind(hooks);
  hooks.callStarted = (call) => { created.add(call.id); onStarted(call); };
  hooks.callRefused = (record) => { refused.add(record.callId); onRefused(record); };
  return { created, refused };
}
