/**
 * Opus in-band FEC decoding (src/media/codecs/opusFec.ts): the load-time patch of opusscript's
 * libopus still applies to the installed build (an upgrade fails here, loudly), the functions
 * it rewrites are the ones it claims, an altered build falls back to the unpatched module,
 * decoding with the switch off is bit-identical to the unpatched module, and FEC rebuilds lost
 * frames measurably better than PLC.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { OpusDecoder, OpusEncoder, opusFecStatus, type OpusRate } from '../../src/media/codecs';
import { loadOpusscript, type LoadedOpus } from '../../src/media/codecs/opus';
import { codeBodies, countImports, FUNC, hasLbrr, patchOpusscriptWasm, readLeb, wasmSections } from '../../src/media/codecs/opusFec';

const wasm = readFileSync(require.resolve('opusscript/build/opusscript_native_wasm.wasm'));

test('the FEC patch applies to the installed opusscript, and the gateway uses it', () => {
  const version = JSON.parse(readFileSync(require.resolve('opusscript/package.json'), 'utf8')).version;
  const r = patchOpusscriptWasm(wasm);
  assert.ok('wasm' in r, `opusscript ${version} is not the build src/media/codecs/opusFec.ts patches (${'reason' in r ? r.reason : ''}): ` +
    'recheck the patch against the new build, or lose FEC decoding (PLC only)');
  assert.ok(WebAssembly.validate(new Uint8Array(r.wasm)));
  assert.deepEqual(opusFecStatus(), { available: true, reason: null });
});

/** Reads what the structural checks need from the module: no name section, bytes only. */
function anatomy(bytes: Buffer) {
  const secs = wasmSections(bytes);
  const sec = (id: number) => secs.find((s) => s.id === id)!;
  const imports = countImports(bytes, sec(2));
  // Function import names -> function index.
  const importIndex = new Map<string, number>();
  let [n, p] = readLeb(bytes, sec(2).contentStart);
  for (let i = 0, f = 0; i < n; i++) {
    let len: number;
    [len, p] = readLeb(bytes, p); p += len;
    [len, p] = readLeb(bytes, p);
    const name = bytes.subarray(p, p + len).toString(); p += len;
    assert.equal(bytes[p++], 0, 'this build imports functions only');
    [, p] = readLeb(bytes, p);
    importIndex.set(name, f++);
  }
  // Types, and each defined function's type.
  const types: Array<{ params: number[]; results: number[] }> = [];
  [n, p] = readLeb(bytes, sec(1).contentStart);
  for (let i = 0; i < n; i++) {
    p++; // 0x60
    let k: number;
    [k, p] = readLeb(bytes, p); const params = [...bytes.subarray(p, p + k)]; p += k;
    [k, p] = readLeb(bytes, p); const results = [...bytes.subarray(p, p + k)]; p += k;
    types.push({ params, results });
  }
  const funcTypes: number[] = [];
  [n, p] = readLeb(bytes, sec(3).contentStart);
  for (let i = 0; i < n; i++) { let t: number; [t, p] = readLeb(bytes, p); funcTypes.push(t); }
  // Data segment 0 (active, `i32.const 1024`) holds the C strings; elem segment 0 the table.
  [, p] = readLeb(bytes, sec(11).contentStart);
  assert.equal(bytes[p] === 0 && bytes[p + 1], 0x41);
  let base: number, dataLen: number;
  [base, p] = readLeb(bytes, p + 2); p++;
  [dataLen, p] = readLeb(bytes, p);
  const data = bytes.subarray(p, p + dataLen);
  const cString = (addr: number) => data.subarray(addr - base, data.indexOf(0, addr - base)).toString();
  const table = new Map<number, number>();
  [, p] = readLeb(bytes, sec(9).contentStart);
  let offset: number, count: number;
  [offset, p] = readLeb(bytes, p + 2); p++;
  [count, p] = readLeb(bytes, p);
  for (let i = 0; i < count; i++) { let f: number; [f, p] = readLeb(bytes, p); table.set(offset + i, f); }
  const bodies = codeBodies(bytes, sec(10));
  return {
    body: (f: number) => Buffer.from(bodies[f - imports.funcs]),
    type: (f: number) => types[funcTypes[f - imports.funcs]],
    importIndex, cString, table,
  };
}

const leb = (v: number): number[] => { const o: number[] = []; do { let b = v & 0x7f; v >>>= 7; if (v) b |= 0x80; o.push(b); } while (v); return o; };
const count = (hay: Buffer, needle: number[]) => { const b = Buffer.from(needle); let c = 0; for (let i = hay.indexOf(b); i >= 0; i = hay.indexOf(b, i + 1)) c++; return c; };
const call = (f: number) => [0x10, ...leb(f)];

test('the functions the patch rewrites are _decode, opus_decode_frame and silk_decode_frame, found from the bytes', () => {
  const m = anatomy(wasm);
  const I32 = 0x7f;
  // embind: OpusScriptHandler's methods are registered by name; "_decode" (C string at 3168, 5
  // arguments) gets the member-function pointer 9 (stored just before) through import "c",
  // _embind_register_class_function. Table slot 9 is function 202.
  assert.deepEqual([3160, 3168, 2131, 2144].map(m.cString), ['_encode', '_decode', '_encoder_ctl', '_decoder_ctl']);
  const bindings = m.body(155);
  assert.equal(count(bindings, [0x41, 9, 0x36, 0x02, 0x00, 0x41, ...leb(54540), 0x41, ...leb(3168), 0x41, 5]), 1);
  assert.equal(count(bindings, call(m.importIndex.get('c')!)), 4, 'four methods registered');
  assert.equal(m.table.get(9), FUNC.handlerDecode);
  // _decode with opus_decode and opus_decode_native inlined: MAX_FRAME_SIZE 5760 and two calls
  // of opus_decode_frame (the PLC loop and the per-frame loop).
  assert.ok(count(m.body(FUNC.handlerDecode), [0x41, ...leb(5760)]) >= 1);
  assert.equal(count(m.body(FUNC.handlerDecode), call(FUNC.decodeFrame)), 2);
  // opus_decode_frame: five i32 parameters (decode_fec removed), recursive three times (PLC in
  // 20 ms pieces and transitions), calls silk_decode_frame twice, asserts in src/opus_decoder.c.
  assert.deepEqual(m.type(FUNC.decodeFrame), { params: [I32, I32, I32, I32, I32], results: [I32] });
  assert.equal(count(m.body(FUNC.decodeFrame), call(FUNC.decodeFrame)), 3);
  assert.equal(count(m.body(FUNC.decodeFrame), call(FUNC.silkDecodeFrame)), 2);
  assert.equal(m.cString(3680), 'src/opus_decoder.c');
  assert.ok(count(m.body(FUNC.decodeFrame), [0x41, ...leb(3680)]) >= 1);
  // silk_decode_frame(psDec, psRangeDec, pOut, pN, lostFlag, condCoding, arch) dispatches on
  // lostFlag: normal, PLC, LBRR. That LBRR branch is what the patch makes reachable.
  assert.deepEqual(m.type(FUNC.silkDecodeFrame), { params: [I32, I32, I32, I32, I32, I32, I32], results: [I32] });
  assert.equal(count(m.body(FUNC.silkDecodeFrame), [0x20, 4, 0x0e, 3, 1, 2, 0, 2]), 1);
});

test('an altered build is refused with the reason, and the loader falls back to the unpatched module', () => {
  const flipped = Buffer.from(wasm);
  flipped[flipped.length - 1] ^= 1;
  const r1 = patchOpusscriptWasm(flipped);
  assert.ok('reason' in r1 && /not the build/.test(r1.reason));
  // Same hash check passed, but one rewrite site changed (lost_flag's `local.set 18` -> 19).
  const moved = Buffer.from(wasm);
  const secs = wasmSections(moved);
  const view = codeBodies(moved, secs.find((s) => s.id === 10)!)[FUNC.decodeFrame - countImports(moved, secs.find((s) => s.id === 2)!).funcs];
  const body = Buffer.from(view.buffer, view.byteOffset, view.byteLength); // writes go into `moved`
  const site = body.indexOf(Buffer.from([0x20, 0x01, 0x45, 0x21, 0x12]));
  assert.ok(site > 0);
  body[site + 4] = 0x13;
  const r2 = patchOpusscriptWasm(moved, createHash('sha256').update(moved).digest('hex'));
  assert.ok('reason' in r2 && /'lost_flag' matches 0 times/.test(r2.reason), 'reason' in r2 ? r2.reason : 'patched');
  // loadOpusscript with that build: no switch, the reason, and a working (unpatched) libopus.
  const loaded = loadOpusscript({ fec: true, wasm: flipped });
  assert.equal(loaded.fec, null);
  assert.match(loaded.noFecReason!, /not the build/);
  const enc = new OpusEncoder({ sampleRate: 48000 });
  assert.equal(rawDecoder(loaded, 8000)(enc.encode(speechLike(960, 0))).length, 160);
  enc.delete();
});

/** A plain decode through a module's raw handler, independent of OpusDecoder (one byte per 16-bit slot). */
function rawDecoder(m: LoadedOpus, rate: OpusRate): (pkt: Uint8Array | null) => Int16Array {
  const n = m.native;
  const h = new n.OpusScriptHandler(rate, 1, 2048);
  const inPtr = n._malloc(4000);
  const pcmPtr = n._malloc((rate * 120 / 1000) * 4);
  let lastToc = -1;
  return (pkt) => {
    if (pkt) { n.HEAPU8.set(pkt, inPtr); lastToc = pkt[0]; } else n.HEAPU8[inPtr] = lastToc & 0xfc;
    const samples = h._decode(inPtr, pkt ? pkt.length : 1, pcmPtr);
    assert.ok(samples > 0, `decode ${samples}`);
    const out = new Int16Array(samples);
    for (let i = 0, s = pcmPtr >> 1; i < samples; i++, s += 2) out[i] = ((n.HEAPU16[s] & 0xff) | (n.HEAPU16[s + 1] << 8)) << 16 >> 16;
    return out;
  };
}

/**
 * Speech-like 48 kHz audio, deterministic: a harmonic series on a gliding pitch (110-230 Hz),
 * shaped by two moving formants, in 4 Hz syllables with pauses.
 */
function speechLike(samples: number, from: number): Int16Array {
  const out = new Int16Array(samples);
  for (let i = 0; i < samples; i++) {
    const t = (from + i) / 48000;
    const f0 = 170 + 45 * Math.sin(2 * Math.PI * 0.37 * t) + 15 * Math.sin(2 * Math.PI * 1.3 * t);
    // Pitch phase: the integral of f0 (closed form, so any sample can be generated on its own).
    const phase = 2 * Math.PI * (170 * t - (45 / (2 * Math.PI * 0.37)) * Math.cos(2 * Math.PI * 0.37 * t) - (15 / (2 * Math.PI * 1.3)) * Math.cos(2 * Math.PI * 1.3 * t));
    const f1 = 500 + 250 * Math.sin(2 * Math.PI * 0.9 * t);
    const f2 = 1500 + 600 * Math.sin(2 * Math.PI * 0.55 * t + 1);
    let v = 0;
    for (let k = 1; k * f0 < 3800; k++) {
      const f = k * f0;
      v += (1 / (1 + ((f - f1) / 120) ** 2) + 0.5 / (1 + ((f - f2) / 180) ** 2)) * Math.sin(k * phase);
    }
    const syllable = Math.max(0, Math.sin(2 * Math.PI * 4 * t)) ** 0.7 * (Math.sin(2 * Math.PI * 0.25 * t) > -0.6 ? 1 : 0);
    out[i] = Math.round(4500 * v * syllable);
  }
  return out;
}

/** `frames` 20 ms packets of speechLike, as a browser with FEC on and loss reported would send them. */
function browserStream(frames: number): Buffer[] {
  const enc = new OpusEncoder({ sampleRate: 48000, complexity: 5, bitrate: 32000, fec: true, packetLossPercent: 20 });
  const packets = Array.from({ length: frames }, (_, f) => enc.encode(speechLike(960, f * 960)));
  enc.delete();
  return packets;
}

test('with the switch off (every decode()), the patched module decodes bit-identically to the unpatched one', () => {
  const packets = browserStream(150);
  const lost = (f: number) => f % 9 === 4 || f % 13 === 7;
  for (const rate of [8000, 48000] as const) {
    const unpatched = rawDecoder(loadOpusscript({ fec: false }), rate);
    const patched = new OpusDecoder({ sampleRate: rate });
    const other = new OpusDecoder({ sampleRate: rate }); // FEC decodes in between must leave the switch off
    let samples = 0;
    for (let f = 0; f < packets.length; f++) {
      const a = Array.from(patched.decode(lost(f) ? null : packets[f]));
      const b = Array.from(unpatched(lost(f) ? null : packets[f]));
      assert.deepEqual(a, b, `frame ${f} at ${rate} Hz`);
      samples += a.length;
      if (f + 1 < packets.length) other.decodeFec(packets[f + 1]);
    }
    assert.equal(samples, packets.length * rate / 50);
    patched.delete(); other.delete();
  }
});

test('hasLbrr reads the LBRR flag of single-frame SILK and hybrid packets only', () => {
  const silk20 = (byte1: number) => Uint8Array.of((9 << 3) | 0, byte1, 0); // SILK WB 20 ms, code 0
  assert.equal(hasLbrr(silk20(0x40)), true);
  assert.equal(hasLbrr(silk20(0xc0)), true);
  assert.equal(hasLbrr(silk20(0x80)), false, 'VAD set, LBRR not');
  assert.equal(hasLbrr(Uint8Array.of((10 << 3) | 0, 0x20, 0)), true, 'SILK 40 ms: two VAD bits, then the flag');
  assert.equal(hasLbrr(Uint8Array.of((15 << 3) | 0, 0x40, 0)), true, 'hybrid FB 20 ms');
  assert.equal(hasLbrr(Uint8Array.of((9 << 3) | 1, 0x40, 0, 0)), false, 'two frames');
  assert.equal(hasLbrr(Uint8Array.of((31 << 3) | 0, 0xff, 0xff)), false, 'CELT-only: no SILK layer');
  assert.equal(hasLbrr(Uint8Array.of(9 << 3, 0x40)), false, 'a 1-byte frame is concealed by libopus');
});

test('decodeFec conceals with PLC, as libopus does, when the next packet cannot carry FEC', () => {
  const packets = browserStream(12);
  const a = new OpusDecoder({ sampleRate: 8000 });
  const b = new OpusDecoder({ sampleRate: 8000 });
  for (let f = 0; f < 10; f++) { a.decode(packets[f]); b.decode(packets[f]); }
  const celt = Buffer.from(packets[10]);
  celt[0] = (31 << 3) | (celt[0] & 7); // the same bytes announced as CELT-only
  assert.equal(a.fecUsable(celt), false);
  assert.deepEqual(Array.from(a.decodeFec(celt)), Array.from(b.decode(null)));
  a.delete(); b.delete();
});

/** Sum of squares of `ref`, and of `ref - x`. */
function energies(ref: Int16Array, x: Int16Array): [number, number] {
  let s = 0, e = 0;
  for (let i = 0; i < ref.length; i++) { s += ref[i] * ref[i]; e += (ref[i] - x[i]) ** 2; }
  return [s, e];
}

test('FEC rebuilds isolated lost frames far closer to the loss-free decode than PLC (8 kHz, as toward SIP)', (t) => {
  // 6 s of speech-like audio; every 7th frame lost (isolated: the next always arrives).
  const packets = browserStream(300);
  const lost = new Set<number>();
  for (let f = 10; f < packets.length - 1; f += 7) lost.add(f);
  const decode = (how: 'clean' | 'plc' | 'fec') => {
    const d = new OpusDecoder({ sampleRate: 8000 });
    const out = packets.map((p, f) => Int16Array.from(!lost.has(f) || how === 'clean' ? d.decode(p) : how === 'plc' ? d.decode(null) : d.decodeFec(packets[f + 1])));
    d.delete();
    return out;
  };
  const clean = decode('clean');
  const plc = decode('plc');
  const fec = decode('fec');
  let signal = 0, plcError = 0, fecError = 0, withLbrr = 0;
  for (const f of lost) {
    const [s, ep] = energies(clean[f], plc[f]);
    const [, ef] = energies(clean[f], fec[f]);
    signal += s; plcError += ep; fecError += ef;
    if (hasLbrr(packets[f + 1])) withLbrr++;
  }
  const snrPlc = 10 * Math.log10(signal / plcError);
  const snrFec = 10 * Math.log10(signal / fecError);
  const detail = `${lost.size} lost frames, ${withLbrr} followed by LBRR: SNR PLC ${snrPlc.toFixed(1)} dB, FEC ${snrFec.toFixed(1)} dB`;
  // In voiced speech PLC can only extrapolate the last pitch period (around 0 dB against the
  // real frame), while LBRR is a coarser coding of the very frame: about 10 dB better when this
  // was measured (+9 to +13 dB over bitrates, complexities and speech or synthetic input, same
  // as native libopus 1.4). 6 dB is half that margin, and a FEC path that silently fell back to
  // PLC (0 dB gain) cannot pass it.
  t.diagnostic(detail);
  assert.ok(withLbrr >= lost.size / 3, `the encoder added LBRR: ${detail}`);
  assert.ok(snrFec - snrPlc >= 6, detail);
});
