import { createHash } from 'node:crypto';

/**
 * Opus in-band FEC decoding for the libopus that opusscript 0.1.1 ships as WebAssembly.
 *
 * An Opus packet may carry, next to its own frame, a low-bitrate copy of the frame before it
 * (LBRR: RFC 6716 §2.1.7 and §4.2.4). When a packet is lost, libopus rebuilds it from the next
 * one with opus_decode(st, next, len, pcm, frame_size, decode_fec = 1), which sounds much
 * better than concealment (PLC). opusscript only reaches opus_decode(…, 0), and its link-time
 * optimised build turned that 0 into a constant: opus_decode and opus_decode_native are inlined
 * into OpusScriptHandler::_decode (function 202), and opus_decode_frame (function 55) lost its
 * decode_fec parameter to dead-argument elimination. Nothing in the module can pass a 1, and
 * no decoder ctl selects FEC; but the SILK code that decodes LBRR data is all still there.
 *
 * So we patch the module's bytes when we load it: one new mutable i32 global, exported as
 * `fec`, and four byte-level insertions, each reading that global at a place where libopus 1.4
 * (the version opusscript builds; src/opus_decoder.c of the v1.4 tag) reads decode_fec on the
 * path a single-frame packet takes — see PATCHES. With `fec = 0` every rewritten instruction
 * computes what the original did, so decoding is bit-identical to the unpatched module. With
 * `fec = 1`, handler._decode(next) is opus_decode(st, next, len, pcm, frameSizeOf(next), 1).
 * Both were checked against a native build of libopus 1.4 when the patch was written (bit-exact
 * at 8 kHz; within 1 LSB of float rounding at 48 kHz), and test/media/opusFec.test.ts keeps
 * checking the first and that FEC beats PLC.
 *
 * It only fits the exact build it was written for, so the input must be that build (sha256),
 * each pattern must occur exactly once in its function, and the result must validate.
 * Otherwise the caller gets the reason and keeps the unpatched module: PLC instead of FEC.
 */

/** sha256 of opusscript 0.1.1's build/opusscript_native_wasm.wasm. */
export const OPUSSCRIPT_WASM_SHA256 = 'e24b269dbfde9f357de19f5b4f6458010be356d7122b0bb8bfe439504a6d5c33';

/** Function indices in that build (imports included); test/media/opusFec.test.ts identifies them structurally. */
export const FUNC = { decodeFrame: 55, handlerDecode: 202, silkDecodeFrame: 123 } as const;

const SECTION = { import: 2, global: 6, export: 7, code: 10 } as const;
const OP = { globalGet: 0x23, brIf: 0x0d, select: 0x1b, i32Const: 0x41, i32Shl: 0x74 } as const;

interface Patch { func: number; what: string; find: number[]; replace: (g: number) => number[] }

/**
 * The rewrites, as bytes of the pinned build; `g` is the new global's index. Each replacement
 * is the found sequence with instructions added. Local numbers are those the compiler gave
 * the C variables.
 */
const PATCHES: Patch[] = [
  {
    // opus_decode_frame, line 398: `lost_flag = data == NULL ? 1 : 2 * decode_fec;`, compiled
    // as `local.get 1 (data); i32.eqz; local.set 18`. Becomes select(1, fec << 1, data == 0).
    // lost_flag 2 is what makes silk_Decode read the LBRR frame instead of the normal one.
    func: FUNC.decodeFrame, what: 'lost_flag',
    find: [0x20, 0x01, 0x45, 0x21, 0x12],
    replace: (g) => [OP.i32Const, 1, OP.globalGet, g, OP.i32Const, 1, OP.i32Shl, 0x20, 0x01, 0x45, OP.select, 0x21, 0x12],
  },
  {
    // Line 422: `if (!decode_fec && mode != CELT_ONLY && data != NULL && ec_tell(..) ..)` reads
    // the CELT redundancy flag from the packet; the LBRR decode must not. Compiled, inside the
    // SILK branch: `i32.const 17; local.set 18` (start_band = 17 of line 452, hoisted), then the
    // data != NULL test `local.get 33; i32.const 1; i32.and; i32.eqz; br_if 1`. A
    // `global.get fec; br_if 1` in between takes the same "no redundancy" exit.
    func: FUNC.decodeFrame, what: 'redundancy',
    find: [0x41, 0x11, 0x21, 0x12, 0x20, 0x21, 0x41, 0x01, 0x71, 0x45, 0x0d, 0x01],
    replace: (g) => [0x41, 0x11, 0x21, 0x12, OP.globalGet, g, OP.brIf, 1, 0x20, 0x21, 0x41, 0x01, 0x71, 0x45, 0x0d, 0x01],
  },
  {
    // Line 524: hybrid packets run the CELT layer with `decode_fec ? NULL : data`, i.e. CELT
    // conceals its band while SILK decodes LBRR. Of the call's arguments `local.get 13
    // (celt_dec); local.get 1 (data); local.get 2; local.get 3; local.get 34`, data becomes
    // select(0, data, fec).
    func: FUNC.decodeFrame, what: 'celt_data',
    find: [0x20, 0x0d, 0x20, 0x01, 0x20, 0x02, 0x20, 0x03, 0x20, 0x22],
    replace: (g) => [0x20, 0x0d, OP.i32Const, 0, 0x20, 0x01, OP.globalGet, g, OP.select, 0x20, 0x02, 0x20, 0x03, 0x20, 0x22],
  },
  {
    // opus_decode_native (inlined into _decode): the decode_fec branch (lines 681-711) returns
    // before `opus_pcm_soft_clip(pcm, …, st->softclip_mem)` (line 742), which the normal branch
    // always runs for opus_decode (soft_clip = 1, line 822). The inlined soft clip opens with its
    // `if (!declip_mem) return` (`local.get 15; i32.const 76; i32.add; local.tee 25; i32.eqz;
    // br_if 0`); a `global.get fec; br_if 0` after it leaves both samples and clip memory alone.
    func: FUNC.handlerDecode, what: 'soft_clip',
    find: [0x20, 0x0f, 0x41, 0xcc, 0x00, 0x6a, 0x22, 0x19, 0x45, 0x0d, 0x00],
    replace: (g) => [0x20, 0x0f, 0x41, 0xcc, 0x00, 0x6a, 0x22, 0x19, 0x45, 0x0d, 0x00, OP.globalGet, g, OP.brIf, 0],
  },
];

// Just enough WebAssembly binary reading for the patch (and for the structural checks in the test).

/** An unsigned LEB128 number at `pos`, and the position after it. */
export function readLeb(buf: Uint8Array, pos: number): [value: number, next: number] {
  let value = 0;
  let shift = 0;
  let b: number;
  do {
    b = buf[pos++];
    value |= (b & 0x7f) << shift;
    shift += 7;
  } while (b & 0x80);
  return [value >>> 0, pos];
}

function leb(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return Buffer.from(out);
}

export interface WasmSection { id: number; start: number; contentStart: number; end: number }

/** The module's sections in order (the 8-byte header skipped). */
export function wasmSections(wasm: Uint8Array): WasmSection[] {
  const list: WasmSection[] = [];
  for (let pos = 8; pos < wasm.length;) {
    const [size, contentStart] = readLeb(wasm, pos + 1);
    list.push({ id: wasm[pos], start: pos, contentStart, end: contentStart + size });
    pos = contentStart + size;
  }
  return list;
}

/** Imported functions come first in the function index space; also says whether any global is imported. */
export function countImports(wasm: Uint8Array, imports: WasmSection): { funcs: number; globals: number } {
  let [n, p] = readLeb(wasm, imports.contentStart);
  let funcs = 0;
  let globals = 0;
  const limits = () => { const flags = wasm[p++]; [, p] = readLeb(wasm, p); if (flags & 1) [, p] = readLeb(wasm, p); };
  for (let i = 0; i < n; i++) {
    let len: number;
    [len, p] = readLeb(wasm, p); p += len; // module name
    [len, p] = readLeb(wasm, p); p += len; // field name
    const kind = wasm[p++];
    if (kind === 0) { [, p] = readLeb(wasm, p); funcs++; }
    else if (kind === 1) { p++; limits(); } // table: element type, limits
    else if (kind === 2) limits(); // memory
    else if (kind === 3) { p += 2; globals++; } // global: value type, mutability
    else throw new Error(`unknown import kind ${kind}`);
  }
  return { funcs, globals };
}

/** Function bodies (without their size prefix), indexed from the first non-imported function. */
export function codeBodies(wasm: Uint8Array, code: WasmSection): Uint8Array[] {
  let [n, p] = readLeb(wasm, code.contentStart);
  const bodies: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const [size, q] = readLeb(wasm, p);
    bodies.push(wasm.subarray(q, q + size));
    p = q + size;
  }
  return bodies;
}

function occurrences(hay: Buffer, needle: Buffer): number[] {
  const hits: number[] = [];
  for (let i = hay.indexOf(needle); i >= 0; i = hay.indexOf(needle, i + 1)) hits.push(i);
  return hits;
}

/**
 * Returns opusscript's module with the `fec` switch, or why not. `pinnedSha256` is a parameter
 * only so tests can feed deliberately altered builds through the pattern checks.
 */
export function patchOpusscriptWasm(input: Uint8Array, pinnedSha256 = OPUSSCRIPT_WASM_SHA256): { wasm: Buffer } | { reason: string } {
  const wasm = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  const sha = createHash('sha256').update(wasm).digest('hex');
  if (sha !== pinnedSha256) return { reason: `opusscript wasm is not the build the FEC patch was made for (sha256 ${sha.slice(0, 12)}…)` };
  try {
    const sections = wasmSections(wasm);
    const one = (id: number) => {
      const s = sections.filter((x) => x.id === id);
      if (s.length !== 1) throw new Error(`section ${id} found ${s.length} times`);
      return s[0];
    };
    const imports = countImports(wasm, one(SECTION.import));
    // The new global's index is the count of defined globals only if none is imported; one LEB byte keeps the patterns simple.
    const globalSection = one(SECTION.global);
    const [globalCount, globalItems] = readLeb(wasm, globalSection.contentStart);
    if (imports.globals !== 0 || globalCount > 127) return { reason: 'unexpected globals in the opusscript wasm' };
    const g = globalCount;

    const bodies = codeBodies(wasm, one(SECTION.code)).map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    for (const patch of PATCHES) {
      const k = patch.func - imports.funcs;
      const body = bodies[k];
      const hits = body ? occurrences(body, Buffer.from(patch.find)) : [];
      if (hits.length !== 1) return { reason: `FEC patch '${patch.what}' matches ${hits.length} times in function ${patch.func}, not once` };
      bodies[k] = Buffer.concat([body.subarray(0, hits[0]), Buffer.from(patch.replace(g)), body.subarray(hits[0] + patch.find.length)]);
    }

    // globals + (mut i32) = 0; exports + "fec" -> that global; code with the new bodies.
    const exportSection = one(SECTION.export);
    const [exportCount, exportItems] = readLeb(wasm, exportSection.contentStart);
    const replaced = new Map<number, Buffer>([
      [SECTION.global, Buffer.concat([leb(globalCount + 1), wasm.subarray(globalItems, globalSection.end), Buffer.from([0x7f, 0x01, OP.i32Const, 0x00, 0x0b])])],
      [SECTION.export, Buffer.concat([leb(exportCount + 1), wasm.subarray(exportItems, exportSection.end), leb(3), Buffer.from('fec'), Buffer.from([0x03]), leb(g)])],
      [SECTION.code, Buffer.concat([leb(bodies.length), ...bodies.flatMap((b) => [leb(b.length), b])])],
    ]);
    const parts: Buffer[] = [wasm.subarray(0, 8)];
    for (const s of sections) {
      const content = replaced.get(s.id);
      parts.push(content ? Buffer.concat([Buffer.from([s.id]), leb(content.length), content]) : wasm.subarray(s.start, s.end));
    }
    const out = Buffer.concat(parts);
    if (!WebAssembly.validate(out)) return { reason: 'FEC-patched opusscript wasm does not validate' };
    return { wasm: out };
  } catch (err) {
    return { reason: `FEC patch failed: ${(err as Error).message}` };
  }
}

/**
 * Whether `packet` carries LBRR data for the frame before it: a single-frame (TOC code 0) SILK
 * or hybrid packet whose LBRR flag is set. SILK starts the range-coded payload with one VAD
 * bit per 20 ms SILK frame, then the LBRR flag (RFC 6716 §4.2.3), each with probability 1/2;
 * while the range has not been renormalised such bits are exactly the leading bits of the
 * first payload byte. (Of a stereo packet this is the mid channel's flag.)
 */
export function hasLbrr(packet: Uint8Array): boolean {
  if (packet.length < 3) return false; // libopus conceals a frame of 0 or 1 byte
  const config = packet[0] >> 3;
  if ((packet[0] & 3) !== 0 || config >= 16) return false; // several frames, or CELT-only
  // SILK-only configs 0-11 are 10/20/40/60 ms (one, one, two, three SILK frames); hybrid is 10/20 ms.
  const silkFrames = config < 12 ? [1, 1, 2, 3][config & 3] : 1;
  return (packet[1] & (0x80 >> silkFrames)) !== 0;
}
