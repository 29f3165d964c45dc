import { OpusDecoder, OpusEncoder } from './opus';
import { pcmaDecode, pcmaEncode, pcmuDecode, pcmuEncode } from './g711';

export type G711Law = 'pcmu' | 'pcma';

/**
 * Browser Opus → narrowband PCM for the SIP side. libopus decodes straight to 8 kHz (it
 * resamples internally), so no resampler sits on the per-packet path.
 */
export class OpusToG711 {
  private readonly decoder = new OpusDecoder({ sampleRate: 8000, channels: 1 });
  private readonly out = Buffer.alloc(160);
  malformed = 0;
  concealed = 0;

  constructor(readonly law: G711Law) {}

  /** Decodes one Opus payload (null = lost: conceal) to 8 kHz PCM (a view, valid until the next call). */
  decode(payload: Uint8Array | null): Int16Array {
    try {
      if (payload === null) this.concealed++;
      return this.decoder.decode(payload);
    } catch {
      this.malformed++;
      this.concealed++;
      try { return this.decoder.decode(null); } catch { return new Int16Array(0); }
    }
  }

  /** 160 PCM samples (20 ms at 8 kHz) → G.711 bytes (a reused buffer: copy before keeping). */
  encodeG711(pcm: Int16Array): Buffer {
    const out = pcm.length === 160 ? this.out : Buffer.allocUnsafe(pcm.length);
    return this.law === 'pcmu' ? pcmuEncode(pcm, out) : pcmaEncode(pcm, out);
  }

  close(): void {
    this.decoder.delete();
  }
}

/** SIP-side G.711 → Opus for the browser, encoded from 8 kHz input. */
export class G711ToOpus {
  private readonly encoder: OpusEncoder;
  private readonly pcm = new Int16Array(160);

  constructor(readonly law: G711Law, opts: { complexity?: number; bitrate?: number } = {}) {
    this.encoder = new OpusEncoder({ sampleRate: 8000, channels: 1, application: 'voip', complexity: opts.complexity ?? OPUS_DEFAULT_COMPLEXITY, bitrate: opts.bitrate ?? OPUS_DEFAULT_BITRATE, fec: true, packetLossPercent: 5 });
  }

  decodeG711(data: Uint8Array): Int16Array {
    const out = data.length === 160 ? this.pcm : new Int16Array(data.length);
    return this.law === 'pcmu' ? pcmuDecode(data, out) : pcmaDecode(data, out);
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
 * bench/codecQuality.ts (8 kHz speech-like input, segmental SNR): complexity 8-10 costs ~1.8x
 * the CPU of 5 for ~0.4 dB, 2 saves ~20 % for ~0.3 dB less; bitrate moves quality more than
 * complexity (16 -> 24 -> 32 kb/s: 13.3 -> 13.7 -> 14.6 dB). 5 at 24 kb/s is the middle.
 */
export const OPUS_DEFAULT_COMPLEXITY = 5;
export const OPUS_DEFAULT_BITRATE = 24000;
