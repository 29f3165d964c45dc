import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { UdpSendBatch } from '../../src/media/udpSendBatch';
import { until } from '../support/tabs';

async function socket(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return s;
}

/** A receiver that records the first byte of each datagram. */
async function receiver(): Promise<{ sock: dgram.Socket; port: number; got: number[] }> {
  const sock = await socket();
  const got: number[] = [];
  sock.on('message', (m) => got.push(m[0]));
  return { sock, port: sock.address().port, got };
}

test('datagrams of one turn leave together at its end, in order, on connected and unconnected sockets', async () => {
  const rx = await receiver();
  const plain = await socket();
  const connected = await socket();
  await new Promise<void>((r) => connected.connect(rx.port, '127.0.0.1', () => r()));
  const batch = new UdpSendBatch(100);
  try {
    for (let i = 0; i < 6; i++) {
      if (i % 2) batch.send(connected, Buffer.from([i]));
      else batch.send(plain, Buffer.from([i]), rx.port, '127.0.0.1');
    }
    assert.equal(batch.queued, 6, 'nothing sent within the turn');
    await new Promise((r) => setImmediate(r));
    assert.equal(batch.queued, 0, 'all sent once the turn ended');
    await until(() => rx.got.length === 6, 'six datagrams');
    // Two sockets: order is kept per socket (the kernel may interleave the two flows).
    assert.deepEqual(rx.got.filter((b) => b % 2 === 0), [0, 2, 4]);
    assert.deepEqual(rx.got.filter((b) => b % 2 === 1), [1, 3, 5]);
  } finally {
    for (const s of [rx.sock, plain, connected]) s.close();
  }
});

test('a full batch is sent at once, without waiting for the end of the turn', async () => {
  const rx = await receiver();
  const tx = await socket();
  const batch = new UdpSendBatch(4);
  try {
    for (let i = 0; i < 5; i++) batch.send(tx, Buffer.from([i]), rx.port, '127.0.0.1');
    assert.equal(batch.queued, 1, 'the first four went when the fourth was queued');
    await until(() => rx.got.length === 5, 'five datagrams');
    assert.deepEqual(rx.got, [0, 1, 2, 3, 4]);
  } finally {
    rx.sock.close();
    tx.close();
  }
});

test('a socket closed before the flush loses its datagrams, the others still go', async () => {
  const rx = await receiver();
  const closing = await socket();
  const staying = await socket();
  const batch = new UdpSendBatch();
  try {
    batch.send(closing, Buffer.from([1]), rx.port, '127.0.0.1');
    batch.send(staying, Buffer.from([2]), rx.port, '127.0.0.1');
    closing.close(); // a leg closed in the same turn
    await new Promise((r) => setImmediate(r));
    await until(() => rx.got.length === 1, 'one datagram');
    assert.deepEqual(rx.got, [2]);
    assert.equal(batch.refused, 1);
  } finally {
    rx.sock.close();
    staying.close();
  }
});

test('discard(socket) takes back only that socket\'s datagrams, in order for the rest', async () => {
  const rx = await receiver();
  const closing = await socket();
  const staying = await socket();
  const batch = new UdpSendBatch();
  try {
    batch.send(closing, Buffer.from([1]), rx.port, '127.0.0.1');
    batch.send(staying, Buffer.from([2]), rx.port, '127.0.0.1');
    batch.send(closing, Buffer.from([3]), rx.port, '127.0.0.1');
    batch.send(staying, Buffer.from([4]), rx.port, '127.0.0.1');
    assert.equal(batch.discard(closing), 2);
    assert.equal(batch.queued, 2);
    closing.close();
    await until(() => rx.got.length === 2, 'the other socket\'s two datagrams');
    assert.deepEqual(rx.got, [2, 4]);
    assert.equal(batch.refused, 0);
  } finally {
    rx.sock.close();
    staying.close();
  }
});
