import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { PortAllocator } from '../../src/media/portAllocator';

const HOST = '127.0.0.1';
type Pair = Awaited<ReturnType<PortAllocator['allocate']>>;

const open: dgram.Socket[] = [];
after(() => { for (const s of open) try { s.close(); } catch { /* already closed */ } });

function bindOne(port: number): Promise<dgram.Socket | null> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.once('error', () => { try { s.close(); } catch { /* not running */ } resolve(null); });
    s.bind(port, HOST, () => resolve(s));
  });
}

function closeSocket(s: dgram.Socket): Promise<void> {
  return new Promise((resolve) => { try { s.close(() => resolve()); } catch { resolve(); } });
}

/** An even base port with `n` consecutive ports currently free on loopback. */
async function freeRange(n: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + 2 * Math.floor(Math.random() * 15000);
    const socks: dgram.Socket[] = [];
    let okAll = true;
    for (let p = base; p < base + n; p++) {
      const s = await bindOne(p);
      if (!s) { okAll = false; break; }
      socks.push(s);
    }
    await Promise.all(socks.map(closeSocket));
    if (okAll) return base;
  }
  throw new Error('no free loopback port range for the test');
}

async function closePair(p: Pair): Promise<void> {
  await Promise.all([closeSocket(p.rtp), closeSocket(p.rtcp)]);
}

describe('PortAllocator', () => {
  test('hands out an even RTP port with RTCP on the next odd port, both bound', async () => {
    const base = await freeRange(8);
    const pa = new PortAllocator([base, base + 7], HOST);
    const p = await pa.allocate();
    try {
      assert.equal(p.port % 2, 0);
      assert.ok(p.port >= base && p.port + 1 <= base + 7);
      assert.deepEqual({ address: p.rtp.address().address, port: p.rtp.address().port }, { address: HOST, port: p.port });
      assert.equal(p.rtcp.address().port, p.port + 1);
      assert.equal(pa.allocated, 1);
    } finally {
      await closePair(p);
    }
  });

  test('an odd range start is rounded up to even; capacity counts whole pairs only', async () => {
    const base = await freeRange(8);
    const pa = new PortAllocator([base + 1, base + 6], HOST); // pairs: base+2/3, base+4/5; base+6 has no partner
    assert.equal(pa.capacity, 2);
    const a = await pa.allocate();
    const b = await pa.allocate();
    try {
      assert.deepEqual([a.port, b.port].sort((x, y) => x - y), [base + 2, base + 4]);
      await assert.rejects(pa.allocate(), /no free media ports/);
    } finally {
      await closePair(a);
      await closePair(b);
    }
  });

  test('never hands out a port twice, also under concurrent allocation; exhaustion is a clear error', async () => {
    const base = await freeRange(10);
    const pa = new PortAllocator([base, base + 9], HOST);
    assert.equal(pa.capacity, 5);
    const pairs = await Promise.all(Array.from({ length: 5 }, () => pa.allocate()));
    try {
      const ports = pairs.map((p) => p.port);
      assert.equal(new Set(ports).size, 5, `duplicates in ${ports}`);
      for (const port of ports) assert.equal(port % 2, 0);
      assert.deepEqual([...ports].sort((x, y) => x - y), [base, base + 2, base + 4, base + 6, base + 8]);
      assert.equal(pa.allocated, 5);
      await assert.rejects(pa.allocate(), (e: Error) => /no free media ports/.test(e.message) && e.message.includes(String(base)));
      assert.equal(pa.allocated, 5, 'a failed allocation leaves the count alone');
    } finally {
      await Promise.all(pairs.map(closePair));
    }
  });

  test('release returns a pair to the pool; double release is harmless', async () => {
    const base = await freeRange(4);
    const pa = new PortAllocator([base, base + 3], HOST);
    const a = await pa.allocate();
    const b = await pa.allocate();
    await assert.rejects(pa.allocate(), /no free media ports/);
    await closePair(a);
    pa.release(a.port);
    assert.equal(pa.allocated, 1);
    pa.release(a.port);
    pa.release(a.port);
    pa.release(12345); // never handed out
    assert.equal(pa.allocated, 1);
    const c = await pa.allocate();
    try {
      assert.equal(c.port, a.port);
      assert.notEqual(c.port, b.port);
      await assert.rejects(pa.allocate(), /no free media ports/, 'released once, usable once');
    } finally {
      await closePair(b);
      await closePair(c);
    }
  });

  test('a stale second release after the port was handed out again does not let it be handed out twice', async () => {
    const base = await freeRange(2);
    const pa = new PortAllocator([base, base + 1], HOST);
    const a = await pa.allocate();
    await closePair(a);
    pa.release(a.port);
    const c = await pa.allocate();
    try {
      assert.equal(c.port, a.port);
      pa.release(a.port); // the first owner releases again, late
      await assert.rejects(pa.allocate(), /no free media ports/, 'the port is still bound by its new owner');
    } finally {
      await closePair(c);
    }
  });

  test('a port taken by another process is skipped, and a half-bound pair leaks no socket', async () => {
    const base = await freeRange(6);
    const squatter = await bindOne(base + 1); // our RTCP port for the first pair
    assert.ok(squatter);
    open.push(squatter);
    const pa = new PortAllocator([base, base + 5], HOST);
    const p = await pa.allocate();
    try {
      assert.equal(p.port, base + 2);
      assert.equal(pa.allocated, 1);
      // The RTP socket opened on base before RTCP failed must have been closed again.
      const probe = await bindOne(base);
      assert.ok(probe, `port ${base} still bound by the allocator`);
      await closeSocket(probe);
    } finally {
      await closePair(p);
    }
  });

  test('all ports taken by others: rejects, nothing counted as allocated', async () => {
    const base = await freeRange(4);
    const s1 = await bindOne(base);
    const s2 = await bindOne(base + 2);
    assert.ok(s1 && s2);
    open.push(s1, s2);
    const pa = new PortAllocator([base, base + 3], HOST);
    await assert.rejects(pa.allocate(), /no free media ports/);
    assert.equal(pa.allocated, 0);
  });

  test('ranges without a whole even/odd pair are refused at construction', () => {
    assert.throws(() => new PortAllocator([30000, 30000], HOST), /holds no even\/odd pair/);
    assert.throws(() => new PortAllocator([30001, 30002], HOST), /holds no even\/odd pair/);
    assert.throws(() => new PortAllocator([30010, 30000], HOST), /holds no even\/odd pair/);
    assert.equal(new PortAllocator([30000, 30001], HOST).capacity, 1);
    assert.equal(new PortAllocator([30000, 30004], HOST).capacity, 2);
  });
});
