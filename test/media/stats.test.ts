import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { estimateMos, ReceiveStats } from '../../src/media/stats';

const near = (actual: number, expected: number, tol: number, msg?: string) =>
  assert.ok(Math.abs(actual - expected) <= tol, `${msg ?? ''} expected ${expected} ± ${tol}, got ${actual}`);

/** Feeds 20 ms G.711 packets (160 ts each) with the given sequence numbers; arrival on time. */
function feed(rx: ReceiveStats, seqs: number[], opts: { firstSeq?: number; ts0?: number; t0?: number } = {}): void {
  const first = opts.firstSeq ?? seqs[0];
  for (const seq of seqs) {
    const n = (seq - first + 0x10000) & 0xffff; // packet index relative to the first
    rx.onPacket(seq, (opts.ts0 ?? 0) + n * 160, 160, (opts.t0 ?? 0) + n * 20);
  }
}

const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

describe('ReceiveStats: loss (RFC 3550 A.3)', () => {
  test('no packets: nothing expected, nothing lost', () => {
    const rx = new ReceiveStats(8000);
    assert.equal(rx.expected, 0);
    assert.equal(rx.lost, 0);
    assert.equal(rx.fractionLostSinceLast(), 0);
  });

  test('gaps are counted as lost', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [100, 101, 102, 105, 106, 108, 109]); // 103, 104, 107 missing
    assert.equal(rx.packets, 7);
    assert.equal(rx.bytes, 7 * 160);
    assert.equal(rx.expected, 10);
    assert.equal(rx.lost, 3);
    assert.equal(rx.extendedHighestSeq, 109);
  });

  test('reordered packets are not lost', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [1, 2, 4, 3, 5], { firstSeq: 1 });
    assert.equal(rx.expected, 5);
    assert.equal(rx.lost, 0);
    assert.equal(rx.extendedHighestSeq, 5);
  });

  test('sequence wrap at 65535 counts a cycle, not 65k lost packets', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [65530, 65531, 65532, 65534, 65535, 0, 1, 3, 4, 5], { firstSeq: 65530 }); // 65533 and 2 missing
    assert.equal(rx.extendedHighestSeq, 0x10000 + 5);
    assert.equal(rx.expected, 12);
    assert.equal(rx.lost, 2);
  });

  test('reordering across the wrap', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [65534, 65535, 1, 0, 2], { firstSeq: 65534 });
    assert.equal(rx.extendedHighestSeq, 0x10000 + 2);
    assert.equal(rx.expected, 5);
    assert.equal(rx.lost, 0);
  });

  test('several wraps', () => {
    const rx = new ReceiveStats(8000);
    let seq = 65000;
    let received = 0;
    for (let i = 0; i < 3 * 65536; i++) {
      if (i % 1000 !== 999) { rx.onPacket(seq, i * 160, 160, i * 20); received++; }
      seq = (seq + 1) & 0xffff;
    }
    assert.equal(rx.packets, received);
    assert.equal(rx.expected, 3 * 65536);
    assert.equal(rx.extendedHighestSeq, 3 * 65536 + 65000 - 1);
    assert.equal(rx.lost, Math.floor((3 * 65536) / 1000));
  });

  test('duplicates are counted and make cumulative loss go down (may go negative, A.3)', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [10, 11, 12]);
    rx.onPacket(12, 320, 160, 45);
    assert.equal(rx.duplicates, 1);
    assert.equal(rx.packets, 4);
    assert.equal(rx.expected, 3);
    assert.equal(rx.lost, -1);
    assert.equal(rx.missing, 0, 'none missing: never below 0');
  });

  test('missing: a duplicate does not make up for a packet that never came (A.3\'s lost lets it)', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [10, 11, 13, 13, 14]); // 12 never came, 13 came twice
    assert.equal(rx.lost, 0);
    assert.equal(rx.missing, 1);
    rx.onPacket(12, 0, 160, 200); // late, not a duplicate: fills its gap
    assert.equal(rx.missing, 0);
    assert.equal(rx.late, 1);
  });

  test('fraction lost per interval, 0..255, and reset per report', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [0, 1, 2, 3, 4, 5, 6, 7, 9], { firstSeq: 0 }); // 8 missing: 1 of 10
    assert.equal(rx.fractionLostSinceLast(), Math.floor((1 * 256) / 10));
    feed(rx, range(10, 29), { firstSeq: 0 });
    assert.equal(rx.fractionLostSinceLast(), 0, 'no loss in the second interval');
    feed(rx, [30, 35], { firstSeq: 0 }); // 4 of 6 lost
    assert.equal(rx.fractionLostSinceLast(), Math.floor((4 * 256) / 6));
    assert.equal(rx.fractionLostSinceLast(), 0, 'empty interval');
  });

  test('resetSource (new SSRC): cumulative loss stays continuous, not negative', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, range(0, 99).filter((s) => s !== 50)); // 1 lost of 100
    assert.equal(rx.lost, 1);
    rx.resetSource();
    feed(rx, range(30000, 30049).filter((s) => s !== 30010 && s !== 30020), { firstSeq: 30000, ts0: 999999, t0: 5000 }); // 2 lost of 50
    assert.equal(rx.packets, 99 + 48);
    assert.equal(rx.expected, 150);
    assert.equal(rx.lost, 3);
    assert.equal(rx.extendedHighestSeq, 30049, 'per-source extended highest sequence');
  });

  test('resetSource: the fraction lost interval continues across the change', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, range(0, 99));
    assert.equal(rx.fractionLostSinceLast(), 0);
    rx.resetSource();
    feed(rx, range(1000, 1019).filter((s) => s !== 1005 && s !== 1006), { firstSeq: 1000 }); // 2 of 20 lost
    assert.equal(rx.fractionLostSinceLast(), Math.floor((2 * 256) / 20));
  });
});

describe('ReceiveStats: duplicates and late packets', () => {
  const counts = (rx: ReceiveStats) => ({ packets: rx.packets, expected: rx.expected, lost: rx.lost, duplicates: rx.duplicates, late: rx.late });

  test('an in-order stream: nothing late, nothing duplicated', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, range(100, 119));
    assert.deepEqual(counts(rx), { packets: 20, expected: 20, lost: 0, duplicates: 0, late: 0 });
  });

  test('a gap alone is loss, not lateness', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [1, 2, 5, 6], { firstSeq: 1 });
    assert.deepEqual(counts(rx), { packets: 4, expected: 6, lost: 2, duplicates: 0, late: 0 });
  });

  test('a reordered packet is late, and fills its gap (not lost)', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [1, 2, 4, 3, 5], { firstSeq: 1 });
    assert.deepEqual(counts(rx), { packets: 5, expected: 5, lost: 0, duplicates: 0, late: 1 });
  });

  test('a duplicate of the latest packet', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [10, 11, 12, 12], { firstSeq: 10 });
    // Received counts the duplicate (RFC 3550 A.3): cumulative loss goes below zero.
    assert.deepEqual(counts(rx), { packets: 4, expected: 3, lost: -1, duplicates: 1, late: 0 });
  });

  test('a duplicate of an older packet is a duplicate, not late', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [10, 11, 12, 13, 11], { firstSeq: 10 });
    assert.deepEqual(counts(rx), { packets: 5, expected: 4, lost: -1, duplicates: 1, late: 0 });
  });

  test('a late packet that comes twice: late once, then a duplicate', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [1, 2, 4, 3, 3], { firstSeq: 1 });
    assert.deepEqual(counts(rx), { packets: 5, expected: 4, lost: -1, duplicates: 1, late: 1 });
  });

  test('duplicates across the sequence wrap (65535 → 0)', () => {
    const rx = new ReceiveStats(8000);
    // 65535 and 0 again right after the wrap, then 65534 from before it.
    feed(rx, [65534, 65535, 0, 1, 65535, 0, 65534], { firstSeq: 65534 });
    assert.deepEqual(counts(rx), { packets: 7, expected: 4, lost: -3, duplicates: 3, late: 0 });
    assert.equal(rx.extendedHighestSeq, 0x10000 + 1);
  });

  test('late across the wrap: 65535 after 0', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [65534, 0, 65535, 1], { firstSeq: 65534 });
    assert.deepEqual(counts(rx), { packets: 4, expected: 4, lost: 0, duplicates: 0, late: 1 });
  });

  test('older than the 64-number window: late, even when it is a duplicate; past MAX_MISORDER: not counted (A.1)', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, range(0, 99).filter((s) => s !== 30 && s !== 50), { firstSeq: 0 });
    rx.onPacket(50, 50 * 160, 160, 2000); // 49 behind, never received: late
    rx.onPacket(50, 50 * 160, 160, 2001); // again: a duplicate
    rx.onPacket(36, 36 * 160, 160, 2002); // 63 behind (the window's oldest), received before: a duplicate
    rx.onPacket(35, 35 * 160, 160, 2003); // 64 behind, received before: out of the window, late
    rx.onPacket(30, 30 * 160, 160, 2004); // 69 behind, never received: late
    rx.onPacket(30, 30 * 160, 160, 2005); // again: still late (the window cannot tell)
    assert.deepEqual(counts(rx), { packets: 98 + 6, expected: 100, lost: -4, duplicates: 2, late: 4 });
    rx.onPacket(0, 0, 160, 2006); // 99 behind: still within MAX_MISORDER, late
    assert.equal(rx.late, 5);
    feed(rx, range(100, 150), { firstSeq: 0 });
    rx.onPacket(10, 10 * 160, 160, 4000); // 140 behind: a possible restart of the numbering, counted nowhere
    assert.deepEqual(counts(rx), { packets: 105 + 51, expected: 151, lost: -5, duplicates: 2, late: 5 });
  });

  test('a ring slot an old packet used is freed as the highest moves on: a new number there is late, not a duplicate', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, range(0, 9), { firstSeq: 0 });
    rx.onPacket(70, 70 * 160, 160, 1400); // 61 ahead: slots of 10…70 (6 mod 64 included) cleared
    rx.onPacket(66, 66 * 160, 160, 1401); // slot 2, which seq 2 had used
    rx.onPacket(7, 7 * 160, 160, 1402);   // 63 behind and received before: still a duplicate
    assert.deepEqual({ duplicates: rx.duplicates, late: rx.late }, { duplicates: 1, late: 1 });
    rx.onPacket(200, 200 * 160, 160, 4000); // 130 ahead: the whole ring cleared
    rx.onPacket(138, 138 * 160, 160, 4001); // slot 10, and 62 behind
    rx.onPacket(200, 200 * 160, 160, 4002);
    assert.deepEqual({ duplicates: rx.duplicates, late: rx.late }, { duplicates: 2, late: 2 });
  });

  test('a new source (resetSource) starts with an empty window; the counts carry on', () => {
    const rx = new ReceiveStats(8000);
    feed(rx, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9], { firstSeq: 0 });
    assert.equal(rx.duplicates, 1);
    rx.resetSource();
    feed(rx, [20, 21, 22], { firstSeq: 20, ts0: 99999, t0: 1000 });
    // 14 behind the new source's highest: its ring slot is the one the old source's 8 used.
    rx.onPacket(8, 99999 - 12 * 160, 160, 1100);
    assert.deepEqual(counts(rx), { packets: 15, expected: 13, lost: -2, duplicates: 1, late: 1 });
    rx.onPacket(8, 99999 - 12 * 160, 160, 1101); // the new source's own numbers are remembered
    assert.deepEqual({ duplicates: rx.duplicates, late: rx.late }, { duplicates: 2, late: 1 });
  });

  test('a restart of the numbering (A.1) starts with an empty window too', () => {
    const rx = new ReceiveStats(8000);
    for (let s = 1000; s < 1010; s++) rx.onPacket(s, s * 160, 160, s * 20); // ring slots 40…49
    for (let s = 5000; s < 5006; s++) rx.onPacket(s, s * 160, 160, s * 20); // 4000 ahead: a restart from its second packet
    assert.equal(rx.packets, 15);
    // 35 behind; ring slot 42, which 1002 used.
    rx.onPacket(4970, 4970 * 160, 160, 5006 * 20);
    assert.deepEqual({ duplicates: rx.duplicates, late: rx.late }, { duplicates: 0, late: 1 });
  });
});

describe('ReceiveStats: sequence discontinuities (RFC 3550 A.1)', () => {
  test('the same source restarting its numbering far away: followed from its second packet, loss stays right', () => {
    const rx = new ReceiveStats(8000);
    for (let s = 1000; s < 1010; s++) rx.onPacket(s, s * 160, 160, s * 20);
    for (let s = 200; s < 210; s++) rx.onPacket(s, s * 160, 160, s * 20); // 800 behind: a restart
    assert.equal(rx.packets, 19, 'the first packet of the new run waits for confirmation');
    assert.equal(rx.lost, 0);
    assert.equal(rx.extendedHighestSeq, 209, 'the highest sequence number follows the new run');
  });

  test('one stray packet far off changes nothing', () => {
    const rx = new ReceiveStats(8000);
    for (const s of [1000, 1001, 40000, 1002, 1003]) rx.onPacket(s, s * 160, 160, s * 20);
    assert.equal(rx.packets, 4);
    assert.equal(rx.lost, 0);
    assert.equal(rx.extendedHighestSeq, 1003);
  });
});

describe('ReceiveStats: interarrival jitter (RFC 3550 A.8)', () => {
  test('constant network delay is zero jitter', () => {
    const rx = new ReceiveStats(8000);
    for (let i = 0; i < 200; i++) rx.onPacket(i, 5000 + i * 160, 160, 73.5 + i * 20);
    near(rx.jitterTs, 0, 1e-9);
    near(rx.jitterMs, 0, 1e-9);
  });

  test('delay alternating 0/10 ms: J converges as 80·(1 − (15/16)^n) timestamp units', () => {
    const rx = new ReceiveStats(8000);
    const n = 40;
    for (let i = 0; i <= n; i++) rx.onPacket(i, i * 160, 160, i * 20 + (i % 2 ? 10 : 0));
    const expected = 80 * (1 - (15 / 16) ** n); // |D| = 10 ms = 80 ts for each of the n pairs
    near(rx.jitterTs, expected, 1e-6);
    near(rx.jitterMs, (expected / 8000) * 1000, 1e-6);
  });

  test('first step: one 5 ms deviation gives J = 40/16 ts', () => {
    const rx = new ReceiveStats(8000);
    rx.onPacket(0, 0, 160, 0);
    rx.onPacket(1, 160, 160, 25); // 5 ms late = 40 ts
    near(rx.jitterTs, 40 / 16, 1e-9);
    rx.onPacket(2, 320, 160, 40); // back on time: |D| = 40 again
    near(rx.jitterTs, 40 / 16 + (40 - 40 / 16) / 16, 1e-9);
  });

  test('long random-delay stream converges near the mean |D| (48 kHz clock)', () => {
    const rx = new ReceiveStats(48000);
    // Uniform delay in [0, 20) ms: E|d1 − d2| = 20/3 ms.
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000);
    for (let i = 0; i < 20000; i++) rx.onPacket(i & 0xffff, i * 960, 100, i * 20 + rnd() * 20);
    near(rx.jitterMs, 20 / 3, 1.5);
  });

  test('a DTMF event (RFC 4733: one timestamp for the whole tone) counts for loss but is not jitter', () => {
    const rx = new ReceiveStats(8000);
    let seq = 0;
    for (let i = 0; i < 50; i++, seq++) rx.onPacket(seq, i * 160, 160, i * 20);
    // A 200 ms key press: ten event packets 20 ms apart, all stamped with the tone's start.
    for (let i = 50; i < 60; i++, seq++) rx.onPacket(seq, 50 * 160, 4, i * 20, false);
    for (let i = 60; i < 100; i++, seq++) rx.onPacket(seq, i * 160, 160, i * 20);
    near(rx.jitterTs, 0, 1e-9);
    assert.equal(rx.packets, 100);
    assert.equal(rx.lost, 0, 'the event packets took their sequence numbers');
    // Timed like audio, the same stream would have shown ~10 ms of jitter: the check is not idle.
    const naive = new ReceiveStats(8000);
    seq = 0;
    for (let i = 0; i < 50; i++, seq++) naive.onPacket(seq, i * 160, 160, i * 20);
    for (let i = 50; i < 60; i++, seq++) naive.onPacket(seq, 50 * 160, 4, i * 20);
    assert.ok(naive.jitterMs > 5, `timed, the key press reads as ${naive.jitterMs.toFixed(1)} ms of jitter`);
  });

  test('a 48 kHz stream (Opus trunk) measured on its own clock: no jitter when paced exactly', () => {
    const rx = new ReceiveStats(8000);
    rx.setClockRate(48000); // what the leg does once the far end's SDP says Opus
    for (let i = 0; i < 100; i++) rx.onPacket(i, i * 960, 100, i * 20);
    near(rx.jitterMs, 0, 1e-9);
    const wrong = new ReceiveStats(8000);
    for (let i = 0; i < 100; i++) wrong.onPacket(i, i * 960, 100, i * 20);
    assert.ok(wrong.jitterMs > 50, `on an 8 kHz clock the same stream reads ${wrong.jitterMs.toFixed(0)} ms`);
  });

  test('a big RTP timestamp jump (new talkspurt / restart) is not counted as jitter', () => {
    const rx = new ReceiveStats(8000);
    for (let i = 0; i < 50; i++) rx.onPacket(i, i * 160, 160, i * 20);
    rx.onPacket(50, 50 * 160 + 8000 * 3600, 160, 50 * 20);
    near(rx.jitterTs, 0, 1e-9);
  });
});

describe('estimateMos (simplified E-model)', () => {
  test('perfect G.711 is about 4.4', () => {
    near(estimateMos({ lossPercent: 0, oneWayDelayMs: 0 }), 4.41, 0.02);
    near(estimateMos({ lossPercent: 0, oneWayDelayMs: 20 }), 4.4, 0.05);
  });

  test('G.107 reference points: R = 80 → 4.02, R = 70 → 3.60 (via delay alone)', () => {
    // Id = 0.024 d + 0.11 (d − 177.3) for d > 177.3; R = 93.2 − Id
    const dFor = (r: number) => (93.2 - r + 0.11 * 177.3) / 0.134;
    near(estimateMos({ lossPercent: 0, oneWayDelayMs: dFor(80) }), 4.02, 0.011);
    near(estimateMos({ lossPercent: 0, oneWayDelayMs: dFor(70) }), 3.6, 0.011);
  });

  test('monotonically non-increasing in loss, strictly lower with real loss', () => {
    let prev = Infinity;
    for (let loss = 0; loss <= 100; loss += 0.25) {
      const m = estimateMos({ lossPercent: loss, oneWayDelayMs: 40 });
      assert.ok(m <= prev, `loss ${loss}%: ${m} > ${prev}`);
      prev = m;
    }
    assert.ok(estimateMos({ lossPercent: 1, oneWayDelayMs: 40 }) < estimateMos({ lossPercent: 0, oneWayDelayMs: 40 }));
    assert.ok(estimateMos({ lossPercent: 10, oneWayDelayMs: 40 }) < estimateMos({ lossPercent: 5, oneWayDelayMs: 40 }));
    assert.ok(estimateMos({ lossPercent: 10, oneWayDelayMs: 40 }) < 3.5, 'G.711 at 10% loss is poor');
  });

  test('monotonically non-increasing in delay, strictly lower with long delay', () => {
    for (const loss of [0, 2, 20]) {
      let prev = Infinity;
      for (let d = 0; d <= 1500; d += 5) {
        const m = estimateMos({ lossPercent: loss, oneWayDelayMs: d });
        assert.ok(m <= prev, `loss ${loss}% delay ${d}: ${m} > ${prev}`);
        prev = m;
      }
    }
    assert.ok(estimateMos({ lossPercent: 0, oneWayDelayMs: 400 }) < estimateMos({ lossPercent: 0, oneWayDelayMs: 150 }));
  });

  test('jitter counts as twice its value in delay', () => {
    assert.equal(estimateMos({ lossPercent: 1, oneWayDelayMs: 50, jitterMs: 75 }), estimateMos({ lossPercent: 1, oneWayDelayMs: 200 }));
    assert.ok(estimateMos({ lossPercent: 0, oneWayDelayMs: 100, jitterMs: 60 }) < estimateMos({ lossPercent: 0, oneWayDelayMs: 100 }));
  });

  test('a codec impairment (Ie) and a less robust codec (lower Bpl) lower the score', () => {
    const g711 = estimateMos({ lossPercent: 2, oneWayDelayMs: 50 });
    assert.ok(estimateMos({ lossPercent: 2, oneWayDelayMs: 50, ie: 11, bpl: 19 }) < g711);
    assert.ok(estimateMos({ lossPercent: 2, oneWayDelayMs: 50, bpl: 4.3 }) < g711);
  });

  test('always within 1..4.5, also for extreme, negative and non-finite inputs', () => {
    const inputs = [
      { lossPercent: 100, oneWayDelayMs: 5000, jitterMs: 1000 },
      { lossPercent: 1000, oneWayDelayMs: 0 },
      { lossPercent: -5, oneWayDelayMs: -100 },
      { lossPercent: 0, oneWayDelayMs: 0, ie: -50 },
      { lossPercent: Number.NaN, oneWayDelayMs: 40 },
      { lossPercent: 1, oneWayDelayMs: Number.NaN },
      { lossPercent: Number.POSITIVE_INFINITY, oneWayDelayMs: Number.POSITIVE_INFINITY },
    ];
    for (const i of inputs) {
      const m = estimateMos(i);
      assert.ok(Number.isFinite(m) && m >= 1 && m <= 4.5, `${JSON.stringify(i)} → ${m}`);
    }
    assert.equal(estimateMos({ lossPercent: 100, oneWayDelayMs: 5000 }), 1);
  });
});
