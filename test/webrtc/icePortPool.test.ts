import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IcePortPool, IcePortsExhaustedError } from '../../src/webrtc/icePortPool';

test('port pairs are handed out once each, round-robin, and come back on release', () => {
  const pool = new IcePortPool([40000, 40007]);
  assert.deepEqual([pool.take(), pool.take(), pool.take()], [40000, 40002, 40004]);
  assert.deepEqual(IcePortPool.rangeFor(40002), [40002, 40003]);
  pool.release(40002);
  assert.equal(pool.take(), 40006, 'a just-freed pair is not reused at once');
  assert.equal(pool.take(), 40002);
  assert.throws(() => pool.take(), /no free WebRTC port pair in 40000-40007/);
  assert.throws(() => pool.take(), IcePortsExhaustedError, 'a type the call layer can tell from other set-up failures');
  assert.equal(pool.used, 4);
  pool.release(40000);
  pool.release(40000); // twice is harmless
  assert.equal(pool.used, 3);
  assert.equal(pool.take(), 40000);
});

test('an odd-sized range never hands out a pair that runs past its end', () => {
  const pool = new IcePortPool([100, 104]);
  assert.deepEqual([pool.take(), pool.take()], [100, 102]);
  assert.throws(() => pool.take());
});
