import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../support/tempDir';

export interface SippRun {
  /** Resolves when sipp exits: code 0 = every call succeeded. */
  done: Promise<{ code: number | null; output: string; errors: string }>;
  kill(): void;
}

/**
 * Runs a real sipp (Debian sip-tester) on loopback (recipe: ../shared/peers/sipp). Built-in
 * scenarios (`-sn uac`/`-sn uas`) or a scenario file; `transport` u1 (UDP) or t1 (TCP).
 * A wall-clock timeout keeps a broken peer from hanging the test.
 */
export function runSipp(o: { scenario: 'uac' | 'uas' | { file: string }; port: number; mediaPort: number; transport?: 'u1' | 't1'; remote?: string; calls?: number; rate?: number; extra?: string[]; timeoutSec?: number }): SippRun {
  const cwd = tempDir('sipp-');
  const args = [
    ...(typeof o.scenario === 'string' ? ['-sn', o.scenario] : ['-sf', o.scenario.file]),
    '-i', '127.0.0.1', '-p', String(o.port), '-mi', '127.0.0.1', '-mp', String(o.mediaPort),
    '-t', o.transport ?? 'u1', '-m', String(o.calls ?? 1), '-nostdin', '-trace_err',
    '-timeout', `${o.timeoutSec ?? 20}s`, '-timeout_error', '-recv_timeout', '8000',
    ...(o.rate ? ['-r', String(o.rate)] : []),
    ...(o.extra ?? []),
    ...(o.remote ? [o.remote] : []),
  ];
  const proc = spawn('sipp', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d) => { output = (output + d.toString()).slice(-20000); });
  proc.stderr.on('data', (d) => { output = (output + d.toString()).slice(-20000); });
  const done = new Promise<{ code: number | null; output: string; errors: string }>((resolve) => {
    proc.once('exit', (code) => {
      const errors = readdirSync(cwd).filter((f) => f.endsWith('_errors.log')).map((f) => readFileSync(join(cwd, f), 'utf8')).join('\n');
      resolve({ code, output, errors: errors.slice(-4000) });
    });
  });
  return { done, kill: () => proc.kill('SIGKILL') };
}

/**
 * Resolves once a UDP socket is bound on `port` on this machine (sipp's SIP port), so a test
 * sends its first request to a listening peer instead of guessing with a fixed sleep.
 */
export async function udpPortBound(port: number, timeoutMs = 5000): Promise<void> {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (readFileSync('/proc/net/udp', 'utf8').includes(hex)) return;
    if (Date.now() > end) throw new Error(`nothing bound UDP port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
