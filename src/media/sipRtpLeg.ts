import { EventEmitter } from 'node:events';
import { randomInt } from 'node:crypto';
import type dgram from 'node:dgram';
import type { Logger } from 'pino';
import { SrtpSession, type SdesCrypto } from './srtp';
import { buildRtp, isRtcp, isStunOrKeepalive, parseRtp, RTCP, writeRtpHeader, type RtpPacketView } from './rtp';
import { estimateMos, ReceiveStats, type LegStats } from './stats';
import { DigitSequence, DtmfReceiver, LiveTelephoneEvent, LiveToneDigit, digitToEvent, dtmfPacketTrain } from './dtmf';
import { pcmaEncode, pcmaToPcmu, pcmuEncode, pcmuToPcma } from './codecs/g711';
import { threadSendBatch } from './udpSendBatch';

export interface SipLegRemote {
  address: string;
  port: number;
  rtcpPort?: number;
  rtcpMux?: boolean;
  codec: 'PCMU' | 'PCMA' | 'opus';
  payloadType: number;
  ptime?: number;
  telephoneEventPayloadType?: number;
  /** That telephone-event format's clock rate (8000 unless negotiated otherwise, e.g. 48000 beside Opus). */
  telephoneEventClockRate?: number;
  /**
   * Every telephone-event format the SDP kept (an answer to our Opus offer may keep /8000 and
   * /48000): digits are read from any of them, each on its own clock. We send on the one above.
   */
  telephoneEvents?: Array<{ payloadType: number; clockRate: number }>;
  srtp?: { local: SdesCrypto; remote: SdesCrypto };
  direction?: 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';
  /**
   * The payload type of the other G.711 law (PCMA beside PCMU, or PCMU beside PCMA), when the
   * far end's SDP listed it too: an answerer may send any format
   * of its answer (RFC 3264 §6.1); an offerer we answered with one law should not, but one that
   * does is heard rather than dropped. Its packets are converted to `codec`'s law before anyone
   * sees them (the bridge handles one codec). G.711 only: both laws share the clock and the
   * frame, and the conversion is a table lookup per byte.
   */
  otherLawPayloadType?: number;
}

export interface SipLegEvents {
  /** Decrypted audio from the trunk (the leg's own PT already checked). */
  audio: [pkt: RtpPacketView];
  /** A packet of the stream that is not audio (telephone-event, comfort noise): it takes a sequence number. */
  nonAudio: [pkt: RtpPacketView];
  /** A digit from the far end, at its first packet. */
  dtmf: [ev: { digit: string; durationMs: number }];
  /** The same digit once its length is known (end packet, or its packets stopped): for a relay. */
  dtmfEnd: [ev: { digit: string; durationMs: number }];
  /** setRemote() took new parameters (a re-INVITE): the bridge follows a codec change. */
  remote: [];
  inactive: [];
  closed: [];
}

const RTCP_INTERVAL_MS = 5000;
/** Seconds between 1900-01-01 and 1970-01-01 (NTP epoch offset). */
const NTP_OFFSET = 2208988800;

/**
 * The RTP leg toward the SIP side: one RTP/RTCP socket pair from the allocator, plain RTP or
 * SDES-SRTP, symmetric RTP (latching onto where valid media really comes from), RTCP SR/RR
 * every 5 s, RFC 4733 DTMF both ways, an inactivity event and statistics. Owned by a call; the
 * sockets and port go back to the allocator on close().
 */
export class SipRtpLeg extends EventEmitter<SipLegEvents> {
  remote: SipLegRemote | null = null;
  private dest: { address: string; port: number; rtcpPort: number } | null = null;
  private srtp: SrtpSession | null = null;
  private readonly ssrc = randomInt(1, 0xffffffff);
  private seq = randomInt(0, 0xffff);
  private ts = randomInt(0, 0x7fffffff);
  private readonly rx = new ReceiveStats(8000);
  /** The audio codec's RTP clock: 8 kHz for G.711, 48 kHz for Opus (RFC 7587). */
  private clockRate = 8000;
  private remoteSsrc: number | null = null;
  /** Packets refused by an SRTP session since replaced by plain RTP (a re-INVITE). */
  private droppedBySrtp = 0;
  /** A source that may replace remoteSsrc, and its last sequence number (acceptSource). */
  private ssrcCandidate: { ssrc: number; seq: number } | null = null;
  /** Whether a packet in the other G.711 law was logged (see toOwnLaw). */
  private loggedOtherLaw = false;
  private latched = false;
  private rtpConnected: 'no' | 'connecting' | 'yes' = 'no';
  private sent = { packets: 0, bytes: 0 };
  private dropped = 0;
  /** performance.now() of the last valid packet (monotonic; one clock read per packet serves the jitter stats too). */
  private lastRxAt = performance.now();
  private inactivityTimer: NodeJS.Timeout | null = null;
  private rtcpTimer: NodeJS.Timeout | null = null;
  private rttMs: number | null = null;
  private lastSrNtpMiddle = 0;
  private lastSrArrival = 0;
  private readonly dtmfRx: DtmfReceiver;
  /** Digits toward the trunk, one after another; while one plays, its events or tones replace the audio. */
  private readonly digits = new DigitSequence((digit, durationMs) => this.startDtmf(digit, durationMs));
  /**
   * A digit whose length is not known yet (relayed while it is pressed, beginLiveDtmf) or whose
   * tones are playing: until its last end packet or pause frame has left.
   */
  private liveDtmf: LiveTelephoneEvent | LiveToneDigit | null = null;
  /**
   * A relayed digit pressed while the one before was still playing (its end packets, its tones'
   * pause): a fast dialler's next key, started live as soon as that one is done.
   */
  private nextLiveDigit: string | null = null;
  private readonly headerScratch = Buffer.alloc(12);
  private pausedAt: number | null = null;
  /** Packets made while the RTP socket was connecting (dgram takes none then). */
  private readonly waitingForConnect: Array<{ out: Buffer; bytes: number }> = [];
  /** The next audio packet starts a talkspurt (RFC 3551 §4.1: marker set), as after a hold. */
  private markNext = false;
  closed = false;

  constructor(
    readonly localAddress: string,
    readonly localPort: number,
    private readonly rtpSocket: dgram.Socket,
    private readonly rtcpSocket: dgram.Socket,
    private readonly opts: { logger: Logger; inactivityTimeoutMs: number; onClose(): void },
  ) {
    super();
    this.dtmfRx = new DtmfReceiver(
      (digit, durationMs) => this.emit('dtmf', { digit, durationMs }),
      8000,
      (digit, durationMs) => { if (!this.closed) this.emit('dtmfEnd', { digit, durationMs }); },
    );
    rtpSocket.on('message', (msg, rinfo) => this.onRtpDatagram(msg, rinfo));
    rtcpSocket.on('message', (msg, rinfo) => this.onRtcpDatagram(msg, rinfo.address));
    rtpSocket.on('error', (err: NodeJS.ErrnoException) => {
      // A failed connect() leaves the socket unconnected: send with an address again.
      if (err.syscall === 'connect' && this.rtpConnected === 'connecting') this.rtpConnected = 'no';
      opts.logger.debug({ err: err.message }, 'RTP socket error');
    });
    rtcpSocket.on('error', (err) => opts.logger.debug({ err: err.message }, 'RTCP socket error'));
  }

  /** The far end's media parameters, from its SDP; may change with a re-INVITE. */
  setRemote(remote: SipLegRemote): void {
    if (this.closed) return;
    const moved = !this.remote || this.remote.address !== remote.address || this.remote.port !== remote.port;
    this.remote = remote;
    this.clockRate = remote.codec === 'opus' ? 48000 : 8000;
    this.rx.setClockRate(this.clockRate);
    if (moved) {
      this.dest = { address: remote.address, port: remote.port, rtcpPort: remote.rtcpMux ? remote.port : remote.rtcpPort ?? remote.port + 1 };
      this.latched = false;
      // Media from a new address (a transfer) is a new source: its first packet is taken.
      if (this.remoteSsrc !== null) this.rx.resetSource();
      this.remoteSsrc = null;
      this.ssrcCandidate = null;
      this.disconnectRtp();
    } else if (this.dest) {
      // Same RTP address, but a=rtcp or rtcp-mux may have changed: RTCP follows (to the port
      // after a latched source's, as when it latched).
      const signalled = this.dest.address === remote.address && this.dest.port === remote.port;
      this.dest.rtcpPort = remote.rtcpMux ? this.dest.port : signalled ? remote.rtcpPort ?? remote.port + 1 : this.dest.port + 1;
    }
    // Keep each direction's SRTP context (and its rollover counter) across re-INVITEs unless
    // that direction's key changes.
    if (!remote.srtp) {
      this.droppedBySrtp += this.srtpDropped(); // a move to plain RTP keeps what SRTP refused in the counts
      this.srtp = null;
    } else if (this.srtp) this.srtp.updateKeys(remote.srtp);
    else this.srtp = new SrtpSession(remote.srtp);
    this.lastRxAt = performance.now();
    if (!this.inactivityTimer && this.opts.inactivityTimeoutMs > 0) {
      const check = Math.min(1000, this.opts.inactivityTimeoutMs);
      this.inactivityTimer = setInterval(() => this.checkInactivity(), check);
    }
    if (!this.rtcpTimer) this.rtcpTimer = setInterval(() => this.sendReport(), RTCP_INTERVAL_MS);
    this.emit('remote');
  }

  /** SipLegHandle's events (plane.ts). */
  onInactive(listener: () => void): void {
    this.on('inactive', listener);
  }

  /** A leg in this thread fails only with its whole process: nothing to report. */
  onFailed(_listener: (reason: string) => void): void {}

  get sendingAllowed(): boolean {
    const d = this.remote?.direction ?? 'sendrecv';
    return !!this.dest && (d === 'sendrecv' || d === 'recvonly') && this.dest.address !== '0.0.0.0';
  }

  /** Held (by either side): no audio is bridged and no inactivity is reported. */
  get paused(): boolean {
    return this.pausedAt !== null;
  }

  /**
   * On resume the timeline moves on by the time held, so the far end's jitter estimate and our
   * sender reports' RTP/NTP mapping see no jump, and the first packet carries the marker.
   */
  set paused(on: boolean) {
    if (on === this.paused) return;
    if (on) { this.pausedAt = performance.now(); return; }
    const heldMs = performance.now() - this.pausedAt!;
    this.pausedAt = null;
    this.ts = (this.ts + Math.round((heldMs * this.clockRate) / 1000)) >>> 0;
    this.markNext = true;
  }

  /** Send one audio frame (payload in the negotiated codec); `samples` advances the timestamp. */
  sendAudio(payload: Uint8Array, samples: number, marker = false): void {
    if (this.closed || !this.remote) return;
    // While a DTMF event plays, its packets replace audio (RFC 4733 §2.5.1.2) and the event
    // already took this stretch of the timeline (sendDtmf): the frame uses no number, no time.
    if (this.digits.playing) return;
    // Not sending (held, or no address): time goes on, sequence numbers do not, so the far end
    // sees no loss when we resume.
    if (!this.sendingAllowed) { this.ts = (this.ts + samples) >>> 0; return; }
    const seq = this.seq;
    const ts = this.ts;
    this.seq = (this.seq + 1) & 0xffff;
    this.ts = (this.ts + samples) >>> 0;
    this.sendPacket(this.remote.payloadType, seq, ts, payload, marker || this.markNext);
    this.markNext = false;
  }

  /**
   * `count` frames of `samples` each that the far end will not get (lost before they reached
   * us): their sequence numbers and time are left out, so its jitter buffer sees the gap and
   * conceals it instead of playing on as if nothing was missing.
   */
  skipFrames(count: number, samples: number): void {
    // A digit playing owns this stretch of the timeline (its packets replace the audio): a
    // gap here would open a hole inside it.
    if (this.digits.playing) return;
    this.seq = (this.seq + count) & 0xffff;
    this.ts = (this.ts + count * samples) >>> 0;
  }

  /**
   * A digit toward the trunk: RFC 4733 events where a telephone-event PT was negotiated, else
   * in-band tones on a G.711 trunk (false on an Opus trunk without events). A digit asked for
   * while another is being sent waits for it to end: two trains interleaved would have the
   * second event start before the first ended, which receivers tracking one event at a time
   * (§2.5) read as duplicated or cut digits. Throws for a character that is not a digit.
   */
  sendDtmf(digit: string, durationMs = 100): boolean {
    digitToEvent(digit); // a bad digit throws here, not later in a timer
    if (this.closed || !this.canSendDtmf || !this.sendingAllowed) return false;
    return this.digits.push(digit, durationMs);
  }

  /**
   * A digit relayed from the browser while it is pressed: RFC 4733 events toward the trunk from
   * now until endLiveDtmf gives its length, or on a G.711 trunk without telephone-event its
   * tones in the audio (audio meanwhile is replaced, as for sendDtmf). A digit pressed while the
   * previous live one still plays starts as soon as that one is done. False when it cannot go
   * live — an Opus trunk without events, digits of sendDtmf playing or waiting, not sending:
   * the caller then sends the digit with sendDtmf once its length is known.
   */
  beginLiveDtmf(digit: string): boolean {
    const r = this.remote;
    if (this.closed || !r || !this.canSendDtmf || !this.sendingAllowed) return false;
    if (!this.digits.idle) {
      if (!this.liveDtmf || this.nextLiveDigit !== null || this.digits.waitingCount > 0) return false;
      this.nextLiveDigit = digit;
      return true;
    }
    if (r.telephoneEventPayloadType === undefined) { this.startToneDigit(digit, null); return true; }
    const clock = r.telephoneEventClockRate ?? 8000;
    this.digits.busyUntil = Infinity; // until it ends
    this.liveDtmf = new LiveTelephoneEvent(digit, clock, {
      nextTimestamp: () => this.ts,
      sendEvent: (payload, marker, eventTs) => {
        // Not sendable meanwhile (held, c=0.0.0.0): the event's stretch is on the timeline anyway.
        const pt = this.eventPayloadTypeAt(clock);
        if (this.closed || !this.sendingAllowed || pt === undefined) return;
        this.sendPacket(pt, this.seq, eventTs, payload, marker);
        this.seq = (this.seq + 1) & 0xffff;
      },
      eventEnded: (eventTs, ms) => {
        // Audio was held back without taking time: the timeline goes on where the event ends,
        // plus the 40 ms its end packets still take (audio waits for them), as for sendDtmf.
        this.ts = (eventTs + (Math.ceil(ms / 20) * 20 + 40) * (this.clockRate / 1000)) >>> 0;
      },
      // Busy until its last end packet has left (not a time guessed for it: a digit started in
      // between would find this one still about to clear the busy time and the slot).
    }, () => this.liveDigitDone());
    return true;
  }

  /**
   * Time that passed with nothing sent and nothing lost: a browser digit that could not go live
   * (beginLiveDtmf false) goes to the trunk only once it ended, and took that long while its key
   * was down. The timeline moves on,
   * the numbers do not, the next packet is marked. Not while a digit plays: its stretch covers
   * that time already.
   */
  advanceTimeline(ms: number): void {
    if (this.closed || this.digits.playing) return;
    this.ts = (this.ts + Math.round((ms * this.clockRate) / 1000)) >>> 0;
    this.markNext = true;
  }

  /** The relayed digit ended after `durationMs` (see beginLiveDtmf). */
  endLiveDtmf(durationMs: number): void {
    const waiting = this.nextLiveDigit;
    if (waiting === null) { this.liveDtmf?.end(durationMs); return; }
    // It ended before the one ahead of it was done: it plays after it, with its length known.
    this.nextLiveDigit = null;
    this.digits.push(waiting, durationMs);
  }

  /**
   * The payload type a digit begun on telephone-event at `clockRate` goes on with: the one the
   * far end's SDP gives now at that clock (a re-INVITE mid-digit may renumber it); none when it
   * no longer has one (its receiver then ends the digit by its own timeout).
   */
  private eventPayloadTypeAt(clockRate: number): number | undefined {
    const r = this.remote;
    if (!r) return undefined;
    if (r.telephoneEventPayloadType !== undefined && (r.telephoneEventClockRate ?? 8000) === clockRate) return r.telephoneEventPayloadType;
    return r.telephoneEvents?.find((e) => e.clockRate === clockRate)?.payloadType;
  }

  /** Digits can go to the trunk: events negotiated, or G.711 to carry them as tones. */
  get canSendDtmf(): boolean {
    return this.remote !== null && (this.remote.telephoneEventPayloadType !== undefined || this.remote.codec !== 'opus');
  }

  /** One digit now (DigitSequence's start): false when it can no longer go (held, no way to send digits). */
  private startDtmf(digit: string, durationMs: number): boolean {
    if (this.closed || !this.canSendDtmf || !this.sendingAllowed) return false;
    if (this.remote!.telephoneEventPayloadType === undefined) { this.startToneDigit(digit, durationMs); return true; }
    const clock = this.remote!.telephoneEventClockRate ?? 8000;
    const eventTs = this.ts;
    // Durations count the telephone-event clock's ticks; the timestamps are the stream's own.
    const train = dtmfPacketTrain(digit, durationMs, clock);
    const lastDelay = train[train.length - 1].delayMs;
    this.digits.busyUntil = performance.now() + lastDelay + 20;
    for (const p of train) {
      const send = () => {
        const pt = this.eventPayloadTypeAt(clock);
        if (this.closed || !this.sendingAllowed || pt === undefined) return; // held meanwhile: as for a live event
        this.sendPacket(pt, this.seq, eventTs, p.payload, p.marker);
        this.seq = (this.seq + 1) & 0xffff;
      };
      if (p.delayMs === 0) send();
      else this.digits.later(p.delayMs, send);
    }
    // The event occupies its stretch of the timeline (audio frames meanwhile are not sent).
    this.ts = (this.ts + ((lastDelay + 20) * this.clockRate) / 1000) >>> 0;
    // The next waiting digit starts where this one's stretch ends.
    this.digits.later(lastDelay + 20, () => this.digits.next());
    return true;
  }

  /**
   * The digit as tones in the audio itself (no telephone-event toward this trunk): G.711 frames
   * of the trunk's ptime sent in time, replacing the bridge's audio while they play (sendAudio
   * holds back then), with their own sequence numbers and timestamps so the timeline stays
   * continuous. `durationMs` null: the length comes with endLiveDtmf (a digit still pressed).
   */
  private startToneDigit(digit: string, durationMs: number | null): void {
    // Frames of the trunk's ptime, like the bridge's audio around them.
    const frameSamples = sipFrameSamplesFor(this.remote!.ptime);
    this.digits.busyUntil = Infinity; // until its pause has gone
    const tones = new LiveToneDigit(digit, frameSamples, {
      sendFrame: (pcm, first) => {
        // Held: nothing goes, and the resume adds the whole time held (the paused setter).
        if (this.closed || !this.remote || this.paused) return;
        // Not sendable meanwhile (the trunk holds, moved to Opus): the frame is not sent but
        // its time passes, as in sendAudio, so the timeline stays with the clock.
        if (!this.sendingAllowed || this.remote.codec === 'opus') {
          this.ts = (this.ts + (frameSamples * this.clockRate) / 8000) >>> 0;
          return;
        }
        const g711 = this.remote.codec === 'PCMA' ? pcmaEncode(pcm) : pcmuEncode(pcm);
        this.sendPacket(this.remote.payloadType, this.seq, this.ts, g711, first || this.markNext); // marked after a hold, as audio is
        this.markNext = false;
        this.seq = (this.seq + 1) & 0xffff;
        this.ts = (this.ts + frameSamples) >>> 0;
      },
      done: () => this.liveDigitDone(),
    });
    this.liveDtmf = tones;
    if (durationMs !== null) tones.end(durationMs);
  }

  /** A live digit's last packet has left: audio goes on, and the next waiting digit starts. */
  private liveDigitDone(): void {
    this.liveDtmf = null;
    this.digits.busyUntil = 0;
    const next = this.nextLiveDigit;
    this.nextLiveDigit = null;
    if (next !== null && this.beginLiveDtmf(next)) return;
    this.digits.next();
  }

  /**
   * One RTP packet toward the trunk. With SRTP the header goes into a scratch buffer and the
   * protected packet is the only one allocated (not a plain packet first for SRTP to copy).
   */
  private sendPacket(pt: number, seq: number, ts: number, payload: Uint8Array, marker: boolean): void {
    let out: Buffer;
    if (this.srtp) {
      writeRtpHeader(this.headerScratch, pt, seq, ts, this.ssrc, marker);
      try { out = this.srtp.protectRtpParts(this.headerScratch, 12, payload); } catch { this.dropped++; return; }
    } else {
      out = buildRtp(pt, seq, ts, this.ssrc, payload, marker);
    }
    if (this.rtpConnected === 'connecting') {
      // dgram refuses sends while it connects (a tick): the packet waits for the outcome.
      if (this.waitingForConnect.length < 8) this.waitingForConnect.push({ out, bytes: payload.length });
      else this.dropped++;
      return;
    }
    this.transmit(out, payload.length);
  }

  private transmit(out: Buffer, payloadBytes: number): void {
    const d = this.dest!;
    if (this.rtpConnected === 'yes') threadSendBatch.send(this.rtpSocket, out);
    else threadSendBatch.send(this.rtpSocket, out, d.port, d.address);
    this.sent.packets++;
    this.sent.bytes += payloadBytes;
  }

  /** Packets made while the socket connected leave once it has (or has not). */
  private sendWaiting(): void {
    const waiting = this.waitingForConnect.splice(0);
    if (this.closed || !this.dest) return;
    for (const w of waiting) this.transmit(w.out, w.bytes);
  }

  /**
   * Once latched, the RTP socket is connect()ed to the far end: the kernel then drops datagrams
   * from anyone else (the latching policy, enforced for free) and each send skips the address
   * handling — measured here, half the CPU of an unconnected send.
   */
  private connectRtp(address: string, port: number): void {
    if (this.rtpConnected !== 'no' || this.closed) return;
    // Packets already queued for this socket carry an address: they leave now, unconnected as
    // they were built (dgram only takes an address on a connected socket by misreading the call
    // as another of its forms).
    threadSendBatch.flush();
    this.rtpConnected = 'connecting';
    try {
      this.rtpSocket.connect(port, address, (err?: Error | null) => this.connected(address, port, err));
    } catch (err) {
      // dgram's own state disagreed with ours (already connected): stay unconnected, never throw
      // into the packet handler that latched.
      this.connected(address, port, err as Error);
    }
  }

  /** The outcome of connectRtp(): connected, failed, or overtaken by a re-INVITE. */
  private connected(address: string, port: number, err?: Error | null): void {
    if (this.closed) return;
    // dgram reports a failed connect() to this callback (not as an 'error' event) and leaves
    // the socket unconnected: taking it for connected made every send throw ERR_SOCKET_BAD_PORT
    // (no address given), out of sendAudio and into the bridge. Keep sending with an address.
    if (err) {
      this.rtpConnected = 'no';
      this.opts.logger.debug({ err: err.message }, 'RTP connect() failed: sending unconnected');
    } else if (this.rtpConnected !== 'connecting' || this.dest?.address !== address || this.dest.port !== port) {
      // A re-INVITE moved the far end while we were connecting: the socket, connected now to
      // the old one, is disconnected here (a disconnect() while it connected did nothing),
      // before the packets queued meanwhile with the new address go out.
      try { this.rtpSocket.disconnect(); } catch { /* not connected */ }
      this.rtpConnected = 'no';
    } else this.rtpConnected = 'yes';
    this.sendWaiting();
  }

  private disconnectRtp(): void {
    if (this.rtpConnected === 'no') return;
    threadSendBatch.flush(); // queued without an address: they go to the peer still connected
    try { this.rtpSocket.disconnect(); } catch { /* not connected yet */ }
    this.rtpConnected = 'no';
  }

  private onRtpDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    // Before the far end's SDP (its early media can overtake the answer, more so with media
    // workers): nothing to read it by, and nothing wrong with it either — not counted.
    if (this.closed || !this.remote) return;
    // The far end's STUN checks and keep-alives (RFC 6263; Linphone sends them until our first
    // RTP arrives): neither media nor refused media, so neither read nor counted as dropped.
    // They do not latch the stream, nor count as activity.
    if (isStunOrKeepalive(msg)) return;
    // RTCP on the RTP port (rtcp-mux, or a peer that muxes unasked): read as RTCP, never as RTP
    // (its PT 72-76 slot and NTP seconds would pass for a packet from a new source).
    if (isRtcp(msg)) { this.onRtcpDatagram(msg, rinfo.address); return; }
    let plain: Buffer | null = msg;
    if (this.srtp) plain = this.srtp.unprotectRtp(msg);
    if (!plain) return; // counted by the SRTP session (auth failure, replay, malformed)
    const pkt = parseRtp(plain);
    if (!pkt) { this.dropped++; return; }
    const r = this.remote;
    const pt = pkt.payloadType;
    // What the packet is decides whether it counts at all: a payload type the SDP did not give
    // (nor CN, tolerated) is dropped before it can latch the stream or take its source over.
    const eventClock = pt === r.payloadType ? 0 : this.eventClockOf(pt);
    const otherLaw = pt === r.otherLawPayloadType && r.codec !== 'opus';
    if (pt !== r.payloadType && !otherLaw && eventClock === 0 && pt !== 13) { this.dropped++; return; }
    // Symmetric RTP (RFC 4961): the first valid media tells where the far end really is (NAT),
    // and we answer there. Latching happens once per signalled address: after that, packets from
    // any other source are dropped, so a stranger cannot take the stream over by sending RTP.
    if (this.latched && (this.dest!.address !== rinfo.address || this.dest!.port !== rinfo.port)) { this.dropped++; return; }
    // Audio decides the stream's source (acceptSource; the first packet of any kind sets it).
    // Events and comfort noise may come from a source of their own (RFC 4733 allows it): digits
    // are read from them all the same, but only the source's take their place in its numbering
    // and statistics.
    const audio = pt === r.payloadType || otherLaw;
    if ((audio || this.remoteSsrc === null) && !this.acceptSource(pkt.ssrc, pkt.sequenceNumber)) { this.dropped++; return; }
    const ownSource = pkt.ssrc === this.remoteSsrc;
    // A far end on hold the old way (c=0.0.0.0: "do not send to me") that still sends (music on
    // hold) is not latched onto: that would give us an address to send to after all.
    if (!this.latched && r.address !== '0.0.0.0') {
      if (this.dest && (this.dest.address !== rinfo.address || this.dest.port !== rinfo.port)) {
        this.opts.logger.info({ from: `${rinfo.address}:${rinfo.port}`, signalled: `${this.dest.address}:${this.dest.port}` }, 'RTP latched to the real source');
        this.dest = { address: rinfo.address, port: rinfo.port, rtcpPort: r.rtcpMux ? rinfo.port : rinfo.port + 1 };
      }
      this.latched = true;
      this.connectRtp(this.dest!.address, this.dest!.port);
    }
    const now = performance.now();
    this.lastRxAt = now;
    if (ownSource) this.rx.onPacket(pkt.sequenceNumber, pkt.timestamp, pkt.payload.length, now, audio);
    if (audio) {
      // An empty frame carries no audio and no duration: counted, and it only takes its number.
      if (pkt.payload.length === 0) { this.dropped++; this.emit('nonAudio', pkt); }
      else this.emit('audio', otherLaw ? this.toOwnLaw(pkt, r.codec as 'PCMU' | 'PCMA') : pkt);
    } else if (eventClock > 0) {
      this.dtmfRx.clockRate = eventClock;
      if (!this.dtmfRx.onPacket(pkt.timestamp, pkt.payload)) this.dropped++;
      if (ownSource) this.emit('nonAudio', pkt);
    } else if (ownSource) this.emit('nonAudio', pkt); // CN (PT 13) is tolerated: it only takes its number
  }

  /**
   * Whether a packet from this SSRC is taken. The first source is; another one replaces it only
   * once it has sent two packets in sequence with none from the current source between them
   * (RFC 3550 A.1's probation, MIN_SEQUENTIAL = 2): a far end that changed its SSRC (a B2BUA
   * after a transfer) loses one packet, which the bridge conceals, while a second stream mixed
   * into the first is dropped and counted instead of garbling the audio and resetting the
   * statistics on every packet.
   */
  private acceptSource(ssrc: number, seq: number): boolean {
    if (this.remoteSsrc === ssrc) { this.ssrcCandidate = null; return true; }
    if (this.remoteSsrc !== null) {
      const c = this.ssrcCandidate;
      if (!c || c.ssrc !== ssrc || ((c.seq + 1) & 0xffff) !== seq) { this.ssrcCandidate = { ssrc, seq }; return false; }
      this.rx.resetSource();
      this.opts.logger.info({ ssrc, was: this.remoteSsrc }, 'far end changed its RTP source (SSRC)');
    }
    this.remoteSsrc = ssrc;
    this.ssrcCandidate = null;
    return true;
  }

  /**
   * A packet in the other G.711 law as one in the law we negotiated first (a fresh payload: the
   * bridge may hold it). The first such packet is logged: a far end that switches laws without
   * a re-INVITE is legal but rare, and worth seeing when audio sounds odd.
   */
  private toOwnLaw(pkt: RtpPacketView, law: 'PCMU' | 'PCMA'): RtpPacketView {
    if (!this.loggedOtherLaw) {
      this.loggedOtherLaw = true;
      this.opts.logger.info({ payloadType: pkt.payloadType, negotiated: law }, 'far end sends the other G.711 law it listed: converted');
    }
    const payload = law === 'PCMU' ? pcmaToPcmu(pkt.payload) : pcmuToPcma(pkt.payload);
    return { ...pkt, payloadType: this.remote!.payloadType, payload };
  }

  /** The clock rate of the telephone-event format with this PT; 0 when it is not one. */
  private eventClockOf(pt: number): number {
    const r = this.remote!;
    if (pt === r.telephoneEventPayloadType) return r.telephoneEventClockRate ?? 8000;
    for (const e of r.telephoneEvents ?? []) if (e.payloadType === pt) return e.clockRate;
    return 0;
  }

  private onRtcpDatagram(msg: Buffer, _from: string): void {
    // STUN and keep-alives as on the RTP port (Linphone's come every 500 ms until our first
    // report, RTCP_INTERVAL_MS after the answer): not counted as dropped.
    if (this.closed || isStunOrKeepalive(msg)) return;
    let plain: Buffer | null = msg;
    if (this.srtp) plain = this.srtp.unprotectRtcp(msg);
    if (!plain) return; // counted by the SRTP session (auth failure, replay, malformed)
    if (plain.length < 8) { this.dropped++; return; }
    // Walk the compound packet: SR gives us LSR; report blocks about us give RTT.
    let off = 0;
    while (off + 8 <= plain.length) {
      const pt = plain[off + 1];
      const len = (plain.readUInt16BE(off + 2) + 1) * 4;
      // A length past the datagram, or not RTP version 2: the rest is unreadable.
      if (off + len > plain.length || (plain[off] & 0xc0) !== 0x80) { this.dropped++; break; }
      const count = plain[off] & 0x1f;
      let blocks = off + 8;
      if (pt === RTCP.SR && len >= 28) {
        // The LSR our reports echo comes from the far end's own sender report only (once its
        // audio told us its SSRC): with plain RTP anyone can send to this port. Another
        // source's SR (an SBC's RTCP under its own SSRC) still has its report blocks read.
        if (this.remoteSsrc === null || plain.readUInt32BE(off + 4) === this.remoteSsrc) {
          this.lastSrNtpMiddle = plain.readUInt32BE(off + 10);
          this.lastSrArrival = Date.now();
        }
        blocks = off + 28;
      }
      if (pt === RTCP.SR || pt === RTCP.RR) {
        for (let i = 0; i < count && blocks + 24 <= off + len; i++, blocks += 24) {
          if (plain.readUInt32BE(blocks) !== this.ssrc) continue;
          const lsr = plain.readUInt32BE(blocks + 16);
          const dlsr = plain.readUInt32BE(blocks + 20);
          if (lsr) {
            const now = ntpMiddle32(Date.now());
            const rtt = ((now - lsr - dlsr) >>> 0) / 65536;
            if (rtt < 60) this.rttMs = Math.round(rtt * 1000);
          }
        }
      }
      off += len;
    }
  }

  /** RTCP SR (we send) with one report block about the far end (RFC 3550 §6.4.1). */
  /**
   * Our RTCP report, every RTCP_INTERVAL_MS: an SR while we send, an RR while we do not (held by
   * the far end, or holding): RTCP goes on through a hold (RFC 3264 §5.1), only a stream with no
   * address (0.0.0.0) gets none.
   */
  private sendReport(): void {
    if (this.closed || !this.dest || this.dest.address === '0.0.0.0') return;
    const now = Date.now();
    const hasBlock = this.remoteSsrc !== null;
    const asSender = this.sendingAllowed;
    const head = asSender ? 28 : 8;
    const sr = Buffer.alloc(head + (hasBlock ? 24 : 0));
    sr[0] = 0x80 | (hasBlock ? 1 : 0);
    sr[1] = asSender ? RTCP.SR : RTCP.RR;
    sr.writeUInt16BE(sr.length / 4 - 1, 2);
    sr.writeUInt32BE(this.ssrc, 4);
    if (asSender) {
      const secs = Math.floor(now / 1000) + NTP_OFFSET;
      sr.writeUInt32BE(secs >>> 0, 8);
      sr.writeUInt32BE(Math.floor(((now % 1000) / 1000) * 0x100000000) >>> 0, 12);
      sr.writeUInt32BE(this.ts, 16);
      sr.writeUInt32BE(this.sent.packets >>> 0, 20);
      sr.writeUInt32BE(this.sent.bytes >>> 0, 24);
    }
    if (hasBlock) {
      const b = head;
      sr.writeUInt32BE(this.remoteSsrc!, b);
      const lost = Math.max(-0x800000, Math.min(0x7fffff, this.rx.lost));
      sr.writeUInt32BE(((this.rx.fractionLostSinceLast() << 24) | (lost & 0xffffff)) >>> 0, b + 4);
      sr.writeUInt32BE(this.rx.extendedHighestSeq >>> 0, b + 8);
      sr.writeUInt32BE(Math.round(this.rx.jitterTs) >>> 0, b + 12);
      sr.writeUInt32BE(this.lastSrNtpMiddle >>> 0, b + 16);
      sr.writeUInt32BE(this.lastSrArrival ? Math.round(((now - this.lastSrArrival) / 1000) * 65536) >>> 0 : 0, b + 20);
    }
    let out: Buffer = sr;
    if (this.srtp) { try { out = this.srtp.protectRtcp(sr); } catch { return; } }
    this.sendRtcp(out);
  }

  /** RTCP goes on the RTP socket with rtcp-mux (connected once latched), else on its own socket. */
  private sendRtcp(out: Buffer, sent?: () => void): boolean {
    if (!this.dest) return false;
    try {
      if (!this.remote?.rtcpMux) this.rtcpSocket.send(out, this.dest.rtcpPort, this.dest.address, sent);
      else if (this.rtpConnected === 'yes') this.rtpSocket.send(out, sent);
      else if (this.rtpConnected === 'no') this.rtpSocket.send(out, this.dest.port, this.dest.address, sent);
      else return false;
      return true;
    } catch { return false; /* socket closing */ }
  }

  private checkInactivity(): void {
    if (this.closed || this.paused) { this.lastRxAt = performance.now(); return; }
    const d = this.remote?.direction ?? 'sendrecv';
    if (d === 'recvonly' || d === 'inactive') { this.lastRxAt = performance.now(); return; }
    if (performance.now() - this.lastRxAt >= this.opts.inactivityTimeoutMs) {
      this.lastRxAt = performance.now();
      this.emit('inactive');
    }
  }

  stats(): LegStats {
    const expected = this.rx.expected;
    const lossPercent = expected > 0 ? (this.rx.missing / expected) * 100 : 0;
    return {
      packetsSent: this.sent.packets,
      bytesSent: this.sent.bytes,
      packetsReceived: this.rx.packets,
      bytesReceived: this.rx.bytes,
      packetsLost: this.rx.missing,
      jitterMs: Math.round(this.rx.jitterMs * 10) / 10,
      rttMs: this.rttMs,
      mos: estimateMos({ lossPercent, oneWayDelayMs: (this.rttMs ?? 40) / 2 + 20, jitterMs: this.rx.jitterMs }),
      dropped: this.dropped + this.droppedBySrtp + this.srtpDropped(),
      duplicates: this.rx.duplicates,
      late: this.rx.late,
    };
  }

  /** Packets the current SRTP session refused (authentication, replay, malformed). */
  private srtpDropped(): number {
    const s = this.srtp?.stats;
    return s ? s.authFailures + s.replays + s.malformed : 0;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.inactivityTimer) clearInterval(this.inactivityTimer);
    if (this.rtcpTimer) clearInterval(this.rtcpTimer);
    this.digits.close();
    this.dtmfRx.close();
    this.liveDtmf?.cancel();
    this.nextLiveDigit = null;
    this.waitingForConnect.length = 0;
    // Packets still waiting in this turn's batch leave before the sockets close (counted as
    // sent, they must have been; the batch would otherwise find the socket closed).
    threadSendBatch.flush();
    // An addressed send completes a tick later (dgram resolves the address first): closing the
    // sockets at once would drop the BYE, so they close once it has gone. The port goes back
    // now; should it be handed out again within that tick, the allocator skips it (bind fails).
    const closeSockets = () => { this.rtpSocket.close(); this.rtcpSocket.close(); };
    if (!this.sendBye(closeSockets)) closeSockets();
    this.opts.onClose();
    this.emit('closed');
    this.removeAllListeners();
  }

  /** RTCP BYE (RFC 3550 §6.6); `sent` runs once it has left. False when none was sent. */
  private sendBye(sent: () => void): boolean {
    if (!this.dest || !this.remote || this.dest.address === '0.0.0.0') return false; // no address to send to, as for reports
    const bye = Buffer.alloc(8);
    bye[0] = 0x81; bye[1] = RTCP.BYE; bye.writeUInt16BE(1, 2); bye.writeUInt32BE(this.ssrc, 4);
    let out: Buffer = bye;
    if (this.srtp) { try { out = this.srtp.protectRtcp(bye); } catch { return false; } }
    return this.sendRtcp(out, sent);
  }
}

function ntpMiddle32(ms: number): number {
  const secs = Math.floor(ms / 1000) + NTP_OFFSET;
  const frac = Math.floor(((ms % 1000) / 1000) * 0x10000);
  return (((secs & 0xffff) << 16) | frac) >>> 0;
}

/**
 * Samples per packet toward the trunk for its a=ptime: G.711 frames in steps of 10 ms, from
 * 10 to 120 ms (8 samples a millisecond). 30 ms is common on carrier trunks; rounding to 20 ms
 * steps sent it 40 ms packets.
 */
export function sipFrameSamplesFor(ptime: number | undefined): number {
  const ms = ptime && Number.isFinite(ptime) ? Math.min(120, Math.max(10, Math.round(ptime / 10) * 10)) : 20;
  return ms * 8;
}
