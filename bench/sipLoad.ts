/**
 * Call setups per second through the SIP core: a real sipp (UAC) drives INVITE/ACK/BYE at a
 * target rate against our SipUserAgent, which answers every call. Reports what sipp achieved
 * and our process's CPU per call. Needs sipp (Debian sip-tester); skipped when it is missing.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { SipUserAgent, type ServerInvite } from '../src/sip';

export interface SipLoadResult { targetRate: number; calls: number; succeeded: number; failed: number; retransmissions: number; achievedCps: number; cpuUsPerCall: number }

const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 19900 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';

export function sippAvailable(): boolean {
  return spawnSync('sipp', ['-v'], { stdio: 'ignore' }).error === undefined;
}

export async function sipLoad(rate: number, calls: number): Promise<SipLoadResult> {
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger: pino({ level: 'silent' }) });
  await ua.start();
  // The flow the issue names: INVITE/100/180/200/ACK/BYE/200.
  ua.on('invite', (inv: ServerInvite) => { inv.progress(180); inv.accept(SDP); });
  const port = ua.boundAddresses[0].port;
  const cwd = mkdtempSync(join(tmpdir(), 'bench-sipp-'));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const stat = await new Promise<string>((resolve) => {
    const p = spawn('sipp', ['-sn', 'uac', '-i', '127.0.0.1', '-p', '0', '-m', String(calls), '-r', String(rate), '-l', String(rate * 2), '-d', '0', '-nostdin', '-timeout', '120s', '-trace_screen', '-mp', '19950', `127.0.0.1:${port}`], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out = (out + d.toString()).slice(-20000); });
    p.stderr.on('data', (d) => { out = (out + d.toString()).slice(-20000); });
    p.on('exit', () => resolve(out));
  });
  const wallS = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await ua.stop();
  rmSync(cwd, { recursive: true, force: true }); // sipp's screen and error files: read from its output instead
  const num = (label: RegExp) => Number(label.exec(stat)?.[1] ?? 0);
  const succeeded = num(/Successful call\s+\|\s+\d+\s+\|\s+(\d+)/);
  const failed = num(/Failed call\s+\|\s+\d+\s+\|\s+(\d+)/);
  // sipp's message table: the third column of each message line counts its retransmissions.
  let retransmissions = 0;
  let rows = 0;
  for (const m of stat.matchAll(/^\s*(?:INVITE|ACK|BYE|100|180|200)\s*(?:-+>|<-+)\s+(?:E-RTD\d\s+)?\d+\s+(\d+)/gm)) { retransmissions += Number(m[1]); rows++; }
  if (rows < 4) throw new Error(`could not read sipp's message table:\n${stat.slice(-1500)}`);
  return { targetRate: rate, calls, succeeded, failed, retransmissions, achievedCps: succeeded / wallS, cpuUsPerCall: (cpu.user + cpu.system) / Math.max(1, succeeded) };
}
