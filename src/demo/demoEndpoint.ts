import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import type { Logger } from 'pino';
import { SipUserAgent, type Dialog, type ServerInvite } from '../sip';
import { pcmuEncode } from '../media/codecs';
import { parseSipOffer, parseSipAnswer, type SipMediaDescription } from '../sdp';

/**
 * The built-in demo "trunk" that `npm start` talks to when no real trunk is configured. It is
 * a separate SIP user agent speaking real SIP and RTP over loopback, so the gateway's SIP and
 * media code run exactly as they would against a carrier:
 *   1000 — echoes the caller's audio back;
 *   1001 — plays a 440 Hz tone;
 *   1002 — answers 486 Busy Here;
 *   callback(user) — calls the browser user, plays a short tone, then echoes.
 */
export const DEMO_NUMBERS = ['1000', '1001', '1002'] as const;

const MAX_CALL_MS = 10 * 60_000;
const RING_MS = 800;

export class DemoEndpoint {
  private readonly ua: SipUserAgent;
  private readonly streams = new Set<DemoRtpStream>();
  private readonly dialogs = new Set<Dialog>();

  constructor(private readonly opts: { host: string; port: number; gatewayUri: string; logger: Logger }) {
    this.ua = new SipUserAgent({
      transports: [{ protocol: 'udp', host: opts.host, port: opts.port }],
      logger: opts.logger.child({ component: 'demo-endpoint' }),
      userAgent: 'gateway-demo-endpoint',
    });
    this.ua.on('invite', (inv: ServerInvite) => this.onInvite(inv));
  }

  async start(): Promise<void> {
    await this.ua.start();
  }

  get sipUri(): string {
    return `sip:${this.opts.host}:${this.opts.port}`;
  }

  async stop(): Promise<void> {
    for (const d of this.dialogs) await d.bye().catch(() => undefined);
    for (const s of this.streams) s.close();
    await this.ua.stop();
  }

  /** Users a callback is ringing or up for: one each at a time. */
  private readonly callingBack = new Set<string>();

  /**
   * "Call me back": the demo endpoint calls a browser user through the gateway. False (nothing
   * done) while a callback to that user is still ringing or up: one session could otherwise
   * ring its tabs — every tab of its identity — as many times as it asked, up to the gateway's
   * whole call limit.
   */
  async callback(user: string): Promise<boolean> {
    if (this.callingBack.has(user)) return false;
    this.callingBack.add(user);
    let stream: DemoRtpStream;
    try {
      stream = await DemoRtpStream.open(this.opts.host);
    } catch (err) {
      this.callingBack.delete(user);
      throw err;
    }
    this.streams.add(stream);
    const inv = this.ua.invite({
      requestUri: `sip:${encodeURIComponent(user)}@${this.opts.gatewayUri}`,
      from: { uri: `sip:1000@${this.opts.host}:${this.opts.port}`, displayName: 'Demo callback' },
      sdp: stream.sdp(),
    });
    const log = this.opts.logger.child({ component: 'demo-endpoint', sipCallId: inv.callId });
    const fail = (why: string) => { log.info({ why }, 'demo callback not answered'); stream.close(); this.streams.delete(stream); this.callingBack.delete(user); };
    inv.on('accepted', (_res, dialog, answer) => {
      const desc = parseSipAnswer(answer);
      if ('error' in desc) { dialog.bye().catch(() => undefined); fail(`unusable answer: ${desc.error}`); return; }
      dialog.once('terminated', () => this.callingBack.delete(user));
      this.run(stream, desc, dialog, 'tone-then-echo');
    });
    inv.on('rejected', (res) => fail(`${res.status} ${res.reason}`));
    inv.on('failed', (err) => fail(err.message));
    return true;
  }

  private onInvite(inv: ServerInvite): void {
    const number = /sips?:([^@;>]+)@/.exec(inv.request.uri)?.[1] ?? '';
    const log = this.opts.logger.child({ component: 'demo-endpoint', sipCallId: inv.callId, number });
    if (number === '1002') { inv.reject(486, 'Busy Here'); return; }
    if (number !== '1000' && number !== '1001') { inv.reject(404, 'Not Found'); return; }
    const offer = parseSipOffer(inv.request.body);
    if ('error' in offer || !offer.codecs.some((c) => c.name.toUpperCase() === 'PCMU')) {
      log.info('demo endpoint needs a PCMU offer: 488');
      inv.reject(488, 'Not Acceptable Here');
      return;
    }
    let cancelled = false;
    inv.on('cancelled', () => { cancelled = true; });
    inv.progress(180);
    setTimeout(async () => {
      if (cancelled) return;
      const stream = await DemoRtpStream.open(this.opts.host);
      this.streams.add(stream);
      if (cancelled) { stream.close(); this.streams.delete(stream); return; }
      const dialog = inv.accept(stream.sdp());
      this.run(stream, offer, dialog, number === '1000' ? 'echo' : 'tone');
    }, RING_MS);
  }

  private run(stream: DemoRtpStream, remote: SipMediaDescription, dialog: Dialog, mode: 'echo' | 'tone' | 'tone-then-echo'): void {
    this.dialogs.add(dialog);
    const pt = remote.codecs.find((c) => c.name.toUpperCase() === 'PCMU')?.payloadType ?? 0;
    stream.start(remote.address, remote.port, pt, mode);
    const limit = setTimeout(() => dialog.bye().catch(() => undefined), MAX_CALL_MS);
    dialog.once('terminated', () => {
      clearTimeout(limit);
      stream.close();
      this.streams.delete(stream);
      this.dialogs.delete(dialog);
    });
  }
}

/** One plain-RTP PCMU stream on loopback: echo or tone, 20 ms frames. */
class DemoRtpStream {
  private remote: { address: string; port: number } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly ssrc = randomInt(1, 0x7fffffff);
  private seq = randomInt(0, 0xffff);
  private ts = randomInt(0, 0x7fffffff);
  private pt = 0;
  private echoQueue: Buffer[] = [];
  private mode: 'echo' | 'tone' | 'tone-then-echo' = 'echo';
  private frames = 0;
  private phase = 0;
  private closed = false;

  private constructor(private readonly socket: dgram.Socket, private readonly host: string) {}

  static async open(host: string): Promise<DemoRtpStream> {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, host, () => { socket.off('error', reject); resolve(); });
    });
    const s = new DemoRtpStream(socket, host);
    socket.on('error', () => undefined);
    socket.on('message', (msg, rinfo) => s.onPacket(msg, rinfo));
    return s;
  }

  sdp(): string {
    const port = this.socket.address().port;
    const id = randomInt(1, 0x7fffffff);
    return [
      'v=0', `o=demo ${id} 1 IN IP4 ${this.host}`, 's=demo', `c=IN IP4 ${this.host}`, 't=0 0',
      `m=audio ${port} RTP/AVP 0 101`, 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:101 telephone-event/8000', 'a=fmtp:101 0-15',
      'a=ptime:20', 'a=sendrecv', '',
    ].join('\r\n');
  }

  start(address: string, port: number, pt: number, mode: 'echo' | 'tone' | 'tone-then-echo'): void {
    this.remote = { address, port };
    this.pt = pt;
    this.mode = mode;
    this.timer = setInterval(() => this.tick(), 20);
  }

  private onPacket(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closed || msg.length < 12 || (msg[0] & 0xc0) !== 0x80) return;
    const pt = msg[1] & 0x7f;
    if (pt !== this.pt) return; // DTMF events and comfort noise are not echoed
    // Symmetric RTP: answer wherever the media really comes from.
    if (this.remote && (this.remote.port !== rinfo.port || this.remote.address !== rinfo.address)) this.remote = { address: rinfo.address, port: rinfo.port };
    const cc = msg[0] & 0x0f;
    let off = 12 + cc * 4;
    if (msg[0] & 0x10) off += 4 + msg.readUInt16BE(off + 2) * 4;
    if (off >= msg.length) return;
    if (this.echoQueue.length < 10) this.echoQueue.push(Buffer.from(msg.subarray(off)));
  }

  private tick(): void {
    if (!this.remote) return;
    this.frames++;
    const toneNow = this.mode === 'tone' || (this.mode === 'tone-then-echo' && this.frames <= 100);
    let payload: Buffer | undefined;
    if (toneNow) payload = this.toneFrame();
    else payload = this.echoQueue.shift();
    if (!payload) return;
    const pkt = Buffer.allocUnsafe(12 + payload.length);
    pkt[0] = 0x80; pkt[1] = this.pt | (this.frames === 1 ? 0x80 : 0);
    pkt.writeUInt16BE(this.seq, 2); pkt.writeUInt32BE(this.ts >>> 0, 4); pkt.writeUInt32BE(this.ssrc, 8);
    payload.copy(pkt, 12);
    this.seq = (this.seq + 1) & 0xffff;
    this.ts = (this.ts + 160) >>> 0;
    this.socket.send(pkt, this.remote.port, this.remote.address);
  }

  private toneFrame(): Buffer {
    const pcm = new Int16Array(160);
    for (let i = 0; i < 160; i++) {
      pcm[i] = Math.round(8000 * Math.sin(this.phase));
      this.phase += (2 * Math.PI * 440) / 8000;
    }
    this.phase %= 2 * Math.PI;
    return pcmuEncode(pcm);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.socket.close();
  }
}
