import type { Logger } from 'pino';
import type { RTCRtpTransceiver } from 'werift';
import { SrtpSession } from '../media/srtp';
import { buildRtp, parseRtp, type RtpPacketView } from '../media/rtp';
import { dtlsTransportOf, PROFILE_AES128_CM_SHA1_80, type IceConnectionLike, type SenderLike, type UdpTransportLike } from './weriftInternals';

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
 */

/** Sender-report fields are refreshed every this many packets (werift sends SRs every 0.5–1.5 s). */
const SR_REFRESH_PACKETS = 16;
/** Seconds between 1900 (NTP epoch) and 1970 (Unix epoch). */
const NTP_EPOCH_OFFSET = 2208988800;

export class DirectSrtpPath {
  /** Counters for this path (the bridge keeps the audio statistics). */
  readonly counts = { received: 0, sent: 0, notSent: 0, rtcpReceived: 0 };
  private readonly restore: Array<() => void> = [];
  private closed = false;

  private constructor(
    private readonly srtp: SrtpSession,
    private readonly connection: IceConnectionLike,
    private readonly sender: SenderLike,
    private readonly onPacket: (pkt: RtpPacketView) => void,
  ) {}

  /**
   * Takes over audio RTP on the connected transceiver's sockets. Returns the path, or the reason
   * it cannot (then nothing was changed).
   */
  static attach(transceiver: RTCRtpTransceiver, onPacket: (pkt: RtpPacketView) => void, logger: Logger): DirectSrtpPath | { reason: string } {
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
    if (typeof sender.ssrc !== 'number' || typeof sender.runRtcp !== 'function') return { reason: 'werift RTP sender not as expected' };
    const keys = t.dtls.extractSessionKeys(16, 14);
    const suite = 'AES_CM_128_HMAC_SHA1_80' as const;
    const srtp = new SrtpSession({ local: { tag: 1, suite, key: keys.localKey, salt: keys.localSalt }, remote: { tag: 1, suite, key: keys.remoteKey, salt: keys.remoteSalt } });
    const path = new DirectSrtpPath(srtp, connection, sender, onPacket);
    for (const udp of transports as UdpTransportLike[]) {
      const werift = udp.onData;
      // RFC 7983 demultiplexing: first byte 128–191 is RTP or RTCP (PT 192–223, RFC 5761) and
      // ours; STUN and DTLS stay with werift.
      udp.onData = (data, addr) => {
        if (data.length < 12 || (data[0] & 0xc0) !== 0x80) werift(data, addr);
        else if (data[1] >= 192 && data[1] <= 223) path.receiveRtcp(data);
        else path.receive(data);
      };
      path.restore.push(() => { udp.onData = werift; });
    }
    logger.debug({ transports: transports.length }, 'browser audio on the direct SRTP path');
    return path;
  }

  get srtpStats(): { authFailures: number; replays: number; malformed: number } {
    return this.srtp.stats;
  }

  /** One audio packet to the browser, over the pair the browser nominated. */
  send(pkt: RtpPacketView): void {
    const pair = this.connection.nominated;
    const udp = pair?.protocol.transport;
    if (this.closed || !pair || !udp || this.connection.state === 'closed' || this.connection.state === 'failed') { this.counts.notSent++; return; }
    const ssrc = this.sender.ssrc;
    const plain = buildRtp(pkt.payloadType, pkt.sequenceNumber, pkt.timestamp, ssrc, pkt.payload, pkt.marker);
    const wire = this.srtp.protectRtp(plain);
    udp.socket.send(wire, pair.remoteAddr[1], pair.remoteAddr[0]);
    this.counts.sent++;
    this.updateSenderReport(pkt, pkt.payload.length);
  }

  /** Hands werift's sockets back (the peer connection closes them). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const r of this.restore) r();
    this.restore.length = 0;
  }

  private receive(data: Buffer): void {
    if (this.closed) return;
    const plain = this.srtp.unprotectRtp(data); // failures are counted in srtp.stats
    if (!plain) return;
    const pkt = parseRtp(plain);
    if (!pkt) return;
    this.counts.received++;
    this.onPacket(pkt);
  }

  /**
   * The browser's RTCP (receiver and sender reports) is authenticated and counted, then dropped:
   * the bridge measures the browser's stream itself, and werift's RTCP handling (a cipher
   * object and a dozen objects per packet) cost more than all the rest of its remaining work.
   */
  private receiveRtcp(data: Buffer): void {
    if (this.closed) return;
    if (this.srtp.unprotectRtcp(data)) this.counts.rtcpReceived++;
  }

  /**
   * werift's sender writes RTCP sender reports from these fields (the browser derives RTT and
   * its remote-inbound statistics from them); it starts doing so on its first packet.
   */
  private updateSenderReport(pkt: RtpPacketView, payloadBytes: number): void {
    const s = this.sender;
    s.packetCount = (s.packetCount + 1) >>> 0;
    s.octetCount = (s.octetCount + payloadBytes) >>> 0;
    if (this.counts.sent % SR_REFRESH_PACKETS !== 1) return;
    // The NTP time and RTP timestamp of the same instant (RFC 3550 §6.4.1).
    const ms = Date.now();
    const seconds = Math.floor(ms / 1000) + NTP_EPOCH_OFFSET;
    const fraction = Math.floor(((ms % 1000) / 1000) * 2 ** 32);
    s.ntpTimestamp = (BigInt(seconds) << 32n) | BigInt(fraction);
    s.rtpTimestamp = pkt.timestamp;
    if (this.counts.sent === 1) void s.runRtcp().catch(() => undefined);
  }
}
