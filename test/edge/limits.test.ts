import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { RateLimiter } from '../../src/edge/limits';

/** A clock the test moves by hand. */
function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms), set: (ms: number) => (t = ms) };
}

test('a fresh key gets a full burst, then is limited with the time until the next token', () => {
  const c = clock();
  const rl = new RateLimiter({ perMinute: 60, now: c.now }); // 1 token per second, burst = 60
  for (let i = 0; i < 60; i++) assert.equal(rl.take('a'), 0, `take ${i}`);
  assert.equal(rl.take('a'), 1000);
  // Still empty: the retry-after shrinks as time passes.
  c.advance(400);
  assert.equal(rl.take('a'), 600);
  c.advance(599);
  assert.equal(rl.take('a'), 1);
  c.advance(1);
  assert.equal(rl.take('a'), 0);
  assert.equal(rl.take('a'), 1000);
});

test('burst sets the bucket size independently of the rate', () => {
  const c = clock();
  const rl = new RateLimiter({ perMinute: 6, burst: 2, now: c.now }); // 1 token per 10 s
  assert.equal(rl.take('k'), 0);
  assert.equal(rl.take('k'), 0);
  assert.equal(rl.take('k'), 10_000);
  c.advance(2_500);
  assert.equal(rl.take('k'), 7_500);
  c.advance(7_500);
  assert.equal(rl.take('k'), 0);
  assert.equal(rl.take('k'), 10_000);
});

test('refill is proportional to elapsed time and capped at the burst', () => {
  const c = clock();
  const rl = new RateLimiter({ perMinute: 60, burst: 5, now: c.now });
  for (let i = 0; i < 5; i++) assert.equal(rl.take('k'), 0);
  assert.ok(rl.take('k') > 0);
  c.advance(3_000); // 3 tokens back
  for (let i = 0; i < 3; i++) assert.equal(rl.take('k'), 0, `refilled token ${i}`);
  assert.equal(rl.take('k'), 1000);
  c.advance(3_600_000); // an hour idle: still only 5
  for (let i = 0; i < 5; i++) assert.equal(rl.take('k'), 0, `after idle ${i}`);
  assert.equal(rl.take('k'), 1000);
});

test('denied attempts do not consume tokens or push the retry time further out', () => {
  const c = clock();
  const rl = new RateLimiter({ perMinute: 60, burst: 1, now: c.now });
  assert.equal(rl.take('k'), 0);
  for (let i = 0; i < 100; i++) assert.equal(rl.take('k'), 1000);
  c.advance(1000);
  assert.equal(rl.take('k'), 0);
});

test('a fractional retry-after rounds up to a whole millisecond', () => {
  const c = clock();
  const rl = new RateLimiter({ perMinute: 7, burst: 1, now: c.now }); // one token per 8571.43 ms
  assert.equal(rl.take('k'), 0);
  assert.equal(rl.take('k'), Math.ceil(60_000 / 7));
  c.advance(Math.ceil(60_000 / 7));
  assert.equal(rl.take('k'), 0);
});

test('waiting exactly the retry-after always succeeds, one millisecond less never does', () => {
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (const perMinute of [1, 7, 13, 60, 97, 600, 1000, 6000]) {
    const c = clock();
    const rl = new RateLimiter({ perMinute, burst: 3, now: c.now });
    for (let i = 0; i < 300; i++) {
      c.advance(Math.floor(rand() * (120_000 / perMinute)));
      const wait = rl.take('k');
      if (wait === 0) continue;
      assert.ok(Number.isInteger(wait) && wait > 0, `${perMinute}/min: ${wait}`);
      if (wait > 1) {
        c.advance(wait - 1);
        assert.ok(rl.take('k') > 0, `${perMinute}/min: allowed before the retry-after`);
        c.advance(1);
      } else c.advance(wait);
      assert.equal(rl.take('k'), 0, `${perMinute}/min: still limited after waiting ${wait} ms`);
    }
  }
});

test('keys are independent', () => {
  const c = clock();
  const rl = new RateLimiter({ perMinute: 60, burst: 1, now: c.now });
  assert.equal(rl.take('1.2.3.4'), 0);
  assert.ok(rl.take('1.2.3.4') > 0);
  assert.equal(rl.take('5.6.7.8'), 0);
  assert.ok(rl.take('5.6.7.8') > 0);
  assert.equal(rl.size, 2);
});

test('a clock stepping backwards neither refills nor locks a key out', () => {
  const c = clock(10_000_000);
  const rl = new RateLimiter({ perMinute: 60, burst: 2, now: c.now });
  assert.equal(rl.take('k'), 0);
  assert.equal(rl.take('k'), 0);
  assert.equal(rl.take('k'), 1000);
  c.advance(-3_600_000); // wall clock stepped back an hour
  assert.equal(rl.take('k'), 1000);
  c.advance(1000);
  assert.equal(rl.take('k'), 0);
});

test('memory is bounded by maxKeys: refilled buckets go first, then the least recently used', () => {
  const c = clock();
  const rl = new RateLimiter({ perMinute: 60, burst: 2, now: c.now, maxKeys: 3 });
  rl.take('a');
  rl.take('b');
  rl.take('b');
  rl.take('c');
  rl.take('c');
  assert.equal(rl.size, 3);
  c.advance(1000); // 'a' (had 1 left) is full again; 'b' and 'c' are not
  rl.take('d');
  assert.equal(rl.size, 3);
  // 'b' and 'c' were kept (still limited); 'a' was dropped and starts full.
  assert.equal(rl.take('b'), 0);
  assert.equal(rl.take('b'), 1000);
  assert.equal(rl.take('c'), 0);
  assert.equal(rl.take('c'), 1000);
  // Nothing refilled now: the least recently used ('d'; 'b' and 'c' were just used) goes to
  // make room for 'a' — a flood of new keys cannot push out a client that is being limited.
  assert.equal(rl.take('a'), 0);
  assert.equal(rl.size, 3);
  assert.equal(rl.take('b'), 1000, "'b' is still limited");
  assert.equal(rl.take('d'), 0, "'d' was evicted, so it starts full again");
  assert.equal(rl.size, 3);
  for (let i = 0; i < 1000; i++) rl.take(`k${i}`);
  assert.equal(rl.size, 3);
});

test('the default clock is real time (small real wait)', async () => {
  const rl = new RateLimiter({ perMinute: 1200, burst: 1 }); // one token per 50 ms
  assert.equal(rl.take('k'), 0);
  const wait = rl.take('k');
  assert.ok(wait > 0 && wait <= 50, `retry after ${wait}`);
  await sleep(wait + 20);
  assert.equal(rl.take('k'), 0);
});
