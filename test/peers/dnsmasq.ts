import { spawn } from 'node:child_process';
import { udpPortBound } from './sipp';

/**
 * A real DNS server on loopback (Debian's dnsmasq) serving a fixed zone: NAPTR, SRV and address
 * records for RFC 3263 tests. Everything under `.test` it does not know is answered "no such
 * name" (`--local`), nothing is asked upstream, /etc/hosts is not read.
 */
export interface NaptrEntry { name: string; order: number; preference: number; flags: string; service: string; regexp?: string; replacement?: string }

export async function startDnsmasq(o: { port: number; naptr?: NaptrEntry[]; srv?: Array<{ service: string; target?: string; port?: number; priority?: number; weight?: number }>; hosts?: Array<[name: string, address: string]> }): Promise<{ stop(): Promise<void>; output(): string }> {
  const args = [
    '--no-daemon', '--conf-file=/dev/null', `--port=${o.port}`, '--listen-address=127.0.0.1', '--bind-interfaces',
    '--no-resolv', '--no-hosts', '--local=/test/', '--log-queries', '--log-facility=-',
    // No target: the service is not offered there (an SRV record with target ".").
    ...(o.srv ?? []).map((s) => `--srv-host=${s.service}${s.target ? `,${s.target},${s.port ?? 5060},${s.priority ?? 0},${s.weight ?? 0}` : ''}`),
    ...(o.hosts ?? []).map(([name, address]) => `--host-record=${name},${address}`),
    // No replacement: "." (a regexp rule, ENUM's "u").
    ...(o.naptr ?? []).map((n) => `--naptr-record=${n.name},${n.order},${n.preference},${n.flags},${n.service},${n.regexp ?? ''}${n.replacement ? `,${n.replacement}` : ''}`),
  ];
  const proc = spawn('dnsmasq', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => { out = (out + d.toString()).slice(-20000); });
  proc.stderr.on('data', (d) => { out = (out + d.toString()).slice(-20000); });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  try {
    await Promise.race([udpPortBound(o.port), exited.then(() => { throw new Error(`dnsmasq exited:\n${out}`); })]);
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  return {
    output: () => out,
    stop: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}
