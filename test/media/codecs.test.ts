import { test } from 'node:test';
import assert from 'node:assert/strict';
import { G711ToOpus, liveCoders, OpusDecoder, OpusEncoder, OpusToG711, opusPacketSamples, pcmaDecode, pcmaEncode, pcmaToPcmu, pcmuDecode, pcmuEncode, pcmuToPcma } from '../../src/media/codecs';
import { toneRatio } from '../support/audio';
import { opusNative } from '../../src/media/codecs/opus';

test('G.711 mu-law and A-law match reference code words (ITU-T G.711 tables)', () => {
  // Zero, small values, segment edges and full scale: encoder outputs from the G.711 tables.
  const mu: Array<[number, number]> = [[0, 0xff], [-1, 0x7f], [8, 0xfe], [-8, 0x7e], [32767, 0x80], [-32768, 0x00], [1000, 0xce], [-1000, 0x4e]];
  for (const [x, code] of mu) assert.equal(pcmuEncode(Int16Array.of(x))[0], code, `mu-law(${x})`);
  const a: Array<[number, number]> = [[0, 0xd5], [-1, 0x55], [32767, 0xaa], [-32768, 0x2a], [1000, 0xfa], [-1000, 0x7a]];
  for (const [x, code] of a) assert.equal(pcmaEncode(Int16Array.of(x))[0], code, `A-law(${x})`);
  assert.equal(pcmuDecode(Uint8Array.of(0xff))[0], 0);
  assert.equal(pcmuDecode(Uint8Array.of(0x80))[0], 32124);
  assert.equal(pcmaDecode(Uint8Array.of(0xd5))[0], 8);
  assert.equal(pcmaDecode(Uint8Array.of(0xaa))[0], 32256);
  // Round trip error stays within the quantisation step of each segment (< 1/16 of |x| + small).
  for (let x = -32768; x < 32768; x += 7) {
    const m = pcmuDecode(pcmuEncode(Int16Array.of(x)))[0];
    const al = pcmaDecode(pcmaEncode(Int16Array.of(x)))[0];
    assert.ok(Math.abs(m - x) <= Math.abs(x) / 16 + 8, `mu-law round trip ${x} -> ${m}`);
    assert.ok(Math.abs(al - x) <= Math.abs(x) / 16 + 16, `A-law round trip ${x} -> ${al}`);
  }
});

function tone(hz: number, rate: number, n: number, start: number, amp = 10000): Int16Array {
  const a = new Int16Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.round(amp * Math.sin((2 * Math.PI * hz * (start + i)) / rate));
  return a;
}

test('G.711 law to law: each code as the other law encodes its value (the encoders checked above); there and back moves 16 of 256 codes by one step', () => {
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  assert.deepEqual(pcmaToPcmu(all), pcmuEncode(pcmaDecode(all)));
  assert.deepEqual(pcmuToPcma(all), pcmaEncode(pcmuDecode(all)));
  for (const [there, back, decode] of [[pcmaToPcmu, pcmuToPcma, pcmaDecode], [pcmuToPcma, pcmaToPcmu, pcmuDecode]] as const) {
    const round = back(there(all));
    const moved = [...round].map((c, i) => [i, c]).filter(([i, c]) => c !== i);
    assert.equal(moved.length, 16, 'codes not back where they were');
    const levels = [...new Set(decode(all))].sort((x, y) => x - y);
    for (const [i, c] of moved) {
      const [was, now] = [decode(Buffer.from([i]))[0], decode(Buffer.from([c]))[0]];
      assert.equal(Math.abs(levels.indexOf(now) - levels.indexOf(was)), 1, `code ${i} (${was}) came back as ${c} (${now}): not the next level`);
    }
  }
});

test('Opus round trip at 8 kHz keeps a 440 Hz and a 1 kHz tone (tone power > 90 % of the signal)', () => {
  for (const hz of [440, 1000]) {
    const enc = new OpusEncoder({ sampleRate: 8000, complexity: 5, bitrate: 24000 });
    const dec = new OpusDecoder({ sampleRate: 8000 });
    const out: number[] = [];
    for (let f = 0; f < 50; f++) out.push(...dec.decode(enc.encode(tone(hz, 8000, 160, f * 160))));
    enc.delete(); dec.delete();
    const steady = Int16Array.from(out.slice(1600)); // skip codec start-up
    assert.ok(toneRatio(steady, 8000, hz) > 0.9, `${hz} Hz survives: ratio ${toneRatio(steady, 8000, hz).toFixed(3)}`);
    assert.ok(toneRatio(steady, 8000, hz === 440 ? 1000 : 440) < 0.01);
  }
});

test('browser Opus (48 kHz) → 8 kHz PCMU → Opus: the tone frequency survives both transcoders', () => {
  const browserEnc = new OpusEncoder({ sampleRate: 48000, complexity: 5 });
  const toSip = new OpusToG711('pcmu');
  const toBrowser = new G711ToOpus('pcmu');
  const browserDec = new OpusDecoder({ sampleRate: 48000 });
  const got: number[] = [];
  for (let f = 0; f < 50; f++) {
    const pcm8 = toSip.decode(browserEnc.encode(tone(700, 48000, 960, f * 960)));
    assert.equal(pcm8.length, 160);
    const g711 = toSip.encodeG711(pcm8);
    const back = toBrowser.encode(toBrowser.decodeG711(g711));
    got.push(...browserDec.decode(back));
  }
  browserEnc.delete(); toSip.close(); toBrowser.close(); browserDec.delete();
  assert.ok(toneRatio(Int16Array.from(got.slice(9600)), 48000, 700) > 0.8);
});

test('PLC conceals exactly one 20 ms frame; malformed Opus is concealed and counted, never thrown', () => {
  const enc = new OpusEncoder({ sampleRate: 48000 });
  const t = new OpusToG711('pcmu');
  assert.equal(t.decode(enc.encode(tone(440, 48000, 960, 0))).length, 160);
  assert.equal(t.decode(null).length, 160);
  assert.equal(t.concealed, 1);
  t.decode(Buffer.from([0xff, 0xff, 0xff, 0x01]));
  assert.equal(t.malformed, 1);
  assert.equal(t.decode(Buffer.alloc(0)).length, 160, 'an empty payload is concealed');
  assert.deepEqual([t.malformed, t.concealed], [2, 3], 'and counted as malformed');
  enc.delete(); t.close();
});

test('600 encoders and 600 decoders in one process work and are all released', () => {
  const before = liveCoders();
  const coders: Array<[OpusEncoder, OpusDecoder]> = [];
  for (let i = 0; i < 600; i++) coders.push([new OpusEncoder({ sampleRate: 8000 }), new OpusDecoder({ sampleRate: 8000 })]);
  const frame = tone(440, 8000, 160, 0);
  for (const [e, d] of coders) assert.equal(d.decode(e.encode(frame)).length, 160);
  for (const [e, d] of coders) { e.delete(); d.delete(); }
  assert.equal(liveCoders(), before);
  // The freed heap is reused: another round does not fail.
  for (let i = 0; i < 600; i++) { const e = new OpusEncoder({ sampleRate: 8000 }); e.encode(frame); e.delete(); }
});

test('an encoder setting libopus refuses throws a clear error and leaves no coder behind', () => {
  const before = liveCoders();
  assert.throws(() => new OpusEncoder({ sampleRate: 8000, complexity: 42 }), /opus encoder ctl 4010: bad argument/);
  assert.equal(liveCoders(), before);
});

test('a coder the wasm heap has no room for throws a clear error and frees what it had: its handler and the areas already given', () => {
  const n = opusNative();
  const { _malloc: malloc, _free: free } = n;
  const destroy = n.OpusScriptHandler.destroy_handler;
  const before = liveCoders();
  const freed: number[] = [];
  let destroyed = 0;
  try {
    n._free = (p) => { freed.push(p); free(p); };
    n.OpusScriptHandler.destroy_handler = (h) => { destroyed++; destroy(h); };
    for (const make of [() => new OpusEncoder({ sampleRate: 8000 }), () => new OpusDecoder({ sampleRate: 8000 })]) {
      let calls = 0;
      n._malloc = (size) => (++calls === 2 ? 0 : malloc(size)); // the second area cannot be had
      freed.length = 0;
      const d = destroyed;
      assert.throws(make, /heap is full/);
      assert.equal(freed.length, 1, 'the first area freed');
      assert.equal(destroyed, d + 1, 'the handler destroyed');
    }
    n._malloc = () => { throw new Error('abort(OOM)'); }; // emscripten aborting instead
    assert.throws(() => new OpusDecoder({ sampleRate: 8000 }), /OOM/);
    assert.equal(liveCoders(), before, 'none counted as live');
  } finally {
    n._malloc = malloc;
    n._free = free;
    n.OpusScriptHandler.destroy_handler = destroy;
  }
  const ok = new OpusDecoder({ sampleRate: 8000 });
  ok.delete();
});

test('opusPacketSamples reads an Opus packet\'s duration from its TOC (RFC 6716 §3.1), and what libopus makes agrees', () => {
  const toc = (config: number, code: number) => (config << 3) | code;
  assert.equal(opusPacketSamples(Buffer.from([toc(1, 0), 0])), 960, 'SILK 20 ms, one frame');
  assert.equal(opusPacketSamples(Buffer.from([toc(3, 0), 0])), 2880, 'SILK 60 ms');
  assert.equal(opusPacketSamples(Buffer.from([toc(13, 1), 0, 0])), 1920, 'hybrid 20 ms, two frames (code 1)');
  assert.equal(opusPacketSamples(Buffer.from([toc(16, 2), 1, 0, 0])), 240, 'CELT 2.5 ms, two frames (code 2)');
  assert.equal(opusPacketSamples(Buffer.from([toc(19, 3), 3])), 2880, 'CELT 20 ms, three frames (code 3)');
  assert.equal(opusPacketSamples(Buffer.from([toc(3, 3), 3])), 0, 'three 60 ms frames: over 120 ms, malformed');
  assert.equal(opusPacketSamples(Buffer.from([toc(19, 3), 0])), 0, 'code 3 with no frames');
  assert.equal(opusPacketSamples(Buffer.from([toc(19, 3)])), 0, 'code 3 without its count byte');
  assert.equal(opusPacketSamples(Buffer.alloc(0)), 0);
  for (const frameMs of [10, 20, 40, 60]) {
    const enc = new OpusEncoder({ sampleRate: 48000, frameMs });
    try {
      assert.equal(opusPacketSamples(enc.encode(new Int16Array(48 * frameMs))), 48 * frameMs, `${frameMs} ms from libopus`);
    } finally {
      enc.delete();
    }
  }
});
