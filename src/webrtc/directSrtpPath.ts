import type { Logger } from 'pino';
import type { RTCRtpTransceiver } from 'werift';
import { SrtpSession } from '../media/srtp';
import { parseRtp, RTCP, writeRtpHeader, type RtpPacketView } from '../media/rtp';
import type { ReceptionReport } from '../media/mediaBridge';
import { dtlsTransportOf, PROFILE_AES128_CM_SHA1_80, stopRtcpReports, type CandidatePairLike, type IceConnectionLike, type SenderLike, type UdpTransportLike } from './weriftInternals';
import { threadSendBatch } from '../media/udpSendBatch';
import { authenticBindingRequest, isStunBindingRequest } from './stunAuth';

/**
 * The browser leg's per-packet audio path once ICE and DTLS are up.
 *
 * werift stays in charge of ICE (STUN checks and consent) and the DTLS handshake, but its RTP
 * and RTCP path cost more than the rest of a transcoded call: per packet it tries to parse the
 * datagram as STUN, parses the RTP header bit by bit into objects, builds a cipher object for
 * SRTP and allocates a promise per send (the media benchmark compares both paths in one run,
 * see README "Performance"). Here an audio packet goes from the UDP socket
 * through our SRTP (src/media/srtp: one long-lived keystream cipher) straight to the bridge, and
 * back the same way, with the keys werift's DTLS exported (RFC 5764 §4.2).
 *
 * It needs the SRTP profile our SRTP implements, SRTP_AES128_CM_HMAC_SHA1_80 (RFC 5764 §4.1.2,
 * mandatory for WebRTC — RFC 8827 §6.5), so the leg offers only that profile in DTLS
 * (restrictSrtpProfile in ./weriftInternals). When werift's internals are not what this module expects
 * (another werift version), {@link DirectSrtpPath.attach} returns the reason instead and the
 * leg keeps werift's own path: slower, never broken.
 *
 * RTCP to the browser is ours too, one compound packet about once a second through the same
 * SRTP session: a sender report (once we sent audio) or receiver report from the sender's SSRC,
 * with a reception report block when given a source of them (the media bridge's receive
 * statistics: werift's receiver no longer sees the browser's RTP, and the browser's Opus
 * encoder adds in-band FEC only when reports say packets are lost), and the SDES CNAME. werift's
 * own report loops are stopped: theirs would report stale figures, and two SRTCP senders on
 * one SSRC would reuse keystream.
 */

/** Seconds between 1900 (NTP epoch) and 1970 (Unix epoch). */
const NTP_EPOCH_OFFSET = 2208988800;
/** Reports every 0.5-1.5 s: werift's RTCP interval, randomised as RFC 3550 §6.3.1 asks. */
const REPORT_MIN_MS = 500;
const REPORT_SPREAD_MS = 1000;

export class DirectSrtpPath {
  /** Counters for this path (the bridge keeps the audio statistics). */
  /** `malformed`: packets that passed SRTP but are no RTP (a padding count past the payload) or no RTCP compound packet. */
  readonly counts = { received: 0, sent: 0, notSent: 0, rtcpReceived: 0, rtcpSent: 0, malformed: 0, stunRefused: 0 };
  private readonly restore: Array<() => void> = [];
  private closed = false;
  private reportTimer: NodeJS.Timeout | null = null;
  /** The RTP header of the packet being sent, written in place each time (SRTP copies it out). */
  private readonly header = Buffer.alloc(12);
  /** For our sender reports (RFC 3550 §6.4.1, with counts.sent): payload octets sent, and the last packet's RTP timestamp, payload type and time, to give the report's instant its RTP timestamp. */
  private readonly sentInfo = { octets: 0, rtpTimestamp: 0, payloadType: 0, atMs: 0 };
  /** The browser's latest sender report: its NTP time's middle 32 bits and when it came (LSR/DLSR). */
  private lastSr: { ssrc: number; ntpMiddle: number; atMs: number } | null = null;
  /**
   * A pair the browser nominated after the first (followNomination); null: werift's nominated
   * one. werift keeps the first nomination for good (RFC 8445 §7.3.1.5 as a full agent reads
   * it), but a browser whose network changed nominates a new pair from its new address, and the
   * old one is dead: audio sent there never arrives while the browser's still comes in (from
   * anywhere SRTP authenticates), so nothing would end the one-way call.
   */
  private selected: CandidatePairLike | null = null;
  /**
   * A pair nominated by an authenticated check, taken only once SRTP-authenticated audio comes
   * from its address too: a check can be replayed from anywhere by whoever saw it (its MAC does
   * not cover the source address; Chrome nominates in every check to an ICE-lite peer), audio
   * under the browser's keys cannot.
   */
  private proposed: CandidatePairLike | null = null;

  private constructor(
    private readonly srtp: SrtpSession,
    private readonly connection: IceConnectionLike,
    private readonly sender: SenderLike,
    private readonly clockRates: ReadonlyMap<number, number>,
    private readonly onPacket: (pkt: RtpPacketView) => void,
    private readonly receptionReport: (() => ReceptionReport | null) | undefined,
    private readonly logger: Logger,
  ) {}

  /**
   * Takes over audio RTP on the connected transceiver's sockets. Returns the path, or the reason
   * it cannot (then nothing was changed). With `receptionReport`, our reports carry its blocks.
   */
  static attach(transceiver: RTCRtpTransceiver, onPacket: (pkt: RtpPacketView) => void, logger: Logger, receptionReport?: () => ReceptionReport | null): DirectSrtpPath | { reason: string } {
    const t = dtlsTransportOf(transceiver);
    if (!t?.dtls || typeof t.dtls.extractSessionKeys !== 'function') return { reason: 'werift DTLS transport not reachable' };
    const profile = t.dtls.srtp?.srtpProfile;
    if (profile !== PROFILE_AES128_CM_SHA1_80) return { reason: `SRTP profile ${profile} negotiated, not AES128_CM_HMAC_SHA1_80` };
    const connection = t.iceTransport.connection;
    const transports = connection.protocols.map((p) => p.transport);
    if (transports.length === 0 || transports.some((u) => !u || typeof u.onData !== 'function' || typeof u.socket?.send !== 'function')) {
      return { reason: 'werift ICE sockets not reachable' };
    }
    const sender = transceiver.sender as unknown as SenderLike;
    if (typeof sender.ssrc !== 'number') return { reason: 'werift RTP sender not as expected' };
    const keys = t.dtls.extractSessionKeys(16, 14);
    const suite = 'AES_CM_128_HMAC_SHA1_80' as const;
    const srtp = new SrtpSession({ local: { tag: 1, suite, key: keys.localKey, salt: keys.localSalt }, remote: { tag: 1, suite, key: keys.remoteKey, salt: keys.remoteSalt } });
    // Last of the checks: from here on nothing fails, so werift's loops are not left stopped without us.
    const stopWeriftRtcp = stopRtcpReports(transceiver);
    if (!stopWeriftRtcp) return { reason: 'werift RTCP report loops not as expected' };
    const clockRates = new Map((transceiver.codecs ?? []).map((c) => [c.payloadType, c.clockRate] as const));
    const path = new DirectSrtpPath(srtp, connection, sender, clockRates, onPacket, receptionReport, logger);
    path.restore.push(stopWeriftRtcp);
    for (const udp of transports as UdpTransportLike[]) {
      const werift = udp.onData;
      // RFC 7983 demultiplexing: first byte 128–191 is RTP or RTCP (PT 192–223, RFC 5761) and
      // ours; STUN and DTLS stay with werift. Media is taken from whatever source address passes
      // SRTP authentication (only the browser holds its keys), as werift's path did; the media
      // bench's load generator sends from a socket of its own (bench/loadGenSender.ts) and
      // relies on it.
      udp.onData = (data, addr) => {
        if (data.length < 12 || (data[0] & 0xc0) !== 0x80) {
          if (!isStunBindingRequest(data)) { werift(data, addr); return; }
          // A connectivity check: only the browser's (our ICE credentials, stunAuth.ts) reaches
          // werift, and only one that nominates (USE-CANDIDATE) moves our audio to its pair.
          const check = authenticBindingRequest(data, connection.localUsername ?? '', connection.localPassword ?? '');
          if (!check) { path.counts.stunRefused++; return; }
          werift(data, addr);
          if (check.useCandidate) path.followNomination(addr);
        } else if (data[1] >= 192 && data[1] <= 223) path.receiveRtcp(data);
        else path.receive(data, addr);
      };
      path.restore.push(() => { udp.onData = werift; });
    }
    path.scheduleReport();
    logger.debug({ transports: transports.length }, 'browser audio on the direct SRTP path');
    return path;
  }

  get srtpStats(): { authFailures: number; replays: number; malformed: number } {
    return this.srtp.stats;
  }

  /** Packets from the network this path dropped: refused by SRTP (forged, replayed, malformed) or malformed inside. */
  get dropped(): number {
    const s = this.srtp.stats;
    return s.authFailures + s.replays + s.malformed + this.counts.malformed;
  }

  /** The pair audio and reports go over: the one the browser nominated last. */
  private get pair(): CandidatePairLike | undefined {
    return this.selected ?? this.connection.nominated;
  }

  /**
   * After an authenticated STUN request with USE-CANDIDATE from `addr`, which werift has just
   * marked nominated: if that pair is not the one in use, it is proposed, and audio goes there
   * once the browser's own audio comes from it (see `proposed`; ICE-lite: the controlling
   * browser's latest nomination is its choice). A later ordinary check (consent) on an older
   * pair moves nothing.
   */
  private followNomination(addr: unknown): void {
    if (this.closed || !Array.isArray(addr)) return;
    const current = this.pair;
    if (current && current.remoteAddr[0] === addr[0] && current.remoteAddr[1] === addr[1]) { this.proposed = null; return; }
    const moved = this.connection.checkList?.find((p) => p.nominated && p.remoteAddr[0] === addr[0] && p.remoteAddr[1] === addr[1]);
    if (!moved) return;
    this.proposed = moved;
  }

  /** One audio packet to the browser, over the pair the browser nominated. */
  send(pkt: RtpPacketView): void {
    const pair = this.pair;
    const udp = pair?.protocol.transport;
    if (this.closed || !pair || !udp || this.connection.state === 'closed' || this.connection.state === 'failed') { this.counts.notSent++; return; }
    const header = writeRtpHeader(this.header, pkt.payloadType, pkt.sequenceNumber, pkt.timestamp, this.sender.ssrc, pkt.marker);
    const wire = this.srtp.protectRtpParts(header, 12, pkt.payload);
    // Sent at the end of this event-loop turn with the turn's other packets (udpSendBatch.ts). If
    // werift closes the socket before that (the leg is going away), the batch drops it.
    threadSendBatch.send(udp.socket, wire, pair.remoteAddr[1], pair.remoteAddr[0]);
    this.counts.sent++;
    const s = this.sentInfo;
    s.octets = (s.octets + pkt.payload.length) >>> 0;
    s.rtpTimestamp = pkt.timestamp;
    s.payloadType = pkt.payloadType;
    s.atMs = performance.now();
  }

  /** Hands werift's sockets (and its report loops) back; the peer connection closes them. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    // Our audio still waiting in this turn's batch would find werift's socket closed (it closes
    // it right after us, before an addressed send resolves its address): not sent, so not counted.
    const socket = this.pair?.protocol.transport?.socket;
    if (socket) {
      const n = threadSendBatch.discard(socket);
      this.counts.sent -= n;
      this.counts.notSent += n;
    }
    if (this.reportTimer) clearTimeout(this.reportTimer);
    this.reportTimer = null;
    for (const r of this.restore) r();
    this.restore.length = 0;
  }

  private receive(data: Buffer, from: readonly [string, number]): void {
    if (this.closed) return;
    const plain = this.srtp.unprotectRtp(data); // failures are counted in srtp.stats
    if (!plain) return;
    const pkt = parseRtp(plain);
    if (!pkt) { this.counts.malformed++; return; }
    this.counts.received++;
    const p = this.proposed;
    if (p !== null && p.remoteAddr[0] === from[0] && p.remoteAddr[1] === from[1]) {
      this.logger.info({ from: this.pair?.remoteAddr, to: p.remoteAddr }, 'browser nominated another ICE pair and sends audio there: ours follows');
      this.selected = p;
      this.proposed = null;
    }
    this.onPacket(pkt);
  }

  /**
   * The browser's RTCP (receiver and sender reports) is authenticated and counted, and its
   * sender reports' times kept for our receiver reports; then it is dropped: the bridge
   * measures the browser's stream itself, and werift's RTCP handling (a cipher object and a
   * dozen objects per packet) cost more than all the rest of its remaining work.
   */
  private receiveRtcp(data: Buffer): void {
    if (this.closed) return;
    const plain = this.srtp.unprotectRtcp(data);
    if (!plain) return;
    // A compound packet (RFC 3550 §6.1) whose lengths add up to the datagram's; else malformed.
    let off = 0;
    while (off + 4 <= plain.length) off += (plain.readUInt16BE(off + 2) + 1) * 4;
    if (off !== plain.length || plain.length < 8) { this.counts.malformed++; return; }
    this.counts.rtcpReceived++;
    // The SR's NTP timestamp, middle 32 bits, is our LSR.
    for (let off = 0; off + 8 <= plain.length; off += (plain.readUInt16BE(off + 2) + 1) * 4) {
      if (plain[off + 1] === RTCP.SR && off + 16 <= plain.length) {
        this.lastSr = { ssrc: plain.readUInt32BE(off + 4), ntpMiddle: plain.readUInt32BE(off + 10), atMs: performance.now() };
      }
    }
  }

  private scheduleReport(): void {
    this.reportTimer = setTimeout(() => {
      try {
        this.sendReport();
      } catch {
        // The socket closed under us: the leg is going away (a throw here would be uncaught).
      }
      if (!this.closed) this.scheduleReport();
    }, REPORT_MIN_MS + Math.random() * REPORT_SPREAD_MS);
    this.reportTimer.unref();
  }

  /**
   * One compound RTCP packet (RFC 3550 §6.1; werift's answer does not offer reduced-size RTCP):
   * SR once we have sent audio, else RR (§6.4), from the sender's SSRC, with a report block about
   * the browser's audio when there is one; then SDES with the CNAME our SDP announced.
   */
  private sendReport(): void {
    const pair = this.pair;
    const udp = pair?.protocol.transport;
    if (this.closed || !pair || !udp || this.connection.state === 'closed' || this.connection.state === 'failed') return;
    const r = this.receptionReport?.() ?? null; // pulled only when sent: it starts the next fraction-lost interval
    const ssrc = this.sender.ssrc >>> 0;
    const s = this.sentInfo;
    const isSr = this.counts.sent > 0;
    const reportLength = (isSr ? 28 : 8) + (r ? 24 : 0);
    const cname = typeof this.sender.cname === 'string' ? Buffer.from(this.sender.cname).subarray(0, 255) : null;
    // SDES: header, chunk SSRC, CNAME item (type, length, text), 1-4 zero bytes to a 32-bit boundary.
    const sdesLength = cname ? 8 + ((cname.length + 6) & ~3) : 0;
    const out = Buffer.alloc(reportLength + sdesLength);
    out[0] = 0x80 | (r ? 1 : 0); // V=2, report count
    out[1] = isSr ? RTCP.SR : RTCP.RR;
    out.writeUInt16BE(reportLength / 4 - 1, 2);
    out.writeUInt32BE(ssrc, 4);
    let at = 8;
    if (isSr) {
      // The NTP time of this instant and the RTP timestamp of the same instant, extrapolated from
      // the last packet sent at its payload type's clock rate.
      const wallMs = Date.now();
      out.writeUInt32BE(Math.floor(wallMs / 1000) + NTP_EPOCH_OFFSET, 8);
      out.writeUInt32BE(Math.floor(((wallMs % 1000) / 1000) * 2 ** 32) >>> 0, 12);
      const clockRate = this.clockRates.get(s.payloadType) ?? 48000;
      out.writeUInt32BE((s.rtpTimestamp + Math.round(((performance.now() - s.atMs) * clockRate) / 1000)) >>> 0, 16);
      out.writeUInt32BE(this.counts.sent >>> 0, 20);
      out.writeUInt32BE(s.octets, 24);
      at = 28;
    }
    if (r) {
      out.writeUInt32BE(r.ssrc >>> 0, at);
      const lost = Math.max(-0x800000, Math.min(0x7fffff, r.cumulativeLost)); // 24-bit signed
      out.writeUInt32BE(((Math.min(255, Math.max(0, r.fractionLost)) << 24) | (lost & 0xffffff)) >>> 0, at + 4);
      out.writeUInt32BE(r.extendedHighestSeq >>> 0, at + 8);
      out.writeUInt32BE(Math.max(0, r.jitter) >>> 0, at + 12);
      const sr = this.lastSr?.ssrc === r.ssrc ? this.lastSr : null;
      if (sr) {
        out.writeUInt32BE(sr.ntpMiddle, at + 16);
        out.writeUInt32BE(Math.min(0xffffffff, Math.round(((performance.now() - sr.atMs) / 1000) * 65536)), at + 20); // DLSR, 1/65536 s
      }
    }
    if (cname) {
      const d = reportLength;
      out[d] = 0x81; // V=2, one chunk
      out[d + 1] = RTCP.SDES;
      out.writeUInt16BE(sdesLength / 4 - 1, d + 2);
      out.writeUInt32BE(ssrc, d + 4);
      out[d + 8] = 1; // CNAME
      out[d + 9] = cname.length;
      cname.copy(out, d + 10);
    }
    udp.socket.send(this.srtp.protectRtcp(out), pair.remoteAddr[1], pair.remoteAddr[0]); // rtcp-mux: the RTP pair
    this.counts.rtcpSent++;
  }
}
