import { OpusDecoder, OpusEncoder } from './opus';
import { pcmaDecode, pcmaEncode, pcmuDecode, pcmuEncode } from './g711';

export type G711Law = 'pcmu' | 'pcma';

/**
 * Browser Opus → narrowband PCM for the SIP side. libopus decodes straight to 8 kHz (it
 * resamples internally), so no resampler sits on the per-packet path.
 */
export class OpusToG711 {
  private readonly decoder = new OpusDecoder({ sampleRate: 8000, channels: 1 });
  /** Output for one frame of the trunk's ptime (160 bytes at 20 ms), resized when the ptime changes. */
  private out = Buffer.alloc(160);
  malformed = 0;
  /** Frames synthesised by PLC (lost, or malformed). */
  concealed = 0;
  /** Lost frames rebuilt from the in-band FEC data of the packet after them. */
  fecRecovered = 0;

  /** May change mid-call (a re-INVITE from PCMU to PCMA): the decoder's state carries on. */
  constructor(public law: G711Law) {}

  /** Decodes one Opus payload (null = lost: conceal) to 8 kHz PCM (a view, valid until the next call). */
  decode(payload: Uint8Array | null): Int16Array {
    try {
      // An empty payload is no Opus packet (RFC 7587 §4.2: at least the TOC byte): concealed,
      // and counted as malformed like one libopus refuses.
      if (payload !== null && payload.length === 0) { this.malformed++; payload = null; }
      if (payload === null) this.concealed++;
      return this.decoder.decode(payload);
    } catch {
      this.malformed++;
      this.concealed++;
      try { return this.decoder.decode(null); } catch { return new Int16Array(0); }
    }
  }

  /**
   * One frame of a DTX pause (the browser sent nothing because it had nothing to say): what
   * libopus makes of no packet after a DTX frame is its comfort noise. Not a loss: not counted
   * as concealed.
   */
  comfortNoise(): Int16Array {
    try { return this.decoder.decode(null); } catch { return new Int16Array(0); }
  }

  /**
   * The frame lost just before `next` (which has arrived): rebuilt from `next`'s in-band FEC
   * when it carries some, else concealed. `decode(next)` must follow for `next` itself.
   */
  recover(next: Uint8Array): Int16Array {
    if (this.decoder.fecUsable(next)) {
      try {
        const pcm = this.decoder.decodeFec(next);
        this.fecRecovered++;
        return pcm;
      } catch {
        // A packet libopus rejects: its own decode() right after counts it as malformed.
      }
    }
    return this.decode(null);
  }

  /** One frame of PCM (160 samples at 20 ms, 240 at 30 …) → G.711 bytes (a reused buffer: copy before keeping). */
  encodeG711(pcm: Int16Array): Buffer {
    if (this.out.length !== pcm.length) this.out = Buffer.alloc(pcm.length);
    return this.law === 'pcmu' ? pcmuEncode(pcm, this.out) : pcmaEncode(pcm, this.out);
  }

  close(): void {
    this.decoder.delete();
  }
}

/** SIP-side G.711 → Opus for the browser, encoded from 8 kHz input. */
export class G711ToOpus {
  private readonly encoder: OpusEncoder;
  /** PCM of one trunk frame (160 samples at 20 ms), resized when the trunk's ptime changes. */
  private pcm = new Int16Array(160);

  /** May change mid-call (a re-INVITE from PCMU to PCMA): the encoder's state carries on. */
  constructor(public law: G711Law, opts: { complexity?: number; bitrate?: number } = {}) {
    this.encoder = new OpusEncoder({ sampleRate: 8000, channels: 1, application: 'voip', complexity: opts.complexity ?? OPUS_DEFAULT_COMPLEXITY, bitrate: opts.bitrate ?? OPUS_DEFAULT_BITRATE, fec: true, packetLossPercent: 5 });
  }

  /** One G.711 frame → PCM (a reused buffer, valid until the next call). */
  decodeG711(data: Uint8Array): Int16Array {
    if (this.pcm.length !== data.length) this.pcm = new Int16Array(data.length);
    return this.law === 'pcmu' ? pcmuDecode(data, this.pcm) : pcmaDecode(data, this.pcm);
  }

  /** One 20 ms frame of 8 kHz PCM (160 samples) → Opus packet. */
  encode(pcm8k: Int16Array): Buffer {
    return this.encoder.encode(pcm8k);
  }

  close(): void {
    this.encoder.delete();
  }
}

/**
 * Narrowband speech from a G.711 trunk carries nothing above 4 kHz, so a modest bitrate and
 * complexity keep the quality of the source at a fraction of the CPU. Measured by
 * bench/codecQuality.ts (8 kHz speech-like input): from complexity 1 to 5 to 10 the encode
 * costs ~50 / ~100 / ~190 µs per 20 ms frame, while segmental SNR stays within 14.0-13.6-14.1 dB
 * and the log-spectral distance within 4.1-4.3-4.4 dB (higher complexity is not closer to the
 * input on either). Bitrate matters more (16 -> 24 kb/s: +1.8 dB SNR at complexity 1). So: 1 at
 * 24 kb/s, and media.opusComplexity for whoever measures otherwise on their own audio.
 */
export const OPUS_DEFAULT_COMPLEXITY = 1;
export const OPUS_DEFAULT_BITRATE = 24000;
