import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FailedBridges, PacketBatchWriter, readPacketBatch } from '../../src/media/worker/packetBatch';
import { splitPortRange } from '../../src/media/worker/workerMediaPlane';
import type { RtpPacketView } from '../../src/media/rtp';

function pkt(i: number, len: number): RtpPacketView {
  return { payloadType: 96 + (i % 30), marker: i % 3 === 0, sequenceNumber: (65530 + i) & 0xffff, timestamp: (0xfffffff0 + i * 960) >>> 0, ssrc: 0xdeadbeef - i, payload: Buffer.alloc(len, i) };
}

test('a batch carries every field of every packet, in order, and the writer starts empty again', () => {
  const w = new PacketBatchWriter();
  // 3000 packets of up to 200 bytes: well past the first 16 KB, so the writer grows.
  const sent = Array.from({ length: 3000 }, (_, i) => [i % 7, pkt(i, i % 201)] as const);
  for (const [id, p] of sent) w.add(id, p);
  assert.equal(w.count, 3000);
  const batch = w.take();
  assert.equal(w.count, 0);
  const got: Array<[number, RtpPacketView]> = [];
  readPacketBatch(batch, (id, p) => got.push([id, { ...p, payload: Buffer.from(p.payload) }]), (_id, err) => { throw err; });
  assert.deepEqual(got, sent.map(([id, p]) => [id, p]));
  assert.equal(w.take().byteLength, 0, 'an empty writer gives an empty batch');
});

test('a truncated batch yields the whole packets before the damage and nothing made up', () => {
  const w = new PacketBatchWriter();
  w.add(1, pkt(1, 50));
  w.add(2, pkt(2, 50));
  const batch = w.take();
  const cut = batch.slice(0, batch.byteLength - 10);
  const ids: number[] = [];
  readPacketBatch(cut, (id) => ids.push(id), (_id, err) => { throw err; });
  assert.deepEqual(ids, [1]);
  readPacketBatch(new ArrayBuffer(5), () => assert.fail('no packet in 5 bytes'), () => assert.fail('nothing delivered'));
});

test('a packet whose delivery throws is reported with its bridge, and the rest of the batch is still delivered', () => {
  const w = new PacketBatchWriter();
  for (const id of [1, 2, 3, 2, 1]) w.add(id, pkt(id, 20));
  const delivered: number[] = [];
  const failed: Array<[number, string]> = [];
  readPacketBatch(w.take(), (id) => { if (id === 2) throw new Error('broken bridge'); delivered.push(id); }, (id, err) => failed.push([id, (err as Error).message]));
  assert.deepEqual(delivered, [1, 3, 1]);
  assert.deepEqual(failed, [[2, 'broken bridge'], [2, 'broken bridge']]);
});

test('the RTP port range is split into even-aligned shares, one per worker, none empty', () => {
  assert.deepEqual(splitPortRange([30000, 30999], 2), [[30000, 30499], [30500, 30999]]);
  // 5 pairs over 2 workers: 3 + 2, starting even.
  assert.deepEqual(splitPortRange([30001, 30011], 2), [[30002, 30007], [30008, 30011]]);
  assert.deepEqual(splitPortRange([30000, 30003], 2), [[30000, 30001], [30002, 30003]]);
  assert.throws(() => splitPortRange([30000, 30003], 3), /2 RTP\/RTCP pairs: too few for 3 media workers/);
});

test('FailedBridges: each bridge\'s failure is reported first once (logged once, not per packet)', () => {
  const failed = new FailedBridges();
  assert.deepEqual([failed.first(7), failed.first(7), failed.first(8), failed.first(7)], [true, false, true, false]);
});
