/**
 * Message framing for SIP over a byte stream (TCP, TLS; RFC 3261 §18.3).
 *
 * Over a stream the only message boundary is Content-Length, so the framer must read it the
 * way the parser (message.ts) will: a header it reads differently (folded, compact `l`, a
 * second Content-Length) would put every later message out of step. Whatever it cannot
 * frame for certain is an error, after which the connection must be closed: nothing after it
 * can be trusted to start on a message boundary.
 *
 * The work per byte is constant: the framer keeps its state between chunks (where the header
 * block ends once found, the message length once known, how much of a keepalive ping has
 * come), scans only the bytes that just arrived, and copies each byte at most once.
 *
 * Between messages a peer may send keepalives (RFC 5626 §3.5.1, §4.4.1): a double CRLF
 * ("ping"), which must be answered with a single CRLF ("pong"), and that pong. Both are read
 * here, as the line ends the parser skips before a start line; only a ping is reported, so that
 * the connection's owner answers it. CRLFs inside a message (its header block, its body) are
 * the message's and never a ping.
 */
import { canonicalHeaderName, PARSE_LIMITS, trimLws } from './message';

/**
 * The header block (start line, headers and the empty line ending them) may be at most this
 * long. Real headers are a few KB; without a bound a peer could make us buffer (and scan)
 * up to the whole message limit without ever sending an empty line.
 */
export const MAX_STREAM_HEADER_BYTES = 16 * 1024;

export type FramingError =
  /** No end of the header block within the bound: nothing readable, close without a response. */
  | { kind: 'header-too-large' }
  /**
   * The headers were read but the message length cannot be known (no, several or a malformed
   * Content-Length) or is too large. `head` is the header block, for a 400 (or `status`).
   */
  | { kind: 'length'; error: string; status?: number; head: Buffer };

export interface FramerSink {
  /** One complete message (start line to the end of its body) and its Content-Length. */
  message(raw: Buffer, contentLength: number): void;
  /**
   * A keepalive ping: CRLFCRLF between messages (RFC 5626 §4.4.1), to be answered with one CRLF
   * on the same connection. Once per ping, however its bytes were cut; a lone CRLF (a pong, a
   * stray line end) is never reported, so that two peers answering pings never ping-pong.
   */
  ping(): void;
  /** Framing failed: the framer reads nothing more. */
  error(e: FramingError): void;
}

const CR = 0x0d;
const LF = 0x0a;

export class StreamFramer {
  /** The bytes of the current message that came in earlier chunks (see Accumulator). */
  private readonly acc = new Accumulator();
  /** Between messages (CRLF keepalives read), in the header block, or in the body. */
  private phase: 'between' | 'head' | 'body' = 'between';
  /**
   * Bytes of a CRLFCRLF ping seen so far (0-3), between messages only. Kept between chunks: a
   * ping cut in two is still one ping. Any other byte (a message starting) sets it back to 0.
   */
  private pingBytes = 0;
  /** The whole current message's length, once its header block has been read. */
  private total = 0;
  private contentLength = 0;
  private stopped = false;

  constructor(private readonly sink: FramerSink) {}

  /** Reads nothing more (the connection is being closed). */
  stop(): void {
    this.stopped = true;
    this.pingBytes = 0;
    this.acc.reset();
  }

  push(chunk: Buffer): void {
    let data = chunk;
    // The sink may stop us (a message that fails to parse closes the connection).
    while (data.length > 0 && !this.stopped) {
      if (this.phase === 'between') {
        // CRLF keepalives between messages (RFC 5626 §3.5.1) and stray line ends are skipped,
        // as the parser skips them before a start line; each CRLFCRLF in them is a ping. Byte by
        // byte, as they come: no byte is looked at twice.
        let i = 0;
        for (; i < data.length && (data[i] === CR || data[i] === LF); i++) {
          // Expected next: CR after 0 or 2 bytes matched, LF after 1 or 3. A CR out of turn
          // may start a ping; an LF out of turn cannot.
          const expected = this.pingBytes % 2 === 0 ? CR : LF;
          this.pingBytes = data[i] === expected ? this.pingBytes + 1 : data[i] === CR ? 1 : 0;
          if (this.pingBytes === 4) {
            this.pingBytes = 0;
            this.sink.ping();
            if (this.stopped) return; // the sink may stop us
          }
        }
        data = data.subarray(i);
        if (data.length === 0) return;
        this.pingBytes = 0; // a message starts: the CRLFs before it were not (the rest of) a ping
        this.phase = 'head';
      }
      if (this.phase === 'head') {
        const end = this.findHeadEnd(data);
        if (end < 0) {
          if (this.acc.length + data.length >= MAX_STREAM_HEADER_BYTES) { this.fail({ kind: 'header-too-large' }); return; }
          this.acc.append(data);
          return;
        }
        const headBytes = this.acc.length + end; // the header block with its empty line
        if (headBytes > MAX_STREAM_HEADER_BYTES) { this.fail({ kind: 'header-too-large' }); return; }
        // Contiguous (and decoded) once per message; copied only when it spanned chunks.
        const head = this.acc.length ? Buffer.concat([this.acc.view(), data.subarray(0, end)]) : data.subarray(0, end);
        const cl = readContentLength(head.toString('utf8'));
        if ('error' in cl) { this.fail({ kind: 'length', error: cl.error, head }); return; }
        if (headBytes + cl.value > PARSE_LIMITS.maxMessageBytes) {
          // The parser's own limit (513, RFC 3261 §21.5.14): the body is never read.
          this.fail({ kind: 'length', error: 'Message Too Large', status: 513, head });
          return;
        }
        this.total = headBytes + cl.value;
        this.contentLength = cl.value;
        this.phase = 'body';
        // `data` still starts where the message continues: the body phase takes it from there.
      }
      // Body: the message is complete once `total` bytes of it are here.
      if (this.acc.length === 0 && data.length >= this.total) {
        // The common case, a whole message in one chunk: no copy at all.
        const raw = data.subarray(0, this.total);
        data = data.subarray(this.total);
        this.deliver(raw);
        continue;
      }
      const take = Math.min(this.total - this.acc.length, data.length);
      this.acc.append(data.subarray(0, take), this.total);
      data = data.subarray(take);
      if (this.acc.length < this.total) return;
      this.deliver(this.acc.take());
    }
  }

  private deliver(raw: Buffer): void {
    this.phase = 'between';
    this.sink.message(raw, this.contentLength);
  }

  private fail(e: FramingError): void {
    this.stop();
    this.sink.error(e);
  }

  /**
   * Where the header block ends in `data` (the offset just past its empty line), or -1. The
   * parser takes the first CRLFCRLF or LFLF (a sloppy peer's LF-only lines are accepted, as
   * over UDP); the one that ends first is also the one that starts first, so a scan by end
   * finds the same. Only the new bytes are scanned; the 3 before them come from `acc`.
   */
  private findHeadEnd(data: Buffer): number {
    for (let i = data.indexOf(LF); i >= 0; i = data.indexOf(LF, i + 1)) {
      const b1 = this.byteBefore(data, i, 1);
      if (b1 === LF) return i + 1;
      if (b1 === CR && this.byteBefore(data, i, 2) === LF && this.byteBefore(data, i, 3) === CR) return i + 1;
    }
    return -1;
  }

  private byteBefore(data: Buffer, i: number, n: number): number {
    if (i - n >= 0) return data[i - n];
    const k = this.acc.length + (i - n);
    return k >= 0 ? this.acc.at(k) : -1;
  }
}

/**
 * Content-Length as the parser reads it (message.ts parseHead): continuation lines unfolded,
 * names compared through canonicalHeaderName (any case, compact `l`), values trimmed of SP/HT
 * only. Over a stream it is mandatory (RFC 3261 §7.5, §20.14) and must be one plain number:
 * the parser refuses a second one, a sign, or more than 10 digits, so the framer does too
 * instead of guessing a length the parser would then not agree with.
 */
export function readContentLength(head: string): { value: number } | { error: string } {
  const folded = head.includes('\n ') || head.includes('\n\t');
  const lines = (folded ? head.replace(/\r?\n[ \t]+/g, ' ') : head).split(/\r?\n/);
  let value: string | undefined;
  for (let i = 1; i < lines.length; i++) {
    const colon = lines[i].indexOf(':');
    if (colon <= 0 || canonicalHeaderName(trimLws(lines[i].slice(0, colon))) !== 'Content-Length') continue;
    if (value !== undefined) return { error: 'more than one Content-Length header' };
    value = trimLws(lines[i].slice(colon + 1));
  }
  if (value === undefined) return { error: 'missing Content-Length (mandatory over TCP and TLS)' };
  if (!/^\d+$/.test(value)) return { error: 'invalid Content-Length' };
  if (value.length > 10) return { error: 'invalid Content-Length: more than 10 digits' };
  return { value: Number(value) };
}

/**
 * The part of one message that came in earlier chunks, copied into one buffer as it arrives
 * (grown by doubling; allocated at the message's full length once that is known). A list of
 * chunks joined at the end would copy as little, but a peer writing one byte at a time would
 * have us hold tens of thousands of small Buffer objects per connection.
 */
class Accumulator {
  private buf: Buffer | null = null;
  length = 0;

  append(data: Buffer, finalSize = 0): void {
    const need = this.length + data.length;
    if (!this.buf || this.buf.length < need) {
      const size = finalSize > 0 ? Math.max(need, finalSize) : Math.max(need, Math.min(2 * (this.buf?.length ?? 256), MAX_STREAM_HEADER_BYTES));
      const grown = Buffer.allocUnsafe(size);
      if (this.buf) this.buf.copy(grown, 0, 0, this.length);
      this.buf = grown;
    }
    data.copy(this.buf, this.length);
    this.length = need;
  }

  at(i: number): number { return this.buf![i]; }

  view(): Buffer { return this.buf ? this.buf.subarray(0, this.length) : Buffer.alloc(0); }

  /** The bytes so far, handed over (never written again): the next message starts afresh. */
  take(): Buffer {
    const out = this.view();
    this.reset();
    return out;
  }

  reset(): void {
    this.buf = null;
    this.length = 0;
  }
}
