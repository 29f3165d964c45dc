import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeTelephoneEvent, digitToEvent, DtmfReceiver, dtmfPacketTrain, encodeTelephoneEvent, eventToDigit, LiveTelephoneEvent, LiveToneDigit, DigitSequence, usableEventClock } from '../../src/media/dtmf';
import { toneRatio } from '../support/audio';

const ALL = '0123456789*#ABCD';

describe('digitToEvent / eventToDigit (RFC 4733 §3.2 event codes)', () => {
  test('0-9 are events 0-9, * is 10, # is 11, A-D are 12-15', () => {
    for (let i = 0; i <= 9; i++) assert.equal(digitToEvent(String(i)), i);
    assert.equal(digitToEvent('*'), 10);
    assert.equal(digitToEvent('#'), 11);
    assert.equal(digitToEvent('A'), 12);
    assert.equal(digitToEvent('B'), 13);
    assert.equal(digitToEvent('C'), 14);
    assert.equal(digitToEvent('D'), 15);
  });

  test('lower-case a-d are accepted', () => {
    assert.deepEqual(['a', 'b', 'c', 'd'].map(digitToEvent), [12, 13, 14, 15]);
  });

  test('eventToDigit inverts digitToEvent for all 16 digits', () => {
    for (const d of ALL) assert.equal(eventToDigit(digitToEvent(d)), d);
    assert.equal([...Array(16).keys()].map((e) => eventToDigit(e)).join(''), ALL);
  });

  test('events outside 0-15 (flash 16, out-of-range, non-integer) are not digits', () => {
    for (const e of [16, 255, -1, 1.5, Number.NaN]) assert.equal(eventToDigit(e), null, `event ${e}`);
  });

  test('non-digits throw, including empty and multi-character strings', () => {
    for (const bad of ['E', 'x', ' ', '', '12', '#A', '**']) assert.throws(() => digitToEvent(bad), /not a DTMF digit/, JSON.stringify(bad));
  });
});

describe('encode/decode telephone-event payload', () => {
  test('RFC 4733 §2.3 layout: event, E|R|volume, 16-bit duration', () => {
    const b = encodeTelephoneEvent(11, true, 1600, 10);
    assert.deepEqual([...b], [11, 0x80 | 10, 0x06, 0x40]);
    const c = encodeTelephoneEvent(5, false, 160, 37);
    assert.deepEqual([...c], [5, 37, 0x00, 0xa0]);
  });

  test('round trip for every digit, both end flags, volumes and durations', () => {
    for (const d of ALL) {
      for (const end of [false, true]) {
        for (const [volume, duration] of [[0, 0], [10, 160], [63, 800], [7, 0xffff]]) {
          const ev = decodeTelephoneEvent(encodeTelephoneEvent(digitToEvent(d), end, duration, volume));
          assert.deepEqual(ev, { event: digitToEvent(d), end, volume, duration });
        }
      }
    }
  });

  test('default volume is 10 (-10 dBm0)', () => {
    assert.equal(decodeTelephoneEvent(encodeTelephoneEvent(1, false, 160))?.volume, 10);
  });

  test('duration saturates at 0xffff', () => {
    assert.equal(decodeTelephoneEvent(encodeTelephoneEvent(1, true, 100000))?.duration, 0xffff);
  });

  test('decode ignores the reserved R bit and rejects short payloads', () => {
    assert.deepEqual(decodeTelephoneEvent(Uint8Array.from([3, 0x80 | 0x40 | 12, 0x01, 0x00])), { event: 3, end: true, volume: 12, duration: 256 });
    assert.equal(decodeTelephoneEvent(Uint8Array.from([3, 0x80, 0x01])), null);
    assert.equal(decodeTelephoneEvent(new Uint8Array(0)), null);
  });
});

describe('DtmfReceiver', () => {
  function collect(clockRate?: number) {
    const got: Array<{ digit: string; durationMs: number }> = [];
    const rx = new DtmfReceiver((digit, durationMs) => got.push({ digit, durationMs }), clockRate);
    return { rx, got };
  }
  /** A sender's packets for one event: updates every 160 ts, then three end packets. */
  function event(rx: DtmfReceiver, ts: number, digit: string, updates = 4): void {
    const e = digitToEvent(digit);
    for (let i = 1; i <= updates; i++) rx.onPacket(ts, encodeTelephoneEvent(e, false, i * 160));
    for (let i = 0; i < 3; i++) rx.onPacket(ts, encodeTelephoneEvent(e, true, (updates + 1) * 160));
  }

  test('one digit per event despite updates and 3 end retransmissions', () => {
    const { rx, got } = collect();
    event(rx, 1000, '5');
    assert.deepEqual(got.map((g) => g.digit), ['5']);
    assert.equal(got[0].durationMs, 20, 'reported at the first packet with its duration');
  });

  test('the same digit again with a new timestamp is a new digit', () => {
    const { rx, got } = collect();
    event(rx, 1000, '7');
    event(rx, 2360, '7');
    event(rx, 3720, '#');
    assert.deepEqual(got.map((g) => g.digit), ['7', '7', '#']);
  });

  test('a digit whose start packets were lost is still reported from its end packets, once', () => {
    const { rx, got } = collect();
    for (let i = 0; i < 3; i++) rx.onPacket(5000, encodeTelephoneEvent(digitToEvent('9'), true, 800));
    assert.deepEqual(got, [{ digit: '9', durationMs: 100 }]);
  });

  test('a late (reordered) end packet of the previous digit does not repeat it', () => {
    const { rx, got } = collect();
    const one = digitToEvent('1');
    const two = digitToEvent('2');
    rx.onPacket(1000, encodeTelephoneEvent(one, false, 160));
    rx.onPacket(1000, encodeTelephoneEvent(one, true, 800));
    rx.onPacket(1000, encodeTelephoneEvent(one, true, 800));
    rx.onPacket(2360, encodeTelephoneEvent(two, false, 160));
    rx.onPacket(1000, encodeTelephoneEvent(one, true, 800)); // third retransmission, overtaken
    rx.onPacket(2360, encodeTelephoneEvent(two, true, 800));
    assert.deepEqual(got.map((g) => g.digit), ['1', '2']);
  });

  test('a long event sent in segments (RFC 4733 §2.5.1.3: each filled to 0xFFFF, the next starting where it ended) is one digit, its length the segments\' sum', () => {
    const ends: Array<{ digit: string; durationMs: number }> = [];
    const got: string[] = [];
    const rx = new DtmfReceiver((d) => got.push(d), 48000, (digit, durationMs) => ends.push({ digit, durationMs }));
    const five = digitToEvent('5');
    try {
      for (let d = 960; d < 0xffff; d += 960 * 5) rx.onPacket(1000, encodeTelephoneEvent(five, false, d));
      rx.onPacket(1000, encodeTelephoneEvent(five, false, 0xffff)); // the first segment, full, no E bit
      const next = 1000 + 0xffff;
      for (let d = 960; d <= 19200; d += 960) rx.onPacket(next, encodeTelephoneEvent(five, false, d));
      for (let i = 0; i < 3; i++) rx.onPacket(next, encodeTelephoneEvent(five, true, 20000));
      assert.deepEqual(got, ['5'], 'one key press, one digit');
      assert.equal(ends.length, 1);
      assert.equal(Math.round(ends[0].durationMs), Math.round(((0xffff + 20000) / 48000) * 1000));
      // The same digit with a timestamp elsewhere is another key press, however long the last one was.
      rx.onPacket(next + 200000, encodeTelephoneEvent(five, false, 960));
      assert.deepEqual(got, ['5', '5']);
    } finally {
      rx.close();
    }
  });

  test('durations are reported in ms at the given clock rate', () => {
    const { rx, got } = collect(48000);
    rx.onPacket(10, encodeTelephoneEvent(digitToEvent('A'), false, 960));
    assert.deepEqual(got, [{ digit: 'A', durationMs: 20 }]);
  });

  test('short payloads and non-digit events (flash) are ignored', () => {
    const { rx, got } = collect();
    rx.onPacket(100, Uint8Array.from([1, 2]));
    rx.onPacket(200, encodeTelephoneEvent(16, false, 160));
    assert.equal(got.length, 0);
    rx.onPacket(300, encodeTelephoneEvent(0, false, 160));
    assert.deepEqual(got.map((g) => g.digit), ['0']);
  });

  test('timestamp 0 is an ordinary event timestamp', () => {
    const { rx, got } = collect();
    event(rx, 0, '3');
    assert.deepEqual(got.map((g) => g.digit), ['3']);
  });
});

describe('dtmfPacketTrain (RFC 4733 §2.5)', () => {
  test('100 ms at 8 kHz: 20 ms updates with growing duration, marker on the first, three end packets', () => {
    const train = dtmfPacketTrain('#', 100, 8000);
    const decoded = train.map((p) => decodeTelephoneEvent(p.payload));
    assert.equal(train.length, 4 + 3);
    assert.deepEqual(decoded.map((d) => d?.event), Array(7).fill(11));
    assert.deepEqual(decoded.map((d) => d?.duration), [160, 320, 480, 640, 800, 800, 800]);
    assert.deepEqual(decoded.map((d) => d?.end), [false, false, false, false, true, true, true]);
    assert.deepEqual(train.map((p) => p.marker), [true, false, false, false, false, false, false]);
    assert.deepEqual(train.map((p) => p.delayMs), [0, 20, 40, 60, 80, 100, 120], "the end packet repeated at the update interval, not in one burst");
  });

  test('48 kHz clock scales durations; the final duration equals the tone length', () => {
    const train = dtmfPacketTrain('1', 60, 48000);
    const durations = train.map((p) => decodeTelephoneEvent(p.payload)!.duration);
    assert.deepEqual(durations, [960, 1920, 2880, 2880, 2880]);
    assert.equal(train.filter((p) => p.marker).length, 1);
  });

  test('durations never decrease and delays never go backwards', () => {
    for (const ms of [40, 50, 100, 160, 250, 2000]) {
      const train = dtmfPacketTrain('D', ms, 8000);
      for (let i = 1; i < train.length; i++) {
        assert.ok(decodeTelephoneEvent(train[i].payload)!.duration >= decodeTelephoneEvent(train[i - 1].payload)!.duration);
        assert.ok(train[i].delayMs >= train[i - 1].delayMs);
      }
      const last = decodeTelephoneEvent(train[train.length - 1].payload)!;
      assert.equal(last.duration, (Math.max(40, Math.round(ms / 20) * 20) * 8000) / 1000, `${ms} ms`);
      assert.equal(train.filter((p) => decodeTelephoneEvent(p.payload)!.end).length, 3);
    }
  });

  test('very short tones are stretched to at least 40 ms', () => {
    const train = dtmfPacketTrain('0', 0, 8000);
    assert.equal(decodeTelephoneEvent(train[train.length - 1].payload)!.duration, 320);
    assert.equal(train[0].marker, true);
  });

  test('the train fed to a DtmfReceiver on one timestamp yields exactly that digit once', () => {
    for (const d of ALL) {
      const got: string[] = [];
      const rx = new DtmfReceiver((digit) => got.push(digit));
      for (const p of dtmfPacketTrain(d, 100, 8000)) rx.onPacket(123456, p.payload);
      assert.deepEqual(got, [d]);
    }
  });

  test('rejects a non-digit', () => {
    assert.throws(() => dtmfPacketTrain('E', 100, 8000), /not a DTMF digit/);
  });
});

describe('durations a peer cannot stretch', () => {
  test('a digit read at a slow clock (a hostile telephone-event/1) lasts at most 8 s, at its first packet and at its end', () => {
    const got: number[] = [];
    const rx = new DtmfReceiver((_d, ms) => got.push(ms), 1, (_d, ms) => got.push(ms));
    rx.onPacket(1000, encodeTelephoneEvent(5, false, 0xfff0));
    rx.onPacket(1000, encodeTelephoneEvent(5, true, 0xffff));
    rx.close();
    assert.deepEqual(got, [8000, 8000]);
  });

  test('dtmfPacketTrain keeps to 8 s and to what the 16-bit duration can say at its clock; a NaN length is the 40 ms minimum', () => {
    const long = dtmfPacketTrain('1', 65_535_000, 8000);
    assert.equal(long.length, 8000 / 20 - 1 + 3, '8 s of updates, then the three end packets');
    assert.equal(decodeTelephoneEvent(long[long.length - 1].payload)!.duration, 64000);
    const wide = dtmfPacketTrain('1', 5000, 48000);
    assert.ok(decodeTelephoneEvent(wide[wide.length - 1].payload)!.duration <= 0xffff, 'fits 16 bits at 48 kHz');
    assert.equal(decodeTelephoneEvent(wide[wide.length - 1].payload)!.duration, 1360 * 48);
    assert.equal(dtmfPacketTrain('1', Number.NaN, 8000).length, 1 + 3);
  });

  test('usableEventClock takes the audio clocks only', () => {
    assert.deepEqual([8000, 16000, 48000].map(usableEventClock), [true, true, true]);
    assert.deepEqual([1, 0, 7999, 48001, 96000, 8000.5, Number.NaN].map(usableEventClock), [false, false, false, false, false, false, false]);
  });

  test('LiveToneDigit: an end far beyond the limit stops the tones at the limit', async () => {
    const frames: boolean[] = [];
    let done = false;
    const t = new LiveToneDigit('4', 160, { sendFrame: (pcm) => frames.push(pcm.some((v) => v !== 0)), done: () => { done = true; } }, 100);
    t.end(65_535_000);
    await new Promise((r) => setTimeout(r, 230));
    assert.ok(done);
    assert.equal(frames.filter(Boolean).length, 5, '100 ms of tone, not 18 hours');
  });
});

describe('DtmfReceiver: the end of each digit, for a relay', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  function collect() {
    const starts: string[] = [];
    const ends: Array<{ digit: string; durationMs: number }> = [];
    const rx = new DtmfReceiver((d) => starts.push(d), 8000, (digit, durationMs) => ends.push({ digit, durationMs }));
    return { rx, starts, ends };
  }

  test('at its first end packet, with that packet\'s duration; the retransmitted ends change nothing', () => {
    const { rx, starts, ends } = collect();
    for (const d of [160, 480, 800]) rx.onPacket(1000, encodeTelephoneEvent(9, false, d));
    assert.deepEqual([starts, ends], [['9'], []], 'started, not ended');
    for (let i = 0; i < 3; i++) rx.onPacket(1000, encodeTelephoneEvent(9, true, 1200));
    assert.deepEqual(ends, [{ digit: '9', durationMs: 150 }]);
    rx.close();
  });

  test('end packets lost: the next event ends it with the longest duration seen; the last one ends after 250 ms without packets', async () => {
    const { rx, starts, ends } = collect();
    rx.onPacket(1000, encodeTelephoneEvent(1, false, 400));
    rx.onPacket(1000, encodeTelephoneEvent(1, false, 800));
    rx.onPacket(1000, encodeTelephoneEvent(1, false, 640)); // reordered: an older update
    rx.onPacket(5000, encodeTelephoneEvent(2, false, 160));
    assert.deepEqual(ends, [{ digit: '1', durationMs: 100 }]);
    rx.onPacket(5000, encodeTelephoneEvent(2, false, 320));
    await sleep(150);
    assert.equal(ends.length, 1, 'not yet');
    await sleep(200);
    assert.deepEqual(ends[1], { digit: '2', durationMs: 40 });
    assert.deepEqual(starts, ['1', '2']);
    // A late end packet of an event already ended is a retransmission: nothing more.
    rx.onPacket(5000, encodeTelephoneEvent(2, true, 480));
    assert.equal(ends.length, 2);
    rx.close();
  });

  test('close() stops the wait: nothing reported after it', async () => {
    const { rx, ends } = collect();
    rx.onPacket(1000, encodeTelephoneEvent(3, false, 160));
    rx.close();
    await sleep(300);
    assert.deepEqual(ends, []);
  });
});

describe('LiveTelephoneEvent (a digit relayed while it is pressed)', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  function stream() {
    const sent: Array<{ end: boolean; duration: number; marker: boolean; ts: number; at: number }> = [];
    const ended: Array<{ ts: number; ms: number }> = [];
    const t0 = performance.now();
    return {
      sent, ended,
      nextTimestamp: () => 123456,
      sendEvent: (payload: Buffer, marker: boolean, eventTs: number) => {
        const ev = decodeTelephoneEvent(payload)!;
        sent.push({ end: ev.end, duration: ev.duration, marker, ts: eventTs, at: performance.now() - t0 });
      },
      eventEnded: (ts: number, ms: number) => ended.push({ ts, ms }),
    };
  }

  test('first packet at once with the marker, updates while it lasts, then the end three times 20 ms apart once the length given has passed', async () => {
    const s = stream();
    let done = false;
    const ev = new LiveTelephoneEvent('#', 48000, s, () => { done = true; });
    assert.deepEqual(s.sent.map((p) => [p.marker, p.end]), [[true, false]]);
    await sleep(120);
    // The other leg's end came early (its packets faster than real time): 300 ms it says.
    ev.end(300);
    assert.deepEqual(s.ended, [], 'not ended before its length has passed');
    await sleep(260);
    const ends = s.sent.filter((p) => p.end);
    assert.equal(ends.length, 3);
    assert.ok(ends[0].at >= 295, `first end packet at ${ends[0].at.toFixed(0)} ms`);
    assert.deepEqual(s.ended, [{ ts: 123456, ms: 300 }]);
    const updates = s.sent.filter((p) => !p.end).length - 1;
    assert.ok(updates >= 4 && updates <= 7, `${updates} updates in 300 ms (every 50 ms)`);
    assert.ok(s.sent.every((p, i) => i === 0 || p.duration >= s.sent[i - 1].duration), 'durations never shrink');
    assert.ok(ends.every((p) => p.duration === 300 * 48 && p.ts === 123456 && !p.marker), 'the given length, 48 kHz ticks, the event\'s own timestamp');
    assert.ok(done, 'done once the last end packet left');
    assert.ok(s.sent.every((p) => p.ts === 123456));
  });

  test('at 48 kHz an event nobody ends stops at what the 16-bit duration can say (1.365 s), its length exact', async () => {
    const s = stream();
    let done = false;
    new LiveTelephoneEvent('5', 48000, s, () => { done = true; });
    await sleep(1500);
    assert.ok(done, 'ended by itself');
    const ends = s.sent.filter((p) => p.end);
    assert.equal(ends.length, 3);
    assert.ok(ends.every((p) => p.duration === 65520), `end durations ${ends.map((p) => p.duration).join(',')}: 1365 ms of 48 kHz ticks`);
    assert.ok(s.sent.every((p) => p.duration <= 0xffff));
    assert.deepEqual(s.ended, [{ ts: 123456, ms: 1365 }]);
  });

  test('an end shorter than what the updates announced keeps the longer one; cancel() sends nothing more', async () => {
    const s = stream();
    const ev = new LiveTelephoneEvent('1', 8000, s, () => {});
    await sleep(120);
    const announced = Math.max(...s.sent.map((p) => p.duration));
    ev.end(10);
    assert.equal(s.ended[0].ms * 8, announced, 'the timeline takes the announced length');
    const n = s.sent.length;
    ev.cancel();
    await sleep(60);
    assert.equal(s.sent.length, n, 'the retransmissions were cancelled');
    assert.equal(s.sent[n - 1].duration, announced);
  });
});

describe('LiveToneDigit (a digit as tones, while it is pressed)', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  function rig(digit: string, frameSamples = 160, maxMs?: number) {
    const frames: Array<{ pcm: Int16Array; first: boolean; at: number }> = [];
    let doneAt = -1;
    const t0 = performance.now();
    const tones = new LiveToneDigit(digit, frameSamples, {
      sendFrame: (pcm, first) => frames.push({ pcm, first, at: performance.now() - t0 }),
      done: () => { doneAt = performance.now() - t0; },
    }, maxMs);
    const silent = (f: { pcm: Int16Array }) => f.pcm.every((v) => v === 0);
    return { tones, frames, silent, done: () => doneAt };
  }

  test('the tones start at once and go on while the key is down; the end given later lets them run to that length, then 60 ms of silence', async () => {
    const r = rig('9');
    assert.equal(r.frames.length, 1, 'the first frame at once');
    assert.equal(r.frames[0].first, true);
    await sleep(110);
    const whilePressed = r.frames.length;
    assert.ok(whilePressed >= 4, `frames while pressed, not waiting for the end: ${whilePressed}`);
    for (const f of r.frames) assert.ok(toneRatio(f.pcm, 8000, 852) > 0.3 && toneRatio(f.pcm, 8000, 1477) > 0.3, '9: 852 + 1477 Hz');
    r.tones.end(200);
    await sleep(220);
    assert.ok(r.done() > 0, 'done after the pause');
    assert.ok(r.done() >= 13 * 20 - 2, `done once the last pause frame has played, not when it left: ${r.done().toFixed(0)} ms`);
    const tone = r.frames.filter((f) => !r.silent(f)).length;
    assert.equal(tone, 10, '200 ms of tone in 20 ms frames');
    assert.equal(r.frames.length, 13, 'then three silent frames (60 ms)');
    assert.ok(r.frames.slice(10).every(r.silent));
    assert.equal(r.frames.filter((f) => f.first).length, 1, 'only the first frame marked');
    // Timed from the start, in real time: frame i leaves about i × 20 ms in.
    const late = r.frames.map((f, i) => f.at - i * 20);
    assert.ok(late.every((d) => d > -3 && d < 40), `frames on time: ${late.map((d) => d.toFixed(0)).join(',')}`);
    // The tones continue their phase from frame to frame: sample n of the digit is the two sines at n / 8000 s.
    const at = (n: number) => Math.round(7000 * (Math.sin(2 * Math.PI * 852 * n / 8000) + Math.sin(2 * Math.PI * 1477 * n / 8000))) | 0; // | 0: no -0
    for (const f of [1, 5, 9]) for (const i of [0, 1, 159]) assert.equal(r.frames[f].pcm[i], at(f * 160 + i), `frame ${f} sample ${i}`);
  });

  test('an end shorter than what was already sent cuts nothing; at least 60 ms of tone; 30 ms frames', async () => {
    const r = rig('1', 240);
    r.tones.end(10); // a 10 ms key press: stretched to 60 ms, two 30 ms frames
    await sleep(170);
    assert.ok(r.done() > 0);
    assert.deepEqual(r.frames.map((f) => r.silent(f)), [false, false, true, true], 'two frames of tone, two of silence');
    assert.ok(r.frames.every((f) => f.pcm.length === 240));
    const late = rig('2');
    await sleep(130);
    const sent = late.frames.length;
    late.tones.end(40);
    await sleep(120);
    assert.equal(late.frames.filter((f) => !late.silent(f)).length, sent, 'the tone frames already sent stay the digit\'s length');
    late.tones.cancel();
  });

  test('a digit nobody ends stops at its limit; cancel() stops at once, without done', async () => {
    const stuck = rig('5', 160, 100);
    await sleep(260);
    assert.ok(stuck.done() > 0, 'ended by itself');
    assert.equal(stuck.frames.filter((f) => !stuck.silent(f)).length, 5, '100 ms of tone');
    const c = rig('5');
    await sleep(50);
    c.tones.cancel();
    const n = c.frames.length;
    await sleep(80);
    assert.equal(c.frames.length, n, 'nothing after cancel');
    assert.equal(c.done(), -1);
    assert.throws(() => rig('x'), /not a DTMF digit/);
  });
});

describe('DigitSequence (one digit at a time on a stream)', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  function sequence(maxWaiting?: number, accept = () => true) {
    const started: string[] = [];
    const seq: DigitSequence = new DigitSequence((digit, ms) => {
      if (!accept()) return false;
      started.push(digit);
      seq.busyUntil = performance.now() + ms;
      seq.later(ms, () => seq.next());
      return true;
    }, maxWaiting);
    return { seq, started };
  }

  test('a digit starts at once when idle; those asked for meanwhile wait, in order, until the one playing ends', async () => {
    const { seq, started } = sequence();
    assert.equal(seq.push('1', 60), true);
    assert.equal(seq.push('2', 30), true);
    assert.equal(seq.push('3', 30), true);
    assert.deepEqual(started, ['1']);
    assert.equal(seq.playing, true);
    await sleep(75);
    assert.deepEqual(started, ['1', '2']);
    await sleep(60);
    assert.deepEqual(started, ['1', '2', '3']);
    await sleep(40);
    assert.equal(seq.idle, true);
    seq.close();
  });

  test('a full queue refuses; a digit that can no longer start drops the rest; close() stops everything', async () => {
    let ok = true;
    const { seq, started } = sequence(1, () => ok);
    seq.push('1', 40);
    assert.equal(seq.push('2', 40), true);
    assert.equal(seq.push('3', 40), false, 'one may wait, not two');
    ok = false; // held, say
    await sleep(60);
    assert.deepEqual(started, ['1']);
    assert.equal(seq.idle, true, 'the waiting digit was dropped');
    ok = true;
    seq.push('4', 40);
    seq.push('5', 40);
    seq.close();
    await sleep(60);
    assert.deepEqual(started, ['1', '4'], 'nothing after close');
    assert.equal(seq.push('6', 40), false);
  });

  test('busy until Infinity (a live digit): next() waits for the digit to say it is done', async () => {
    const { seq, started } = sequence();
    seq.busyUntil = Infinity;
    seq.push('7', 20);
    seq.next();
    await sleep(30);
    assert.deepEqual(started, []);
    seq.busyUntil = 0;
    seq.next();
    assert.deepEqual(started, ['7']);
    seq.close();
  });
});
