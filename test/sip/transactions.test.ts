/**
 * RFC 3261 §17 transaction state machines (with RFC 6026 Accepted) driven on a fake clock
 * through a fake transport: retransmission schedules, timeouts and the CANCEL races.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSipMessage, SipRequest, SipResponse } from '../../src/sip/message';
import {
  DEFAULT_TIMERS, InviteClientTransaction, InviteServerTransaction, NonInviteClientTransaction,
  NonInviteServerTransaction, type Clock, type Timers, type TxContext,
} from '../../src/sip/transactions';

// ------------------------------------------------------------------ test doubles

/** A deterministic clock: timers fire in deadline order (ties in creation order) as time advances. */
class FakeClock implements Clock {
  now = 0;
  private seq = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.set(id, { at: this.now + ms, fn });
    return id;
  }

  clearTimeout(handle: unknown): void { this.timers.delete(handle as number); }

  /** Timers still armed: a terminated transaction must leave none. */
  get pending(): number { return this.timers.size; }

  advance(ms: number): void { this.advanceTo(this.now + ms); }

  advanceTo(end: number): void {
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
    }
    this.now = end;
  }
}

/** The transaction's view of the transport and of its table, recording what happened when. */
function harness(opts: { reliable?: boolean; timers?: Partial<Timers> } = {}) {
  const clock = new FakeClock();
  const sent: Array<{ at: number; data: string }> = [];
  const log = { terminatedAt: [] as number[], responses: [] as Array<{ at: number; status: number }>, timeouts: [] as number[], noAck: [] as number[] };
  const ctx: TxContext = {
    clock,
    timers: { ...DEFAULT_TIMERS, ...opts.timers },
    reliable: opts.reliable ?? false,
    send: (data) => sent.push({ at: clock.now, data }),
    terminated: () => log.terminatedAt.push(clock.now),
  };
  const user = {
    onResponse: (res: SipResponse) => log.responses.push({ at: clock.now, status: res.status }),
    onTimeout: () => log.timeouts.push(clock.now),
  };
  return { clock, sent, log, ctx, user, sendTimes: () => sent.map((s) => s.at), firstLines: () => sent.map((s) => s.data.split('\r\n')[0]) };
}

function request(method: string, opts: { branch?: string; cseq?: number; transport?: string } = {}): SipRequest {
  const req = new SipRequest(method, 'sip:bob@biloxi.example.com');
  req.addHeader('Via', `SIP/2.0/${opts.transport ?? 'UDP'} pc33.atlanta.example.com;branch=${opts.branch ?? 'z9hG4bK776asdhds'}`);
  req.addHeader('Route', '<sip:proxy.atlanta.example.com;lr>');
  req.addHeader('Max-Forwards', '70');
  req.addHeader('To', 'Bob <sip:bob@biloxi.example.com>');
  req.addHeader('From', 'Alice <sip:alice@atlanta.example.com>;tag=1928301774');
  req.addHeader('Call-ID', 'a84b4c76e66710@pc33.atlanta.example.com');
  req.addHeader('CSeq', `${opts.cseq ?? 314159} ${method}`);
  return req;
}

function response(req: SipRequest, status: number, reason: string, toTag = 'a6c85cf'): SipResponse {
  const res = new SipResponse(status, reason);
  for (const v of req.headers('via')) res.addHeader('Via', v);
  res.addHeader('From', req.header('from')!);
  res.addHeader('To', status > 100 ? `${req.header('to')!};tag=${toTag}` : req.header('to')!);
  res.addHeader('Call-ID', req.callId);
  res.addHeader('CSeq', req.header('cseq')!);
  return res;
}

/** Send times of a doubling schedule starting at `first`, capped at `cap`, strictly before `end`. */
function schedule(first: number, cap: number, end: number): number[] {
  const out = [0];
  for (let t = first, i = first; t < end; i = Math.min(i * 2, cap), t += i) out.push(t);
  return out;
}

// ------------------------------------------------------------------ INVITE client (§17.1.1)

const timerSets: Array<{ name: string; timers: Timers }> = [
  { name: 'RFC defaults (T1=500ms, T2=4s)', timers: DEFAULT_TIMERS },
  { name: 'T1=100ms, T2=400ms', timers: { T1: 100, T2: 400, T4: 1000 } },
  { name: 'T1=1s, T2=4s', timers: { T1: 1000, T2: 4000, T4: 5000 } },
];

for (const { name, timers } of timerSets) {
  test(`INVITE client over UDP, ${name}: Timer A doubles without a cap, Timer B times out at 64*T1`, () => {
    const h = harness({ timers });
    const tx = new InviteClientTransaction(request('INVITE'), h.ctx, h.user);
    h.clock.advance(64 * timers.T1 - 1);
    assert.equal(tx.state, 'calling');
    assert.deepEqual(h.log.timeouts, []);
    h.clock.advance(1);
    const expected = schedule(timers.T1, Infinity, 64 * timers.T1);
    assert.deepEqual(h.sendTimes(), expected);
    assert.equal(expected.length, 7, 'the INVITE goes out 7 times before Timer B');
    // intervals: T1, 2T1, 4T1 … (not capped at T2 for INVITE)
    assert.deepEqual(expected.slice(1).map((t, i) => t - expected[i]), [1, 2, 4, 8, 16, 32].map((k) => k * timers.T1));
    assert.deepEqual(h.firstLines(), Array(7).fill('INVITE sip:bob@biloxi.example.com SIP/2.0'));
    assert.deepEqual(h.log.timeouts, [64 * timers.T1]);
    assert.deepEqual(h.log.terminatedAt, [64 * timers.T1]);
    assert.equal(tx.state, 'terminated');
    assert.equal(h.clock.pending, 0);
  });
}

test('INVITE client: the default schedule is 0, 500, 1500, 3500, 7500, 15500, 31500 ms and Timer B fires at 32 s', () => {
  const h = harness();
  new InviteClientTransaction(request('INVITE'), h.ctx, h.user);
  h.clock.advance(120_000);
  assert.deepEqual(h.sendTimes(), [0, 500, 1500, 3500, 7500, 15500, 31500]);
  assert.deepEqual(h.log.timeouts, [32000]);
});

test('INVITE client over a reliable transport: sent once, never retransmitted, Timer B still fires at 64*T1', () => {
  const h = harness({ reliable: true });
  const tx = new InviteClientTransaction(request('INVITE', { transport: 'TCP' }), h.ctx, h.user);
  h.clock.advance(31_999);
  assert.deepEqual(h.sendTimes(), [0]);
  assert.equal(tx.state, 'calling');
  h.clock.advance(1);
  assert.deepEqual(h.log.timeouts, [32000]);
  assert.equal(tx.state, 'terminated');
  assert.equal(h.clock.pending, 0);
});

test('INVITE client: a provisional response stops Timer A, and a call may ring past 64*T1 without a timeout', () => {
  const h = harness();
  const req = request('INVITE');
  const tx = new InviteClientTransaction(req, h.ctx, h.user);
  h.clock.advance(700);
  tx.receive(response(req, 100, 'Trying'));
  h.clock.advance(300);
  tx.receive(response(req, 180, 'Ringing'));
  h.clock.advance(10 * 60_000); // ten minutes of ringing
  assert.deepEqual(h.sendTimes(), [0, 500], 'no retransmission after the 100');
  assert.equal(tx.state, 'proceeding');
  assert.deepEqual(h.log.timeouts, [], 'Timer B does not apply in Proceeding (§17.1.1.2)');
  assert.deepEqual(h.log.responses, [{ at: 700, status: 100 }, { at: 1000, status: 180 }]);
  tx.receive(response(req, 200, 'OK'));
  assert.equal(tx.state, 'accepted');
});

test('INVITE client: a non-2xx final response is ACKed by the transaction with the INVITE\'s branch and the response\'s To tag', () => {
  const h = harness();
  const req = request('INVITE', { cseq: 7 });
  req.addHeader('Via', 'SIP/2.0/UDP proxy.example.com;branch=z9hG4bKlower', false);
  const tx = new InviteClientTransaction(req, h.ctx, h.user);
  tx.receive(response(req, 180, 'Ringing'));
  h.clock.advance(2000);
  tx.receive(response(req, 486, 'Busy Here', 'busytag'));
  assert.equal(tx.state, 'completed');
  assert.deepEqual(h.log.responses.map((r) => r.status), [180, 486]);
  const ack = parseSipMessage(h.sent[h.sent.length - 1].data);
  assert.ok(ack instanceof SipRequest, 'the ACK parses');
  assert.equal(ack.method, 'ACK');
  assert.equal(ack.uri, req.uri);
  assert.deepEqual(ack.headers('via'), [req.headers('via')[0]], 'one Via: the INVITE\'s top Via (§17.1.1.3)');
  assert.deepEqual(ack.headers('route'), req.headers('route'));
  assert.equal(ack.header('from'), req.header('from'));
  assert.match(ack.header('to')!, /;tag=busytag$/);
  assert.equal(ack.callId, req.callId);
  assert.equal(ack.header('cseq'), '7 ACK');
  assert.equal(ack.body, '');
});

for (const { reliable, d } of [{ reliable: false, d: 32000 }, { reliable: true, d: 0 }]) {
  test(`INVITE client over ${reliable ? 'a reliable transport' : 'UDP'}: Completed re-ACKs retransmitted finals, Timer D = ${d} ms`, () => {
    const h = harness({ reliable });
    const req = request('INVITE');
    const tx = new InviteClientTransaction(req, h.ctx, h.user);
    h.clock.advance(100);
    const busy = response(req, 486, 'Busy Here');
    tx.receive(busy);
    const acks = () => h.firstLines().filter((l) => l.startsWith('ACK')).length;
    assert.equal(acks(), 1);
    if (!reliable) {
      h.clock.advance(1000);
      tx.receive(busy); // the 486 was retransmitted: the ACK was lost
      assert.equal(acks(), 2);
      assert.equal(h.log.responses.length, 1, 'the retransmission is not passed up');
      h.clock.advanceTo(100 + d - 1);
      assert.equal(tx.state, 'completed');
    }
    h.clock.advanceTo(100 + d);
    assert.equal(tx.state, 'terminated');
    assert.deepEqual(h.log.terminatedAt, [100 + d]);
    assert.equal(h.clock.pending, 0);
    assert.deepEqual(h.log.timeouts, []);
  });
}

test('INVITE client: a 2xx moves to Accepted (RFC 6026), passes retransmitted 2xx up, sends no ACK itself, Timer M = 64*T1', () => {
  const h = harness();
  const req = request('INVITE');
  const tx = new InviteClientTransaction(req, h.ctx, h.user);
  h.clock.advance(1000);
  const ok = response(req, 200, 'OK');
  tx.receive(ok);
  assert.equal(tx.state, 'accepted');
  h.clock.advance(500);
  tx.receive(ok);
  tx.receive(response(req, 486, 'Busy Here')); // a late non-2xx is not for us any more
  assert.deepEqual(h.log.responses, [{ at: 1000, status: 200 }, { at: 1500, status: 200 }]);
  assert.deepEqual(h.sendTimes(), [0, 500], 'no retransmission after the 2xx and no ACK from the transaction');
  h.clock.advanceTo(1000 + 32000 - 1);
  assert.equal(tx.state, 'accepted');
  h.clock.advance(1);
  assert.equal(tx.state, 'terminated');
  assert.deepEqual(h.log.timeouts, []);
  assert.equal(h.clock.pending, 0);
});

// ------------------------------------------------------------------ non-INVITE client (§17.1.2)

for (const { name, timers } of timerSets) {
  test(`non-INVITE client over UDP, ${name}: Timer E doubles up to T2, Timer F times out at 64*T1`, () => {
    const h = harness({ timers });
    const tx = new NonInviteClientTransaction(request('OPTIONS'), h.ctx, h.user);
    h.clock.advance(64 * timers.T1 - 1);
    assert.equal(tx.state, 'trying');
    h.clock.advance(1);
    const expected = schedule(timers.T1, timers.T2, 64 * timers.T1);
    assert.deepEqual(h.sendTimes(), expected);
    const intervals = expected.slice(1).map((t, i) => t - expected[i]);
    assert.ok(intervals.every((iv) => iv <= timers.T2), 'never more than T2 apart');
    assert.equal(Math.max(...intervals), timers.T2);
    assert.deepEqual(h.log.timeouts, [64 * timers.T1]);
    assert.equal(tx.state, 'terminated');
    assert.equal(h.clock.pending, 0);
  });
}

test('non-INVITE client: the default schedule is 0, 0.5, 1.5, 3.5, 7.5, 11.5 … 31.5 s and Timer F fires at 32 s', () => {
  const h = harness();
  new NonInviteClientTransaction(request('BYE'), h.ctx, h.user);
  h.clock.advance(60_000);
  assert.deepEqual(h.sendTimes(), [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
  assert.deepEqual(h.log.timeouts, [32000]);
});

test('non-INVITE client: in Proceeding, Timer E retransmits every T2 until the final response', () => {
  const h = harness();
  const req = request('REGISTER');
  const tx = new NonInviteClientTransaction(req, h.ctx, h.user);
  h.clock.advance(600);
  tx.receive(response(req, 100, 'Trying'));
  assert.equal(tx.state, 'proceeding');
  h.clock.advanceTo(14000);
  // 0 and 500 in Trying; the E armed then fires at 1500, and from then on every T2.
  assert.deepEqual(h.sendTimes(), [0, 500, 1500, 5500, 9500, 13500]);
  tx.receive(response(req, 200, 'OK'));
  h.clock.advance(60_000);
  assert.equal(h.sent.length, 6, 'no retransmission once Completed');
  assert.deepEqual(h.log.responses.map((r) => r.status), [100, 200]);
  assert.deepEqual(h.log.timeouts, []);
});

test('non-INVITE client: Timer F also fires in Proceeding', () => {
  const h = harness();
  const req = request('OPTIONS');
  const tx = new NonInviteClientTransaction(req, h.ctx, h.user);
  h.clock.advance(100);
  tx.receive(response(req, 100, 'Trying'));
  h.clock.advanceTo(32000);
  assert.deepEqual(h.log.timeouts, [32000]);
  assert.equal(tx.state, 'terminated');
});

for (const { reliable, k } of [{ reliable: false, k: DEFAULT_TIMERS.T4 }, { reliable: true, k: 0 }]) {
  test(`non-INVITE client over ${reliable ? 'a reliable transport' : 'UDP'}: Completed absorbs retransmitted finals, Timer K = ${k} ms`, () => {
    const h = harness({ reliable });
    const req = request('BYE');
    const tx = new NonInviteClientTransaction(req, h.ctx, h.user);
    h.clock.advance(200);
    const ok = response(req, 200, 'OK');
    tx.receive(ok);
    tx.receive(ok);
    assert.deepEqual(h.log.responses, [{ at: 200, status: 200 }]);
    if (k > 0) {
      h.clock.advance(k - 1);
      assert.equal(tx.state, 'completed');
    }
    h.clock.advanceTo(200 + k);
    assert.equal(tx.state, 'terminated');
    assert.deepEqual(h.log.terminatedAt, [200 + k]);
    assert.deepEqual(h.sendTimes(), [0]);
    assert.equal(h.clock.pending, 0);
  });
}

test('non-INVITE client over a reliable transport: no retransmission, Timer F at 64*T1', () => {
  const h = harness({ reliable: true });
  new NonInviteClientTransaction(request('OPTIONS', { transport: 'TLS' }), h.ctx, h.user);
  h.clock.advance(40_000);
  assert.deepEqual(h.sendTimes(), [0]);
  assert.deepEqual(h.log.timeouts, [32000]);
});

// ------------------------------------------------------------------ INVITE server (§17.2.1)

for (const { name, timers } of timerSets) {
  test(`INVITE server over UDP, ${name}: a non-2xx final is retransmitted by Timer G (doubling, capped at T2) until Timer H`, () => {
    const h = harness({ timers });
    const req = request('INVITE');
    const tx = new InviteServerTransaction(req, h.ctx, () => h.log.noAck.push(h.clock.now));
    tx.respond(response(req, 100, 'Trying'));
    h.clock.advance(1000);
    tx.respond(response(req, 486, 'Busy Here'));
    assert.equal(tx.state, 'completed');
    h.clock.advance(64 * timers.T1 - 1);
    assert.equal(tx.state, 'completed');
    h.clock.advance(1);
    const finals = h.sent.filter((s) => s.data.startsWith('SIP/2.0 486')).map((s) => s.at - 1000);
    assert.deepEqual(finals, schedule(timers.T1, timers.T2, 64 * timers.T1));
    assert.ok(h.sent.every((s) => s.data === h.sent[1].data || s.data.startsWith('SIP/2.0 100')), 'each retransmission is the same bytes');
    assert.deepEqual(h.log.noAck, [1000 + 64 * timers.T1], 'Timer H: no ACK came');
    assert.equal(tx.state, 'terminated');
    assert.equal(h.clock.pending, 0);
  });
}

test('INVITE server: the default Timer G schedule after a 486 is 0, 0.5, 1.5, 3.5, 7.5, 11.5 … 31.5 s; Timer H at 32 s', () => {
  const h = harness();
  const req = request('INVITE');
  const tx = new InviteServerTransaction(req, h.ctx, () => h.log.noAck.push(h.clock.now));
  tx.respond(response(req, 486, 'Busy Here'));
  h.clock.advance(60_000);
  assert.deepEqual(h.sendTimes(), [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
  assert.deepEqual(h.log.noAck, [32000]);
});

for (const { reliable, i } of [{ reliable: false, i: DEFAULT_TIMERS.T4 }, { reliable: true, i: 0 }]) {
  test(`INVITE server over ${reliable ? 'a reliable transport' : 'UDP'}: the ACK stops Timer G and H (Confirmed), Timer I = ${i} ms`, () => {
    const h = harness({ reliable });
    const req = request('INVITE');
    const tx = new InviteServerTransaction(req, h.ctx, () => h.log.noAck.push(h.clock.now));
    tx.respond(response(req, 603, 'Decline'));
    h.clock.advance(2000);
    tx.ack();
    assert.equal(tx.state, 'confirmed');
    const sentAtAck = h.sent.length;
    assert.equal(sentAtAck, reliable ? 1 : 3, reliable ? 'no Timer G on a reliable transport' : 'sent at 0, 500 and 1500');
    tx.retransmission(); // a retransmitted INVITE in Confirmed is absorbed
    tx.ack(); // and so is a retransmitted ACK
    if (i > 0) {
      h.clock.advance(i - 1);
      assert.equal(tx.state, 'confirmed');
    }
    h.clock.advanceTo(2000 + i);
    assert.equal(tx.state, 'terminated');
    h.clock.advance(60_000);
    assert.equal(h.sent.length, sentAtAck);
    assert.deepEqual(h.log.noAck, []);
    assert.deepEqual(h.log.terminatedAt, [2000 + i]);
    assert.equal(h.clock.pending, 0);
  });
}

test('INVITE server over a reliable transport: no Timer G, but Timer H still ends the wait for the ACK', () => {
  const h = harness({ reliable: true });
  const req = request('INVITE', { transport: 'TCP' });
  const tx = new InviteServerTransaction(req, h.ctx, () => h.log.noAck.push(h.clock.now));
  tx.respond(response(req, 480, 'Temporarily Unavailable'));
  h.clock.advance(40_000);
  assert.deepEqual(h.sendTimes(), [0]);
  assert.deepEqual(h.log.noAck, [32000]);
  assert.equal(tx.state, 'terminated');
});

test('INVITE server: a retransmitted INVITE is answered with the last response sent, in every state that has one', () => {
  const h = harness();
  const req = request('INVITE');
  const tx = new InviteServerTransaction(req, h.ctx, () => undefined);
  const last = () => h.firstLines()[h.sent.length - 1];
  tx.retransmission();
  assert.equal(h.sent.length, 0, 'nothing to repeat before the first response');
  tx.respond(response(req, 100, 'Trying'));
  tx.retransmission();
  assert.deepEqual(h.firstLines(), ['SIP/2.0 100 Trying', 'SIP/2.0 100 Trying']);
  tx.respond(response(req, 180, 'Ringing'));
  tx.retransmission();
  assert.equal(last(), 'SIP/2.0 180 Ringing');
  assert.equal(h.sent[h.sent.length - 1].data, h.sent[h.sent.length - 2].data);
  tx.respond(response(req, 486, 'Busy Here'));
  tx.retransmission();
  assert.equal(last(), 'SIP/2.0 486 Busy Here');
  assert.equal(h.sent.length, 6);
  tx.respond(response(req, 200, 'OK')); // a second final response is never sent
  assert.equal(h.sent.length, 6);
});

test('INVITE server: after a 2xx it is Accepted (RFC 6026): retransmitted INVITEs are absorbed, no Timer G, Timer L = 64*T1', () => {
  const h = harness();
  const req = request('INVITE');
  const tx = new InviteServerTransaction(req, h.ctx, () => h.log.noAck.push(h.clock.now));
  tx.respond(response(req, 180, 'Ringing'));
  h.clock.advance(3000);
  tx.respond(response(req, 200, 'OK'));
  assert.equal(tx.state, 'accepted');
  tx.retransmission();
  h.clock.advanceTo(3000 + 32000 - 1);
  assert.deepEqual(h.firstLines(), ['SIP/2.0 180 Ringing', 'SIP/2.0 200 OK'], 'the core, not the transaction, retransmits the 2xx');
  assert.equal(tx.state, 'accepted');
  h.clock.advance(1);
  assert.equal(tx.state, 'terminated');
  assert.deepEqual(h.log.noAck, []);
  assert.equal(h.clock.pending, 0);
});

// ------------------------------------------------------------------ non-INVITE server (§17.2.2)

for (const { reliable, j } of [{ reliable: false, j: 32000 }, { reliable: true, j: 0 }]) {
  test(`non-INVITE server over ${reliable ? 'a reliable transport' : 'UDP'}: retransmissions get the last response, Timer J = ${j} ms`, () => {
    const h = harness({ reliable });
    const req = request('BYE');
    const tx = new NonInviteServerTransaction(req, h.ctx);
    tx.retransmission();
    assert.equal(h.sent.length, 0, 'Trying absorbs retransmissions');
    tx.respond(response(req, 100, 'Trying'));
    assert.equal(tx.state, 'proceeding');
    tx.retransmission();
    tx.respond(response(req, 200, 'OK'));
    assert.equal(tx.state, 'completed');
    tx.retransmission();
    tx.respond(response(req, 500, 'Server Internal Error')); // ignored in Completed
    assert.deepEqual(h.firstLines(), ['SIP/2.0 100 Trying', 'SIP/2.0 100 Trying', 'SIP/2.0 200 OK', 'SIP/2.0 200 OK']);
    if (j > 0) {
      h.clock.advance(j - 1);
      tx.retransmission();
      assert.equal(h.sent.length, 5);
      assert.equal(tx.state, 'completed');
    }
    h.clock.advanceTo(j);
    assert.equal(tx.state, 'terminated');
    tx.retransmission();
    assert.equal(h.sent.length, j > 0 ? 5 : 4, 'nothing is sent once Terminated');
    assert.deepEqual(h.log.terminatedAt, [j]);
    assert.equal(h.clock.pending, 0);
  });
}

// ------------------------------------------------------------------ CANCEL races (§9)

test('CANCEL before the final response (UAS): 200 to the CANCEL, 487 to the INVITE, 487 retransmitted until the ACK', () => {
  const h = harness();
  const invite = request('INVITE');
  const inv = new InviteServerTransaction(invite, h.ctx, () => h.log.noAck.push(h.clock.now));
  inv.respond(response(invite, 180, 'Ringing'));
  h.clock.advance(5000);
  const cancel = request('CANCEL'); // same branch as the INVITE (§9.1)
  const ctx = new NonInviteServerTransaction(cancel, h.ctx);
  ctx.respond(response(cancel, 200, 'OK'));
  inv.respond(response(invite, 487, 'Request Terminated'));
  assert.equal(inv.state, 'completed');
  h.clock.advance(1600);
  inv.ack();
  h.clock.advance(60_000);
  const wire = h.sent.map((s) => `${s.at} ${s.data.split('\r\n')[0]} / ${/CSeq: (.*)/.exec(s.data)![1]}`);
  assert.deepEqual(wire, [
    '0 SIP/2.0 180 Ringing / 314159 INVITE',
    '5000 SIP/2.0 200 OK / 314159 CANCEL',
    '5000 SIP/2.0 487 Request Terminated / 314159 INVITE',
    '5500 SIP/2.0 487 Request Terminated / 314159 INVITE',
    '6500 SIP/2.0 487 Request Terminated / 314159 INVITE',
  ]);
  assert.equal(inv.state, 'terminated');
  assert.deepEqual(h.log.noAck, []);
});

for (const final of [{ status: 200, reason: 'OK', state: 'accepted' }, { status: 486, reason: 'Busy Here', state: 'completed' }] as const) {
  test(`CANCEL after the final ${final.status} (UAS): the 487 the core tries to send is not put on the wire`, () => {
    const h = harness();
    const invite = request('INVITE');
    const inv = new InviteServerTransaction(invite, h.ctx, () => undefined);
    inv.respond(response(invite, 180, 'Ringing'));
    inv.respond(response(invite, final.status, final.reason));
    h.clock.advance(100);
    const cancel = request('CANCEL');
    const ctx = new NonInviteServerTransaction(cancel, h.ctx);
    ctx.respond(response(cancel, 200, 'OK'));
    inv.respond(response(invite, 487, 'Request Terminated'));
    assert.equal(inv.state, final.state);
    inv.retransmission();
    const lines = h.firstLines();
    assert.ok(!lines.includes('SIP/2.0 487 Request Terminated'), 'no 487 after a final response');
    assert.deepEqual(lines.slice(0, 3), ['SIP/2.0 180 Ringing', `SIP/2.0 ${final.status} ${final.reason}`, 'SIP/2.0 200 OK']);
    if (final.status >= 300) assert.equal(lines[3], 'SIP/2.0 486 Busy Here', 'a retransmitted INVITE still gets the 486');
    else assert.equal(lines.length, 3, 'a retransmitted INVITE is absorbed in Accepted');
  });
}

test('CANCEL before the final response (UAC): the 487 is ACKed by the INVITE transaction and reported once', () => {
  const h = harness();
  const invite = request('INVITE');
  const inv = new InviteClientTransaction(invite, h.ctx, h.user);
  inv.receive(response(invite, 180, 'Ringing'));
  h.clock.advance(4000);
  const cancelReq = request('CANCEL');
  const cancelLog: number[] = [];
  const cancel = new NonInviteClientTransaction(cancelReq, h.ctx, { onResponse: (r) => cancelLog.push(r.status), onTimeout: () => cancelLog.push(-1) });
  inv.cancelSent();
  h.clock.advance(50);
  cancel.receive(response(cancelReq, 200, 'OK'));
  const terminated = response(invite, 487, 'Request Terminated');
  inv.receive(terminated);
  inv.receive(terminated); // retransmitted: re-ACKed, not reported again
  h.clock.advance(60_000);
  assert.deepEqual(cancelLog, [200]);
  assert.deepEqual(h.log.responses.map((r) => r.status), [180, 487]);
  assert.deepEqual(h.log.timeouts, [], 'the CANCEL timer was stopped by the final response');
  assert.deepEqual(h.firstLines(), [
    'INVITE sip:bob@biloxi.example.com SIP/2.0',
    'CANCEL sip:bob@biloxi.example.com SIP/2.0',
    'ACK sip:bob@biloxi.example.com SIP/2.0',
    'ACK sip:bob@biloxi.example.com SIP/2.0',
  ]);
  assert.equal(inv.state, 'terminated');
  assert.equal(h.clock.pending, 0);
});

test('CANCEL crossing a 2xx (UAC): the INVITE transaction goes to Accepted and hands the 2xx up (the core ACKs and BYEs)', () => {
  const h = harness();
  const invite = request('INVITE');
  const inv = new InviteClientTransaction(invite, h.ctx, h.user);
  inv.receive(response(invite, 180, 'Ringing'));
  h.clock.advance(4000);
  const cancelReq = request('CANCEL');
  const cancelLog: number[] = [];
  const cancel = new NonInviteClientTransaction(cancelReq, h.ctx, { onResponse: (r) => cancelLog.push(r.status), onTimeout: () => cancelLog.push(-1) });
  inv.cancelSent();
  inv.receive(response(invite, 200, 'OK')); // the callee answered before the CANCEL arrived
  cancel.receive(response(cancelReq, 481, 'Call/Transaction Does Not Exist'));
  h.clock.advance(60_000);
  assert.equal(inv.state, 'terminated', 'Timer M ended Accepted');
  assert.deepEqual(h.log.responses.map((r) => r.status), [180, 200]);
  assert.deepEqual(h.log.timeouts, []);
  assert.deepEqual(cancelLog, [481]);
  assert.ok(!h.firstLines().some((l) => l.startsWith('ACK')), 'the transaction does not ACK a 2xx');
});

test('CANCEL with no final response ever (UAC): after 64*T1 the INVITE transaction gives up (§9.1)', () => {
  const h = harness();
  const invite = request('INVITE');
  const inv = new InviteClientTransaction(invite, h.ctx, h.user);
  inv.receive(response(invite, 183, 'Session Progress'));
  h.clock.advance(45_000);
  assert.equal(inv.state, 'proceeding');
  inv.cancelSent();
  h.clock.advance(32_000 - 1);
  assert.deepEqual(h.log.timeouts, []);
  h.clock.advance(1);
  assert.deepEqual(h.log.timeouts, [77_000]);
  assert.equal(inv.state, 'terminated');
  assert.equal(h.clock.pending, 0);
});
