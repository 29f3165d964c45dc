import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReorderBuffer } from '../../src/media/reorder';
import type { RtpPacketView } from '../../src/media/rtp';

const pkt = (seq: number, ssrc = 1): RtpPacketView => ({ payloadType: 0, sequenceNumber: seq & 0xffff, timestamp: seq * 160, marker: false, ssrc, payload: Buffer.alloc(0) });

function harness(depth = 3, waitMs = 40) {
  const out: Array<[number, number]> = [];
  const rb = new ReorderBuffer((p, lost) => out.push([p.sequenceNumber, lost]), depth, waitMs);
  return { rb, out };
}

test('in-order packets pass at once, across the 16-bit wrap', () => {
  const { rb, out } = harness();
  for (const s of [65533, 65534, 65535, 0, 1]) { rb.push(pkt(s)); assert.equal(out[out.length - 1][0], s & 0xffff, 'delivered synchronously'); }
  assert.deepEqual(out.map((o) => o[1]), [0, 0, 0, 0, 0]);
  rb.close();
});

test('a swapped pair is put back in order; duplicates and late packets are dropped', () => {
  const { rb, out } = harness();
  for (const s of [10, 12, 11, 11, 12, 9, 13]) rb.push(pkt(s));
  assert.deepEqual(out, [[10, 0], [11, 0], [12, 0], [13, 0]]);
  assert.equal(rb.dropped, 3);
  assert.equal(rb.reordered, 1, 'only 11 came after a higher number (12) and was put back before it');
  assert.equal(rb.lost, 0);
  rb.close();
});

test('reordered counts each packet that overtook a held one, not the held one itself', () => {
  const { rb, out } = harness();
  for (const s of [1, 4, 3, 2, 5]) rb.push(pkt(s));
  assert.deepEqual(out.map((o) => o[0]), [1, 2, 3, 4, 5]);
  assert.equal(rb.reordered, 2, '3 and 2 arrived after 4');
  assert.equal(rb.dropped, 0);
  assert.equal(rb.lost, 0);
  rb.close();
});

test('a gap given up on is a loss, not a reordering; the straggler is then dropped as late', () => {
  const { rb, out } = harness(2, 1000);
  for (const s of [1, 3, 4, 5, 2]) rb.push(pkt(s));
  assert.deepEqual(out, [[1, 0], [3, 1], [4, 0], [5, 0]]);
  assert.equal(rb.reordered, 0, '3, 4, 5 arrived in increasing order; 2 came too late to be put back');
  assert.equal(rb.lost, 1);
  assert.equal(rb.dropped, 1);
  rb.close();
});

test('a lost packet is given up after depth packets, counted before the next one', () => {
  const { rb, out } = harness(2, 1000);
  for (const s of [1, 3, 4, 5]) rb.push(pkt(s));
  assert.deepEqual(out, [[1, 0], [3, 1], [4, 0], [5, 0]]);
  assert.equal(rb.lost, 1);
  rb.close();
});

test('a lost packet is given up after maxWaitMs when nothing else comes', async () => {
  const { rb, out } = harness(3, 30);
  rb.push(pkt(1)); rb.push(pkt(3));
  assert.deepEqual(out, [[1, 0]]);
  await new Promise((r) => setTimeout(r, 60));
  assert.deepEqual(out, [[1, 0], [3, 1]]);
  rb.close();
});

test('a new SSRC, or a long loss (a jump of 101-3000 ahead), resynchronises at once instead of waiting', () => {
  const { rb, out } = harness();
  rb.push(pkt(100)); rb.push(pkt(600)); rb.push(pkt(7, 2)); rb.push(pkt(8, 2));
  assert.deepEqual(out, [[100, 0], [600, 0], [7, 0], [8, 0]]);
  rb.close();
});

test('the same SSRC restarting its numbering far behind (or far ahead) is followed from its second packet (RFC 3550 A.1 probation)', () => {
  const { rb, out } = harness();
  for (const s of [1000, 1001, 1002]) rb.push(pkt(s));
  for (const s of [200, 201, 202]) rb.push(pkt(s)); // an SBC switched its source: 800 behind
  for (const s of [9000, 9001]) rb.push(pkt(s));    // and 8800 ahead
  assert.deepEqual(out.map((o) => o[0]), [1000, 1001, 1002, 201, 202, 9001]);
  assert.equal(rb.dropped, 2, 'the first packet of each new run');
  rb.close();
});

test('one stray packet far off does not drag the stream away', () => {
  const { rb, out } = harness();
  for (const s of [1000, 1001, 30000, 1002, 1003]) rb.push(pkt(s));
  assert.deepEqual(out.map((o) => o[0]), [1000, 1001, 1002, 1003]);
  assert.equal(rb.dropped, 1);
  rb.close();
});

test('comfort noise and DTMF packets take their place in the numbering: the audio after them is not held', () => {
  const { rb, out } = harness();
  rb.push(pkt(100)); rb.push(pkt(101));
  rb.push(pkt(102), false); // CN
  rb.push(pkt(103));
  assert.deepEqual(out, [[100, 0], [101, 0], [103, 0]], '103 at once, with no loss before it');
  // Out of order among them too: a DTMF packet overtaken by audio still fills its place.
  rb.push(pkt(105)); rb.push(pkt(104), false);
  assert.deepEqual(out.slice(3), [[105, 0]]);
  assert.equal(rb.lost, 0);
  rb.close();
});
