import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { hasLbrr, patchOpusscriptWasm } from './opusFec';

/**
 * Opus through the libopus that opusscript compiles to WebAssembly, with our own binding.
 *
 * opusscript's JavaScript wrapper (0.1.1) cannot be used as is: it builds its PCM views with
 * `HEAPU16.subarray(bytePointer, …)` (element index = byte address, i.e. twice the allocated
 * address), so coders write outside their allocations and the ~80th one in a process fails
 * with "memory access out of bounds". Here every coder gets its own input/output areas in the
 * wasm heap, addressed with correct element offsets, allocated once and freed by `delete()`.
 * The compiled module is loaded once per process and shared, patched so that decodeFec() can
 * use Opus in-band FEC (./opusFec; without the patch decodeFec() conceals instead).
 *
 * Measured here: the compiled OpusScriptHandler exchanges PCM as ONE BYTE PER 16-BIT HEAP SLOT
 * (the little-endian bytes of each sample spread over two uint16 elements) — which is why the
 * wrapper's `HEAPU16.set(byteBuffer)` works at all. So PCM areas are 4 bytes per sample, and
 * we pack/unpack samples ourselves (two stores per sample; cheap next to the codec).
 */

export interface OpusHandler {
  _encode(inPtr: number, inBytes: number, outPtr: number, frameSize: number): number;
  _decode(inPtr: number, inBytes: number, outPtr: number): number;
  _encoder_ctl(ctl: number, arg: number): number;
  _decoder_ctl(ctl: number, arg: number): number;
}
export interface OpusNative {
  HEAPU8: Uint8Array;
  HEAPU16: Uint16Array;
  _malloc(n: number): number;
  _free(p: number): void;
  OpusScriptHandler: { new (rate: number, channels: number, application: number): OpusHandler; destroy_handler(h: OpusHandler): void };
  /** The instance's exports: `fec` is there when the module was loaded patched (./opusFec). */
  asm?: { fec?: unknown };
}
type OpusFactory = (overrides?: { wasmBinary?: Uint8Array }) => OpusNative;

export interface LoadedOpus {
  native: OpusNative;
  /** The decode_fec switch of the patched module; null when it runs unpatched (PLC only). */
  fec: WebAssembly.Global | null;
  /** Why there is no switch (null when there is). */
  noFecReason: string | null;
}

/**
 * Instantiates opusscript's libopus: patched for FEC decoding (./opusFec) when `fec` is asked
 * for and the patch applies, else as shipped. Never throws for the patch's sake. `wasm`
 * replaces the installed module's bytes, for tests. Exported for tests, which compare the two.
 */
export function loadOpusscript(opts: { fec: boolean; wasm?: Uint8Array }): LoadedOpus {
  const req = createRequire(__filename);
  const factory = req('opusscript/build/opusscript_native_wasm.js') as OpusFactory;
  if (!opts.fec) return { native: factory(), fec: null, noFecReason: 'not asked for' };
  let reason: string;
  try {
    const patched = patchOpusscriptWasm(opts.wasm ?? readFileSync(req.resolve('opusscript/build/opusscript_native_wasm.wasm')));
    if ('wasm' in patched) {
      // emscripten compiles Module.wasmBinary synchronously, as it does the file it would read.
      const n = factory({ wasmBinary: patched.wasm });
      if (n.asm?.fec instanceof WebAssembly.Global) return { native: n, fec: n.asm.fec, noFecReason: null };
      reason = 'the patched opusscript module has no fec export';
    } else {
      reason = patched.reason;
    }
  } catch (err) {
    reason = `loading the FEC-patched opusscript failed: ${(err as Error).message}`;
  }
  return { native: factory(), fec: null, noFecReason: reason };
}

let loaded: LoadedOpus | null = null;
/** This process's libopus module (exported for tests, which stand in for a full heap). */
export function opusNative(): OpusNative {
  loaded ??= loadOpusscript({ fec: true });
  return loaded.native;
}

/** Whether lost browser frames can be recovered with in-band FEC in this process, and if not why. */
export function opusFecStatus(): { available: boolean; reason: string | null } {
  opusNative();
  return { available: loaded!.fec !== null, reason: loaded!.noFecReason };
}

const OPUS_ERRORS: Record<number, string> = { [-1]: 'bad argument', [-2]: 'buffer too small', [-3]: 'internal error', [-4]: 'invalid packet', [-5]: 'unimplemented', [-6]: 'invalid state', [-7]: 'allocation failed' };
const APPLICATION = { voip: 2048, audio: 2049 } as const;
const CTL = { SET_BITRATE: 4002, SET_COMPLEXITY: 4010, SET_INBAND_FEC: 4012, SET_PACKET_LOSS_PERC: 4014, SET_DTX: 4016, SET_SIGNAL: 4024 } as const;
const SIGNAL_VOICE = 3001;
/** PCM area bytes for a coder: 120 ms (the longest Opus frame) at its rate, 4 bytes a sample. */
const pcmAreaBytes = (rate: number, channels: number) => (rate * 120 / 1000) * channels * 4;
const MAX_PACKET = 1276 * 3;

export type OpusRate = 8000 | 12000 | 16000 | 24000 | 48000;

/**
 * A new coder's areas on the wasm heap. When the heap can give no more (malloc returns 0, or
 * throws), whatever was had and the coder's handler are freed before the error: the caller
 * (a bridge being set up) reports it and nothing is left behind.
 */
function heapAreas(n: OpusNative, handler: OpusHandler, sizes: number[]): number[] {
  const got: number[] = [];
  try {
    for (const size of sizes) {
      const p = n._malloc(size);
      if (!p) throw new Error('opus: the coders\' heap is full');
      got.push(p);
    }
    return got;
  } catch (err) {
    for (const p of got) n._free(p);
    n.OpusScriptHandler.destroy_handler(handler);
    throw err;
  }
}

/** Live coder count (tests check that `delete()` releases them). */
export let liveOpusCoders = 0;

export class OpusEncoder {
  private handler: OpusHandler | null;
  private readonly pcmPtr: number;
  private readonly outPtr: number;
  readonly frameSamples: number;

  constructor(readonly opts: { sampleRate: OpusRate; channels?: 1 | 2; bitrate?: number; complexity?: number; application?: 'voip' | 'audio'; fec?: boolean; packetLossPercent?: number; dtx?: boolean; frameMs?: number }) {
    const n = opusNative();
    const channels = opts.channels ?? 1;
    this.handler = new n.OpusScriptHandler(opts.sampleRate, channels, APPLICATION[opts.application ?? 'voip']);
    [this.pcmPtr, this.outPtr] = heapAreas(n, this.handler, [pcmAreaBytes(opts.sampleRate, channels), MAX_PACKET]);
    this.frameSamples = (opts.sampleRate * (opts.frameMs ?? 20)) / 1000;
    liveOpusCoders++;
    try {
      this.ctl(CTL.SET_SIGNAL, SIGNAL_VOICE);
      if (opts.bitrate) this.ctl(CTL.SET_BITRATE, opts.bitrate);
      if (opts.complexity !== undefined) this.ctl(CTL.SET_COMPLEXITY, opts.complexity);
      if (opts.fec) { this.ctl(CTL.SET_INBAND_FEC, 1); this.ctl(CTL.SET_PACKET_LOSS_PERC, opts.packetLossPercent ?? 5); }
      if (opts.dtx) this.ctl(CTL.SET_DTX, 1);
    } catch (err) {
      this.delete(); // a refused setting must not leave the coder and its heap areas behind
      throw err;
    }
  }

  private ctl(code: number, value: number): void {
    const r = this.handler!._encoder_ctl(code, value);
    if (r < 0) throw new Error(`opus encoder ctl ${code}: ${OPUS_ERRORS[r] ?? r}`);
  }

  /** Encodes one frame (`frameSamples` per channel) of 16-bit PCM; returns a new Buffer. */
  encode(pcm: Int16Array): Buffer {
    if (!this.handler) throw new Error('opus encoder deleted');
    const n = opusNative();
    const channels = this.opts.channels ?? 1;
    if (pcm.length !== this.frameSamples * channels) throw new Error(`opus encode wants ${this.frameSamples * channels} samples, got ${pcm.length}`);
    const heap = n.HEAPU16;
    let slot = this.pcmPtr >> 1;
    for (let i = 0; i < pcm.length; i++) {
      const v = pcm[i];
      heap[slot++] = v & 0xff;
      heap[slot++] = (v >> 8) & 0xff;
    }
    const len = this.handler._encode(this.pcmPtr, pcm.length * 2, this.outPtr, this.frameSamples);
    if (len < 0) throw new Error(`opus encode: ${OPUS_ERRORS[len] ?? len}`);
    return Buffer.from(n.HEAPU8.subarray(this.outPtr, this.outPtr + len));
  }

  delete(): void {
    if (!this.handler) return;
    const n = opusNative();
    n.OpusScriptHandler.destroy_handler(this.handler);
    n._free(this.pcmPtr);
    n._free(this.outPtr);
    this.handler = null;
    liveOpusCoders--;
  }
}

export class OpusDecoder {
  private handler: OpusHandler | null;
  private readonly inPtr: number;
  private readonly pcmPtr: number;
  private lastToc = -1;
  private out = new Int16Array(960);
  readonly channels: number;

  constructor(readonly opts: { sampleRate: OpusRate; channels?: 1 | 2 }) {
    const n = opusNative();
    this.channels = opts.channels ?? 1;
    this.handler = new n.OpusScriptHandler(opts.sampleRate, this.channels, APPLICATION.voip);
    [this.inPtr, this.pcmPtr] = heapAreas(n, this.handler, [MAX_PACKET, pcmAreaBytes(opts.sampleRate, this.channels)]);
    liveOpusCoders++;
  }

  /**
   * Decodes one packet into PCM at the decoder's rate. `null` conceals one lost frame with
   * libopus PLC: we feed a TOC-only packet (the last packet's configuration, zero-length
   * frame), which libopus treats as a lost frame of that duration. (A zero-length call would
   * conceal 120 ms at once.) Returns this decoder's own output array, valid until the next
   * call: copy to keep.
   */
  decode(packet: Uint8Array | null): Int16Array {
    if (!this.handler) throw new Error('opus decoder deleted');
    const n = opusNative();
    let len: number;
    if (packet === null || packet.length === 0) {
      if (this.lastToc < 0) return new Int16Array(0);
      n.HEAPU8[this.inPtr] = this.lastToc & 0xfc;
      len = 1;
    } else {
      if (packet.length > MAX_PACKET) throw new Error('opus packet too large');
      n.HEAPU8.set(packet, this.inPtr);
      len = packet.length;
    }
    const out = this.run(len);
    if (packet && packet.length > 0) this.lastToc = packet[0];
    return out;
  }

  /**
   * Whether {@link decodeFec} would recover the frame before `next` from in-band FEC rather
   * than conceal it. libopus itself conceals when either the previous or the next packet is
   * CELT-only (no SILK layer, no LBRR), and when `next` has no LBRR its SILK decoder conceals
   * too, so those are PLC here as well. A `next` of several frames is also PLC here (libopus
   * would conceal all but one frame length of the lost time and rebuild that from the LBRR in
   * next's first frame; browsers send one frame per packet).
   */
  fecUsable(next: Uint8Array): boolean {
    return loaded?.fec != null && this.handler !== null && this.lastToc >= 0 && (this.lastToc >> 3) < 16 && next.length <= MAX_PACKET && hasLbrr(next);
  }

  /**
   * The frame lost just before `next`, rebuilt from the LBRR data `next` carries: what
   * opus_decode(st, next, len, pcm, frameSizeOf(next), decode_fec = 1) returns. Conceals with
   * PLC instead when {@link fecUsable} says no. Call `decode(next)` afterwards for `next`'s own
   * frame. Same output array as decode().
   */
  decodeFec(next: Uint8Array): Int16Array {
    if (!this.fecUsable(next)) return this.decode(null);
    opusNative().HEAPU8.set(next, this.inPtr);
    const fec = loaded!.fec!;
    fec.value = 1;
    try {
      return this.run(next.length);
    } finally {
      fec.value = 0; // every other decoder in the process shares the module
    }
  }

  private run(len: number): Int16Array {
    const n = opusNative();
    const samples = this.handler!._decode(this.inPtr, len, this.pcmPtr);
    if (samples < 0) throw new Error(`opus decode: ${OPUS_ERRORS[samples] ?? samples}`);
    const total = samples * this.channels;
    if (this.out.length < total) this.out = new Int16Array(total);
    const heap = n.HEAPU16;
    let slot = this.pcmPtr >> 1;
    const out = this.out;
    for (let i = 0; i < total; i++) {
      out[i] = ((heap[slot] & 0xff) | (heap[slot + 1] << 8)) << 16 >> 16;
      slot += 2;
    }
    return out.length === total ? out : out.subarray(0, total);
  }

  delete(): void {
    if (!this.handler) return;
    const n = opusNative();
    n.OpusScriptHandler.destroy_handler(this.handler);
    n._free(this.inPtr);
    n._free(this.pcmPtr);
    this.handler = null;
    liveOpusCoders--;
  }
}

export function liveCoders(): number {
  return liveOpusCoders;
}
