/**
 * What the gateway adds to a packet, timed on the wire. tcpdump records every datagram to and
 * from the gateway's media ports on loopback, each with the kernel's timestamp of its passage;
 * a packet's arrival at one leg and the departure of what the gateway made of it from the other
 * leg are paired by RTP sequence number. This is the issue's "arrival on one leg → departure on
 * the other", including the time a packet waited in the gateway's socket before being read.
 *
 * Why not time it in the load generator: that process reads its sockets in whatever order
 * epoll gives them and is itself busy at 100 calls, so a figure it takes carries its own delays
 * (measured here: a p99 of 276 ms from the generator's side where the wire showed 22 ms).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export interface Percentiles { p50: number; p99: number; n: number }
/**
 * One call as the load generator sees it: its browser's ICE port (where the gateway's audio for
 * it arrives), the port the browser's audio leaves from when that is another (the media bench's
 * sender thread), and its trunk RTP port.
 */
export interface CallPorts { browserPort: number; browserSendPort?: number; trunkPort: number }
/** One RTP datagram on the wire: when (epoch ms), between which ports, and its sequence number. */
export interface WirePacket { t: number; sport: number; dport: number; seq: number }

export class WireCapture {
  private stderr = '';
  private constructor(private readonly proc: ChildProcess, readonly file: string) {
    proc.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); });
  }

  /**
   * Starts tcpdump on loopback for UDP to or from the given port ranges; resolves once it
   * listens, or with the reason it cannot (not installed, no capture rights).
   */
  static async start(portRanges: Array<[number, number]>): Promise<WireCapture | string> {
    if (spawnSync('tcpdump', ['--version']).error) return 'tcpdump is not installed';
    const file = join(mkdtempSync(join(tmpdir(), 'bench-wire-')), 'media.pcap');
    const filter = `udp and (${portRanges.map(([a, b]) => `portrange ${a}-${b}`).join(' or ')})`;
    // Snap 64 bytes: Ethernet, IP and UDP headers and the RTP header are all we read.
    const proc = spawn('tcpdump', ['-i', 'lo', '-nn', '-s', '64', '-B', '65536', '--time-stamp-precision=nano', '-w', file, filter], { stdio: ['ignore', 'ignore', 'pipe'] });
    const cap = new WireCapture(proc, file);
    const ready = await new Promise<string | null>((resolve) => {
      const timer = setTimeout(() => resolve('tcpdump did not start listening within 5 s'), 5000);
      const check = () => { if (cap.stderr.includes('listening on')) { clearTimeout(timer); resolve(null); } };
      proc.stderr!.on('data', check);
      proc.once('exit', () => { clearTimeout(timer); resolve(`tcpdump exited: ${cap.stderr.trim().split('\n').pop()}`); });
    });
    if (ready) { proc.kill(); cap.remove(); return ready; }
    return cap;
  }

  /** Stops the capture; resolves with the datagrams the kernel dropped before tcpdump read them. */
  async stop(): Promise<number> {
    if (this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGINT');
      await exited;
    }
    return Number(/(\d+) packets? dropped by kernel/.exec(this.stderr)?.[1] ?? 0);
  }

  /** The gateway's added latency per direction, for packets that reached it in [fromMs, toMs] (epoch ms). */
  latency(calls: CallPorts[], fromMs: number, toMs: number): { toSip: Percentiles; toBrowser: Percentiles } {
    const packets = readRtpPackets(readFileSync(this.file));
    const toSip: number[] = [];
    const toBrowser: number[] = [];
    const bySource = groupBy(packets, (p) => p.sport);
    const byDest = groupBy(packets, (p) => p.dport);
    for (const c of calls) {
      // Browser → SIP: what the browser sent the gateway, and what the gateway sent the trunk.
      pairFlow(bySource.get(c.browserSendPort ?? c.browserPort) ?? [], byDest.get(c.trunkPort) ?? [], fromMs, toMs, toSip);
      pairFlow(bySource.get(c.trunkPort) ?? [], byDest.get(c.browserPort) ?? [], fromMs, toMs, toBrowser);
    }
    return { toSip: percentiles(toSip), toBrowser: percentiles(toBrowser) };
  }

  /** Deletes the capture file (and its directory). */
  remove(): void {
    rmSync(dirname(this.file), { recursive: true, force: true });
  }
}

function groupBy(packets: WirePacket[], key: (p: WirePacket) => number): Map<number, WirePacket[]> {
  const m = new Map<number, WirePacket[]>();
  for (const p of packets) {
    const k = key(p);
    let list = m.get(k);
    if (!list) m.set(k, (list = []));
    list.push(p);
  }
  return m;
}

/**
 * Pairs the packets into the gateway (`inP`) with those it sent on (`outP`), both in capture
 * order. The gateway numbers its packets itself, one out per one in, so out.seq − in.seq is one
 * constant per flow: taken as the commonest difference between each packet out and the latest
 * one in before it (right whenever a packet is through in under 20 ms, as nearly all are).
 * Pushes the latency in ms of each paired packet that came in within the window.
 */
export function pairFlow(inP: WirePacket[], outP: WirePacket[], fromMs: number, toMs: number, out: number[]): void {
  if (!inP.length || !outP.length) return;
  const votes = new Map<number, number>();
  let j = 0;
  for (const o of outP) {
    while (j + 1 < inP.length && inP[j + 1].t <= o.t) j++;
    if (inP[j].t > o.t) continue;
    const d = (o.seq - inP[j].seq) & 0xffff;
    votes.set(d, (votes.get(d) ?? 0) + 1);
  }
  let offset = 0;
  let best = 0;
  for (const [d, n] of votes) if (n > best) { best = n; offset = d; }
  const inBySeq = new Map<number, number>();
  for (const p of inP) inBySeq.set(p.seq, p.t);
  for (const o of outP) {
    const t = inBySeq.get((o.seq - offset) & 0xffff);
    if (t !== undefined && t >= fromMs && t <= toMs) out.push(o.t - t);
  }
}

/** RTP (not RTCP, STUN or DTLS) datagrams of a pcap file from tcpdump on Linux loopback. */
export function readRtpPackets(buf: Buffer): WirePacket[] {
  const magic = buf.readUInt32LE(0);
  if (magic !== 0xa1b23c4d && magic !== 0xa1b2c3d4) throw new Error('not a little-endian pcap file');
  const nano = magic === 0xa1b23c4d;
  const linkHeader = buf.readUInt32LE(20) === 1 ? 14 : 0; // Ethernet (Linux lo), else raw IP
  const packets: WirePacket[] = [];
  for (let off = 24; off + 16 <= buf.length;) {
    const t = buf.readUInt32LE(off) * 1e3 + buf.readUInt32LE(off + 4) / (nano ? 1e6 : 1e3);
    const caplen = buf.readUInt32LE(off + 8);
    const ip = off + 16 + linkHeader;
    off += 16 + caplen;
    if (ip >= off || buf[ip] >> 4 !== 4) continue;
    const udp = ip + (buf[ip] & 0x0f) * 4;
    const rtp = udp + 8;
    if (rtp + 12 > off) continue;
    if ((buf[rtp] & 0xc0) !== 0x80) continue; // RFC 7983: RTP/RTCP start with version 2
    if (buf[rtp + 1] >= 192 && buf[rtp + 1] <= 223) continue; // RTCP (RFC 5761 §4), feedback and XR included
    packets.push({ t, sport: buf.readUInt16BE(udp), dport: buf.readUInt16BE(udp + 2), seq: buf.readUInt16BE(rtp + 2) });
  }
  return packets;
}

export function percentiles(a: number[]): Percentiles {
  const s = [...a].sort((x, y) => x - y);
  const at = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN);
  return { p50: at(0.5), p99: at(0.99), n: s.length };
}
