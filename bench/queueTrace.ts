/**
 * Where a backlog in the gateway comes from, for whoever chases the p99 of the media bench:
 * one run of `mediaLoad` (100 transcoded calls by default) with, per 0.5 ms, the RTP datagrams
 * that reached the gateway from the far ends (tcpdump), those its JavaScript took up (every RTP
 * 'message' a UDP socket of this process emitted) and those that left it for the far ends
 * (tcpdump), and the backlog between the first two.
 * Each backlog episode over `threshold` packets is classified by whether an input burst came
 * in the 3 ms before it built up: three or more of the generator's 1 ms phases in one bin (it
 * fell 2 ms behind and caught up at once), the load generator's doing rather than the
 * gateway's. An episode whose "taken" row stays at 0 while packets arrive is the gateway not
 * running (descheduled, or collecting garbage). Prints a summary and the first episodes' bins.
 *
 *   npm run build && node --expose-gc dist/bench/queueTrace.js [calls] [threshold] [episodes]
 *
 * A diagnostic, not a figure of `npm run bench`: it patches dgram.Socket.prototype.emit, which
 * costs the gateway a little.
 */
import dgram from 'node:dgram';
import { mediaLoad } from './mediaLoad';
import type { CallPorts, WirePacket } from './wireLatency';

const BIN_MS = 0.5;

export interface QueueEpisode { atMs: number; lengthMs: number; maxBacklog: number; burst: boolean; bins: { arrived: number[]; taken: number[]; left: number[]; backlog: number[] } }

export async function queueTrace(calls = 100, threshold = 40): Promise<{ addedP99: { toSip: number; toBrowser: number }; episodes: QueueEpisode[]; burstShare: number }> {
  // Every datagram this process's JavaScript takes up, timed (epoch ms, as the pcap is).
  const taken: number[] = [];
  const emit = dgram.Socket.prototype.emit;
  dgram.Socket.prototype.emit = function (this: dgram.Socket, event: string | symbol, ...args: unknown[]) {
    // RTP only, as the capture's figures are (RFC 7983 first byte; RTCP's PTs 192-223 left out).
    const msg = args[0] as Buffer;
    if (event === 'message' && msg.length >= 12 && (msg[0] & 0xc0) === 0x80 && !(msg[1] >= 192 && msg[1] <= 223)) taken.push(performance.timeOrigin + performance.now());
    return (emit as (...a: unknown[]) => boolean).apply(this, [event, ...args]);
  } as typeof emit;
  let packets: WirePacket[] = [];
  let window = { fromMs: 0, toMs: 0 };
  let ends: CallPorts[] = [];
  try {
    const r = await mediaLoad(calls, 'transcode', 8, { onCapture: (p, w, c) => { packets = p; window = w; ends = c; } });
    // Told apart by the far ends' own ports: the gateway's ranges can hold an ephemeral port of theirs.
    const sending = new Set(ends.flatMap((c) => [c.browserSendPort ?? c.browserPort, c.trunkPort]));
    const receiving = new Set(ends.flatMap((c) => [c.browserPort, c.trunkPort]));
    const arrivals = packets.filter((p) => sending.has(p.sport)).map((p) => p.t);
    const departures = packets.filter((p) => receiving.has(p.dport)).map((p) => p.t);
    // The generator sends one packet per call and direction per 20 ms, in twenty 1 ms phases.
    const burst = 3 * Math.max(1, Math.round((2 * calls) / 20));
    const episodes = analyse(arrivals, taken, departures, window, threshold, burst);
    const area = (e: QueueEpisode) => e.bins.backlog.reduce((a, b) => a + b, 0);
    const total = episodes.reduce((a, e) => a + area(e), 0);
    const fromBursts = episodes.filter((e) => e.burst).reduce((a, e) => a + area(e), 0);
    return { addedP99: { toSip: r.addedToSipMs.p99, toBrowser: r.addedToBrowserMs.p99 }, episodes, burstShare: total ? fromBursts / total : NaN };
  } finally {
    dgram.Socket.prototype.emit = emit;
  }
}

/** Bins the window, follows the backlog (arrived − taken, from an empty start) and cuts it into episodes. */
function analyse(arrivals: number[], taken: number[], departures: number[], window: { fromMs: number; toMs: number }, threshold: number, burstSize: number): QueueEpisode[] {
  const n = Math.floor((window.toMs - window.fromMs) / BIN_MS);
  const bin = (times: number[]) => {
    const b = new Array<number>(n).fill(0);
    for (const t of times) { const k = Math.floor((t - window.fromMs) / BIN_MS); if (k >= 0 && k < n) b[k]++; }
    return b;
  };
  const A = bin(arrivals), T = bin(taken), D = bin(departures);
  const B = new Array<number>(n).fill(0);
  for (let i = 0, b = 0; i < n; i++) { b = Math.max(0, b + A[i] - T[i]); B[i] = b; }
  const episodes: QueueEpisode[] = [];
  for (let i = 0; i < n; i++) {
    if (B[i] < threshold) continue;
    let s = i; while (s > 0 && B[s - 1] > 5) s--;
    let e = i; while (e < n && B[e] > 5) e++;
    let rise = s; while (rise < e && B[rise] < 20) rise++;
    const burst = A.slice(Math.max(0, rise - 6), rise + 1).some((a) => a >= burstSize);
    episodes.push({ atMs: s * BIN_MS, lengthMs: (e - s) * BIN_MS, maxBacklog: Math.max(...B.slice(s, e)), burst, bins: { arrived: A.slice(s, e), taken: T.slice(s, e), left: D.slice(s, e), backlog: B.slice(s, e) } });
    i = e;
  }
  return episodes;
}

if (require.main === module) {
  const [calls = 100, threshold = 40, show = 4] = process.argv.slice(2).map(Number);
  queueTrace(calls, threshold).then((r) => {
    console.log(`added p99 →SIP ${r.addedP99.toSip.toFixed(1)} ms, →browser ${r.addedP99.toBrowser.toFixed(1)} ms; ${r.episodes.length} backlogs over ${threshold} packets, ${r.episodes.filter((e) => e.burst).length} of them after an input burst (${(r.burstShare * 100).toFixed(0)} % of the backlog)`);
    for (const e of r.episodes.slice(0, show)) {
      console.log(`\nat ${e.atMs.toFixed(1)} ms, ${e.lengthMs.toFixed(1)} ms, up to ${e.maxBacklog} packets${e.burst ? ', after an input burst' : ''} (per ${BIN_MS} ms bin)`);
      for (const [name, row] of Object.entries(e.bins)) console.log(name.padEnd(8), row.map((x) => String(x).padStart(3)).join(''));
    }
    process.exit(0);
  }).catch((err) => { console.error(err); process.exit(1); });
}
