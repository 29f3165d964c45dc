/**
 * RFC 4733 telephone-event payloads: 4 bytes — event, E|R|volume, duration (timestamp units).
 */
const DIGITS = '0123456789*#ABCD';

/** Update interval of a live event (RFC 4733 §2.5.1.2 suggests 50 ms). */
const LIVE_UPDATE_MS = 50;
/**
 * No digit lasts longer, whatever a peer's durations say: a live digit no one ends (a stuck key)
 * stops here. An event also stops at its 16-bit duration's limit (8.19 s at 8 kHz, 1.36 s at
 * 48 kHz; RFC 4733 §2.5.1.3's segments for longer events are not sent).
 */
const LIVE_MAX_MS = 8000;

export function digitToEvent(d: string): number {
  // One character exactly: indexOf would also find '' (at 0) and substrings such as '12'.
  const i = d.length === 1 ? DIGITS.indexOf(d.toUpperCase()) : -1;
  if (i < 0) throw new Error(`not a DTMF digit: ${d}`);
  return i;
}

/**
 * A telephone-event RTP clock we take (RFC 4733 §2.1: the audio's clock; 8 kHz for G.711, 48 kHz
 * beside Opus, 16 kHz for wideband codecs). Another rate — `telephone-event/1` from a hostile
 * offer — would make its 16-bit durations read as hours; such a format is left out as if not offered.
 */
export function usableEventClock(rate: number): boolean {
  return Number.isInteger(rate) && rate >= 8000 && rate <= 48000;
}

export function eventToDigit(e: number): string | null {
  return Number.isInteger(e) && e >= 0 && e < 16 ? DIGITS[e] : null;
}

export function encodeTelephoneEvent(event: number, end: boolean, durationTs: number, volume = 10): Buffer {
  const b = Buffer.alloc(4);
  b[0] = event;
  b[1] = (end ? 0x80 : 0) | (volume & 0x3f);
  b.writeUInt16BE(Math.min(0xffff, durationTs), 2);
  return b;
}

export function decodeTelephoneEvent(p: Uint8Array): { event: number; end: boolean; volume: number; duration: number } | null {
  if (p.length < 4) return null;
  return { event: p[0], end: (p[1] & 0x80) !== 0, volume: p[1] & 0x3f, duration: (p[2] << 8) | p[3] };
}

/**
 * Detects digits in a received telephone-event stream: one digit per event timestamp, reported
 * at its first packet (so a lost end packet still yields the digit), duplicates and the
 * three end retransmissions ignored — also when a retransmission of the previous event arrives
 * after the next event has started (reordering), hence a few recent timestamps are remembered.
 *
 * With `onEnd`, each digit is also reported once its length is known: at its first end packet,
 * or — the end packets lost — when the next event starts or none of its packets came for
 * END_TIMEOUT_MS, with the longest duration seen. A relay regenerates the digit from that.
 */
export class DtmfReceiver {
  private readonly recentEventTs: number[] = [];
  /**
   * The event being received, until its end is known: its current segment's timestamp and
   * duration, and the length of its earlier segments (a long event, see continues()).
   */
  private open: { ts: number; digit: string; duration: number; before: number } | null = null;
  private endTimer: NodeJS.Timeout | null = null;
  /** The telephone-event format's RTP clock (durations count its ticks); may change with a re-INVITE. */
  clockRate: number;
  constructor(
    private readonly onDigit: (digit: string, durationMs: number) => void,
    clockRate = 8000,
    private readonly onEnd?: (digit: string, durationMs: number) => void,
  ) {
    this.clockRate = clockRate;
  }

  /** One telephone-event payload; false when it is malformed (for the caller to count). */
  onPacket(rtpTs: number, payload: Uint8Array): boolean {
    const ev = decodeTelephoneEvent(payload);
    if (!ev) return false;
    const open = this.open;
    if (open && open.ts === rtpTs) { // an update of the digit being received, or its end
      open.duration = Math.max(open.duration, ev.duration);
      if (ev.end) this.finish();
      else this.armEndTimer();
      return true;
    }
    if (this.recentEventTs.includes(rtpTs)) return true;
    this.recentEventTs.push(rtpTs);
    if (this.recentEventTs.length > 8) this.recentEventTs.shift();
    const digit = eventToDigit(ev.event);
    if (open && digit === open.digit && this.continues(open, rtpTs)) {
      open.before += open.duration;
      open.ts = rtpTs;
      open.duration = ev.duration;
      if (ev.end) this.finish();
      else this.armEndTimer();
      return true;
    }
    if (open) this.finish(); // a new event: the one before lost its end packets
    if (!digit) return true;
    this.onDigit(digit, this.ms(ev.duration));
    this.open = { ts: rtpTs, digit, duration: ev.duration, before: 0 };
    if (ev.end) this.finish();
    else this.armEndTimer();
    return true;
  }

  /**
   * Whether a packet with a new timestamp goes on with the open event rather than starting one:
   * an event longer than its 16-bit duration field holds (8.2 s at 8 kHz, 1.37 s at 48 kHz) is
   * sent in segments (RFC 4733 §2.5.1.3), each but the last filled to the maximum without its E
   * bit, the next starting where it ended — read as new events, one key press made several.
   */
  private continues(open: { ts: number; duration: number }, rtpTs: number): boolean {
    const slack = this.clockRate / 10; // a packet or two of timing either way
    const gap = (rtpTs - open.ts) >>> 0;
    return open.duration >= 0xffff - slack && gap >= open.duration - slack && gap <= open.duration + slack;
  }

  close(): void {
    if (this.endTimer) clearTimeout(this.endTimer);
    this.endTimer = null;
    this.open = null;
  }

  private armEndTimer(): void {
    if (!this.onEnd) return; // nobody to tell: the event is closed by the next one
    if (this.endTimer) this.endTimer.refresh();
    else this.endTimer = setTimeout(() => { this.endTimer = null; this.finish(); }, END_TIMEOUT_MS);
  }

  private finish(): void {
    const open = this.open;
    this.close();
    if (open) this.onEnd?.(open.digit, this.ms(open.before + open.duration));
  }

  /** A duration in ms, never beyond what a live digit may last (a peer's 0xFFFF at a slow clock is not 18 hours of tone). */
  private ms(ticks: number): number {
    return Math.min(LIVE_MAX_MS, (ticks / this.clockRate) * 1000);
  }
}

/**
 * How long an event may go without a packet before it is taken as ended (its end packets lost):
 * senders update every 50 ms or so (RFC 4733 §2.5.1.2), so this is several updates lost in a row.
 */
const END_TIMEOUT_MS = 250;

/**
 * The packet train for one digit (RFC 4733 §2.5): packets every 20 ms with the same timestamp
 * and a growing duration, the first with the marker bit, the last three with E set.
 */
export function dtmfPacketTrain(digit: string, durationMs: number, clockRate: number): Array<{ payload: Buffer; marker: boolean; delayMs: number }> {
  const event = digitToEvent(digit);
  const step = 20;
  const out: Array<{ payload: Buffer; marker: boolean; delayMs: number }> = [];
  // 40 ms at least; at most what a live digit may last and the 16-bit duration can say.
  const longest = Math.min(LIVE_MAX_MS, Math.floor((0xffff * 1000) / clockRate / step) * step);
  const total = Math.min(longest, Math.max(40, Math.round((Number.isFinite(durationMs) ? durationMs : 0) / step) * step));
  for (let t = step; t < total; t += step) out.push({ payload: encodeTelephoneEvent(event, false, (t * clockRate) / 1000), marker: t === step, delayMs: t - step });
  // The end packet three times, at the update interval (RFC 4733 §2.5.1.4): sent at once, one
  // burst loss would take all three.
  for (let i = 0; i < 3; i++) out.push({ payload: encodeTelephoneEvent(event, true, (total * clockRate) / 1000), marker: false, delayMs: total - step + i * step });
  return out;
}

/** DTMF row and column frequencies (ITU-T Q.23) by digit. */
const DTMF_FREQS: Record<string, [number, number]> = {
  1: [697, 1209], 2: [697, 1336], 3: [697, 1477], A: [697, 1633],
  4: [770, 1209], 5: [770, 1336], 6: [770, 1477], B: [770, 1633],
  7: [852, 1209], 8: [852, 1336], 9: [852, 1477], C: [852, 1633],
  '*': [941, 1209], 0: [941, 1336], '#': [941, 1477], D: [941, 1633],
};

/** A digit's tones are at least this long, and the silence after them this long (ITU-T Q.24 asks 40 ms each). */
const TONE_MIN_MS = 60;
const TONE_PAUSE_MS = 60;

/**
 * Frame `index` of the digit's two tones, `frameSamples` 8 kHz samples, each tone at about
 * -10 dBm0; consecutive indices continue the tones' phase.
 */
function dtmfToneFrame(digit: string, index: number, frameSamples: number): Int16Array {
  const [low, high] = DTMF_FREQS[digit.toUpperCase()];
  const frame = new Int16Array(frameSamples);
  for (let i = 0; i < frameSamples; i++) {
    const t = (index * frameSamples + i) / 8000;
    frame[i] = Math.round(7000 * (Math.sin(2 * Math.PI * low * t) + Math.sin(2 * Math.PI * high * t)));
  }
  return frame;
}

/** Frames of tone for a digit of `durationMs`: at least 60 ms, and never fewer than `alreadySent`. */
function toneFramesFor(durationMs: number, frameMs: number, alreadySent: number): number {
  return Math.max(alreadySent, Math.ceil(TONE_MIN_MS / frameMs), Math.round(durationMs / frameMs));
}

/**
 * In-band DTMF for a trunk without telephone-event (legacy PBXs and IVRs): the digit's two tones
 * as frames of `frameSamples` 8 kHz samples for `durationMs` (at least 60 ms), then at least
 * 60 ms of silence so that two digits in a row are heard as two.
 */
export function dtmfToneFrames(digit: string, durationMs: number, frameSamples = 160): Int16Array[] {
  digitToEvent(digit); // a bad digit throws
  const frameMs = frameSamples / 8;
  const toneFrames = toneFramesFor(durationMs, frameMs, 0);
  const pauseFrames = Math.ceil(TONE_PAUSE_MS / frameMs);
  const frames: Int16Array[] = [];
  for (let f = 0; f < toneFrames; f++) frames.push(dtmfToneFrame(digit, f, frameSamples));
  for (let f = 0; f < pauseFrames; f++) frames.push(new Int16Array(frameSamples));
  return frames;
}

/** Where a digit's tones go, frame by frame, and when the digit is over. */
export interface ToneStream {
  /** One frame of the digit (its tones, or the silence after them): 8 kHz linear samples. */
  sendFrame(pcm: Int16Array, first: boolean): void;
  /** The last frame of the pause after the tones has played (one frame time after it left): audio may go on. */
  done(): void;
}

/**
 * A digit as tones in the audio, sent frame by frame in real time from the moment it starts,
 * its length given when known (end()): a browser's digit relayed to a trunk without
 * telephone-event sounds while the key is down, as a phone's would, not once it is released.
 * The tones last at least 60 ms and as long as end() says (frames already sent count), then
 * 60 ms of silence; a digit no one ends stops after `maxMs` (8 s: a stuck key). Frames are timed from the
 * start, not from one another, so timer lateness does not add up. cancel() stops it.
 */
export class LiveToneDigit {
  private readonly startedAt = performance.now();
  private readonly frameMs: number;
  private sent = 0;
  /** Tone frames in all; Infinity until end() says. */
  private toneFrames = Infinity;
  private readonly pauseFrames: number;
  private readonly maxToneFrames: number;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly digit: string, private readonly frameSamples: number, private readonly stream: ToneStream, maxMs = LIVE_MAX_MS) {
    digitToEvent(digit); // a bad digit throws
    this.frameMs = frameSamples / 8;
    this.pauseFrames = Math.ceil(TONE_PAUSE_MS / this.frameMs);
    this.maxToneFrames = Math.ceil(maxMs / this.frameMs);
    this.tick();
  }

  /** The digit lasted `durationMs`: its tones stop once that much has been sent, then the pause. */
  end(durationMs: number): void {
    if (this.toneFrames !== Infinity) return;
    this.toneFrames = Math.min(this.maxToneFrames, toneFramesFor(durationMs, this.frameMs, this.sent));
  }

  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.toneFrames = 0;
  }

  private tick(): void {
    this.timer = null;
    if (this.toneFrames === Infinity && this.sent >= this.maxToneFrames) this.end(0); // a stuck key
    const f = this.sent++;
    const pcm = f < this.toneFrames ? dtmfToneFrame(this.digit, f, this.frameSamples) : new Int16Array(this.frameSamples);
    this.stream.sendFrame(pcm, f === 0);
    // The next frame, or once the last has played (its time is on the stream's timeline:
    // the audio after the digit, or the next digit, must not go out ahead of it) done.
    const wait = Math.max(0, this.startedAt + this.sent * this.frameMs - performance.now());
    if (this.sent < this.toneFrames + this.pauseFrames) this.timer = setTimeout(() => this.tick(), wait);
    else this.timer = setTimeout(() => { this.timer = null; this.stream.done(); }, wait);
  }
}

/** What a live event needs from the RTP stream it goes out on (a SIP leg, or the bridge toward the browser). */
export interface EventStream {
  /** The timestamp the stream's next packet would take: the event starts there. */
  nextTimestamp(): number;
  /** One telephone-event packet (the stream numbers it). */
  sendEvent(payload: Buffer, marker: boolean, eventTs: number): void;
  /** The event took `ms` of the timeline from `eventTs`: the stream goes on after that. */
  eventEnded(eventTs: number, ms: number): void;
}

/**
 * One digit sent as it happens, its length not known when it starts (a relay: the digit is
 * still being pressed on the other leg). The first packet goes out at once with the marker,
 * an update every 50 ms carries the duration so far, and end() gives the length the other leg
 * reported — never shorter than what the updates already announced. The end packet then goes
 * three times, 20 ms apart (§2.5.1.4), once that length has passed since the start: a sender
 * whose packets came in faster than real time (seen from Chromium) does not squeeze the digit,
 * and the audio after it, stamped after the event's stretch, is not sent ahead of its time.
 * `done` runs once the last end packet has left. Its timers are its own: cancel() stops them.
 */
export class LiveTelephoneEvent {
  private readonly eventTs: number;
  private readonly event: number;
  private readonly startedAt = performance.now();
  private announcedMs = 0;
  private readonly timers = new Set<NodeJS.Timeout>();
  private ending = false;
  /** The longest event this clock's 16-bit duration field can say, in ms. */
  private readonly maxMs: number;

  constructor(digit: string, private readonly clockRate: number, private readonly stream: EventStream, private readonly done: () => void) {
    this.event = digitToEvent(digit);
    this.maxMs = Math.min(LIVE_MAX_MS, Math.floor((0xffff * 1000) / clockRate));
    this.eventTs = stream.nextTimestamp();
    this.send(false, 0, true);
    const update = setInterval(() => {
      const ms = Math.round(performance.now() - this.startedAt); // whole ms: whole ticks at any clock
      if (ms < this.maxMs) this.send(false, ms, false);
      else if (!this.ending) this.end(ms); // nobody ended it: a stuck key
    }, LIVE_UPDATE_MS);
    this.timers.add(update);
  }

  end(durationMs: number): void {
    if (this.ending) return;
    this.ending = true;
    const ms = Math.min(this.maxMs, Math.max(durationMs, this.announcedMs, 40));
    const wait = this.startedAt + ms - performance.now();
    if (wait <= 5) { this.finish(ms); return; }
    const t = setTimeout(() => { this.timers.delete(t); this.finish(ms); }, wait); // updates go on meanwhile
    this.timers.add(t);
  }

  cancel(): void {
    this.ending = true;
    this.clearTimers();
  }

  private finish(endMs: number): void {
    this.clearTimers();
    const ms = Math.max(endMs, this.announcedMs); // an update may have gone out while it waited
    this.send(true, ms, false);
    for (const i of [1, 2]) {
      const t = setTimeout(() => { this.timers.delete(t); this.send(true, ms, false); if (i === 2) this.done(); }, i * 20);
      this.timers.add(t);
    }
    this.stream.eventEnded(this.eventTs, ms);
  }

  private send(end: boolean, ms: number, marker: boolean): void {
    this.announcedMs = Math.max(this.announcedMs, ms);
    this.stream.sendEvent(encodeTelephoneEvent(this.event, end, Math.round((ms * this.clockRate) / 1000)), marker, this.eventTs);
  }

  private clearTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }
}

/**
 * The digits one stream sends, one after another: receivers track one event at a time (RFC 4733
 * §2.5), so a digit asked for while another plays waits for it. `busyUntil` is when the stream's
 * audio may go again (performance.now() ms; Infinity while a live digit plays, until it ends);
 * the digits' timers are kept here, so closing the stream stops them all.
 */
export class DigitSequence {
  busyUntil = 0;
  private readonly waiting: Array<{ digit: string; durationMs: number }> = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  /**
   * `start` plays one digit now (it sets busyUntil); false when it cannot, and the rest are
   * dropped. `maxWaiting`: digits that may wait behind the one playing (a pasted number).
   */
  constructor(private readonly start: (digit: string, durationMs: number) => boolean, private readonly maxWaiting = 32) {}

  /** A digit is playing (its events or tones replace the audio). */
  get playing(): boolean {
    if (this.busyUntil === 0) return false;
    if (performance.now() < this.busyUntil) return true;
    this.busyUntil = 0; // over: the packets after it need no clock read
    return false;
  }

  /** Digits waiting behind the one playing. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  /** Nothing playing and nothing waiting: a digit could start now. */
  get idle(): boolean {
    return this.waiting.length === 0 && !this.playing;
  }

  /** Plays the digit now, or after those before it; false when too many wait or it cannot play. */
  push(digit: string, durationMs: number): boolean {
    if (this.closed) return false;
    if (this.idle) return this.start(digit, durationMs);
    if (this.waiting.length >= this.maxWaiting) return false;
    this.waiting.push({ digit, durationMs });
    return true;
  }

  /** Starts the first waiting digit once the one playing has ended (a timer may fire a little early). */
  next(): void {
    // A live digit (busy until it ends) calls this itself when done.
    if (this.closed || this.waiting.length === 0 || this.busyUntil === Infinity) return;
    const left = this.busyUntil - performance.now();
    if (left > 0) { this.later(Math.ceil(left), () => this.next()); return; }
    const d = this.waiting.shift()!;
    if (!this.start(d.digit, d.durationMs)) this.waiting.length = 0;
  }

  /** A timer of a digit's: stopped by close(). */
  later(ms: number, fn: () => void): void {
    const t = setTimeout(() => { this.timers.delete(t); fn(); }, ms);
    this.timers.add(t);
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.waiting.length = 0;
  }
}
