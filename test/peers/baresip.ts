import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { tempDir } from '../support/tempDir';

export interface BaresipOptions {
  sipPort: number;
  rtpPorts: [number, number];
  ctrlPort: number;
  /** Account parameters, e.g. ';answermode=auto;audio_codecs=PCMU;mediaenc=srtp-mand'. */
  accountParams?: string;
  /** 8 kHz 16-bit mono WAV played as the microphone (keep it long: baresip hangs up at EOF). */
  audioSourceWav: string;
  user?: string;
  /** Codec modules beyond g711.so, e.g. ['opus.so'] for a phone that speaks Opus. */
  codecModules?: string[];
  /**
   * SIP over TLS as well (baresip 1.0.0 listens for it on sipPort + 1, beside UDP and TCP on
   * sipPort): `certificate` is one PEM file holding the certificate and its key (sip_certificate),
   * `cafile` the CAs baresip trusts (sip_cafile). The account's URI and `uri` then say TLS.
   */
  tls?: { certificate: string; cafile?: string };
  /** baresip -s: every SIP message sent or received goes to the console (see `sipTrace()`). */
  sipTrace?: boolean;
}

/** One SIP message in baresip's own trace (-s): the transport it went over, and its first line. */
export interface BaresipTraceEntry {
  transport: string;
  from: string;
  to: string;
  /** The request or status line. */
  startLine: string;
  /** The whole message as baresip printed it. */
  text: string;
}

export interface Baresip {
  uri: string;
  recordDir: string;
  /** ctrl_tcp events seen so far (CALL_INCOMING, CALL_ESTABLISHED, CALL_DTMF_START, CALL_CLOSED…). */
  events: Array<{ type: string; param?: string; [k: string]: unknown }>;
  ctl(command: string, params?: string): Promise<string>;
  waitForEvent(type: string, timeoutMs: number, match?: (e: { param?: string }) => boolean): Promise<{ type: string; param?: string }>;
  /** Received (-dec) and sent (-enc) recordings from the sndfile module. */
  recordings(): { dec: string[]; enc: string[] };
  /** The end of baresip's console output (for a failing test's message). */
  output(): string;
  /** The SIP messages baresip traced so far (empty unless started with `sipTrace`). */
  sipTrace(): BaresipTraceEntry[];
  stop(): Promise<void>;
}

/**
 * A real baresip (Debian package) as a phone or trunk on loopback, configured per instance
 * (recipe: ../shared/peers/baresip). Auto-answers by default, records both directions.
 */
export async function startBaresip(o: BaresipOptions): Promise<Baresip> {
  const dir = tempDir('baresip-');
  const recordDir = join(dir, 'rec');
  mkdirSync(recordDir);
  const user = o.user ?? 'trunk';
  writeFileSync(join(dir, 'config'), [
    'poll_method epoll',
    `sip_listen 127.0.0.1:${o.sipPort}`,
    ...(o.tls ? [`sip_certificate ${o.tls.certificate}`, ...(o.tls.cafile ? [`sip_cafile ${o.tls.cafile}`] : [])] : []),
    'net_interface 127.0.0.1',
    'audio_player alsa,null',
    'audio_alert alsa,null',
    `audio_source aufile,${o.audioSourceWav}`,
    `rtp_ports ${o.rtpPorts[0]}-${o.rtpPorts[1]}`,
    'module_path /usr/lib/baresip/modules',
    'module g711.so', ...(o.codecModules ?? []).map((m) => `module ${m}`), 'module aufile.so', 'module alsa.so', 'module sndfile.so', 'module srtp.so',
    'module_app account.so', 'module_app menu.so', 'module_app ctrl_tcp.so',
    `ctrl_tcp_listen 127.0.0.1:${o.ctrlPort}`,
    `snd_path ${recordDir}`,
    '',
  ].join('\n'));
  const accountUri = o.tls ? `sip:${user}@127.0.0.1:${o.sipPort + 1};transport=tls` : `sip:${user}@127.0.0.1:${o.sipPort}`;
  writeFileSync(join(dir, 'accounts'), `<${accountUri}>;regint=0${o.accountParams ?? ';answermode=auto;audio_codecs=PCMU'}\n`);
  writeFileSync(join(dir, 'contacts'), '');
  const proc: ChildProcess = spawn('baresip', ['-f', dir, ...(o.sipTrace ? ['-s'] : [])], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout!.on('data', (d) => { output += d.toString(); });
  proc.stderr!.on('data', (d) => { output += d.toString(); });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));

  // Wait for ctrl_tcp to accept, then keep one connection open for events.
  const events: Baresip['events'] = [];
  const waiters: Array<() => void> = [];
  let sock: net.Socket | null = null;
  const deadline = Date.now() + 10_000;
  while (!sock) {
    if (proc.exitCode !== null) throw new Error(`baresip exited: ${output.slice(-500)}`);
    sock = await new Promise<net.Socket | null>((resolve) => {
      const s = net.connect(o.ctrlPort, '127.0.0.1', () => resolve(s));
      s.once('error', () => resolve(null));
    });
    if (!sock) {
      if (Date.now() > deadline) { proc.kill('SIGKILL'); throw new Error(`baresip did not start: ${output.slice(-500)}`); }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  let buf = '';
  const pending: Array<(s: string) => void> = [];
  sock.on('data', (d) => {
    buf += d.toString();
    // netstrings: LEN:JSON,
    for (;;) {
      const colon = buf.indexOf(':');
      if (colon < 0) break;
      const len = Number(buf.slice(0, colon));
      if (!Number.isFinite(len) || buf.length < colon + 1 + len + 1) break;
      const body = buf.slice(colon + 1, colon + 1 + len);
      buf = buf.slice(colon + 2 + len);
      try {
        const msg = JSON.parse(body);
        if (msg.event) { events.push(msg); for (const w of waiters.splice(0)) w(); }
        else if (msg.response) pending.shift()?.(String(msg.data ?? ''));
      } catch { /* ignore */ }
    }
  });
  sock.on('error', () => undefined);

  const b: Baresip = {
    uri: accountUri,
    recordDir,
    events,
    ctl(command, params = '') {
      return new Promise((resolve) => {
        const js = JSON.stringify({ command, params, token: String(Date.now()) });
        pending.push(resolve);
        sock!.write(`${Buffer.byteLength(js)}:${js},`);
        setTimeout(() => resolve('(no reply)'), 2000);
      });
    },
    async waitForEvent(type, timeoutMs, match) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const e = events.find((x) => x.type === type && (!match || match(x)));
        if (e) return e;
        const left = end - Date.now();
        if (left <= 0) throw new Error(`baresip: no ${type} event within ${timeoutMs} ms (saw ${events.map((x) => x.type).join(', ') || 'none'})`);
        await new Promise<void>((r) => { const t = setTimeout(r, left); waiters.push(() => { clearTimeout(t); r(); }); });
      }
    },
    recordings() {
      const files = readdirSync(recordDir).map((f) => join(recordDir, f));
      return { dec: files.filter((f) => f.endsWith('-dec.wav')), enc: files.filter((f) => f.endsWith('-enc.wav')) };
    },
    output: () => output.slice(-3000),
    sipTrace() {
      // Each traced message: an ANSI-coloured "#" line, "TLS a:p -> b:p", the message, a colour reset.
      const entries: BaresipTraceEntry[] = [];
      const re = /^(UDP|TCP|TLS|WS|WSS) (\S+) -> (\S+)\n([^]*?)(?=\x1b\[|$(?![^]))/gm;
      for (const m of output.matchAll(re)) {
        const text = m[4].replace(/\r/g, '');
        entries.push({ transport: m[1], from: m[2], to: m[3], startLine: text.split('\n')[0], text });
      }
      return entries;
    },
    async stop() {
      sock?.destroy();
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 1500);
        await exited;
        clearTimeout(t);
      }
    },
  };
  return b;
}
