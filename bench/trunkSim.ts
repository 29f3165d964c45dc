/**
 * The far (trunk) side of the media benchmark, in its own process so its CPU is not counted
 * as the gateway's: one UDP socket sends a 20 ms PCMU packet to every leg every 20 ms and
 * counts what comes back. Driven over IPC by bench/mediaLoad.ts.
 */
import dgram from 'node:dgram';

const sock = dgram.createSocket('udp4');
let targets: Array<{ port: number; seq: number; ts: number; ssrc: number }> = [];
let received = 0;
let timer: NodeJS.Timeout | null = null;
const payload = Buffer.alloc(160, 0xd5);

sock.on('message', () => { received++; });
sock.bind(0, '127.0.0.1', () => process.send!({ type: 'ready', port: sock.address().port }));

process.on('message', (m: { type: string; ports?: number[] }) => {
  if (m.type === 'start') {
    targets = (m.ports ?? []).map((port, i) => ({ port, seq: 0, ts: 0, ssrc: 0x1000 + i }));
    received = 0;
    timer = setInterval(() => {
      for (const t of targets) {
        const b = Buffer.allocUnsafe(172);
        b[0] = 0x80; b[1] = 0;
        b.writeUInt16BE(t.seq = (t.seq + 1) & 0xffff, 2);
        b.writeUInt32BE(t.ts = (t.ts + 160) >>> 0, 4);
        b.writeUInt32BE(t.ssrc, 8);
        payload.copy(b, 12);
        sock.send(b, t.port, '127.0.0.1');
      }
    }, 20);
  } else if (m.type === 'count') {
    process.send!({ type: 'count', received });
    received = 0;
  } else if (m.type === 'stop') {
    if (timer) clearInterval(timer);
    sock.close();
    process.exit(0);
  }
});
