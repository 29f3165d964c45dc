/**
 * The pieces of a blind transfer (src/sip/refer.ts, src/calls/transfer.ts) without a network:
 * the sipfrag status line a REFER's NOTIFY carries (RFC 3420, RFC 3515 §2.4.5), good and bent;
 * Subscription-State and Event; the Refer-To / Referred-By headers; and the transfer state
 * machine against a scripted dialog (REFER answers, NOTIFYs, a BYE, the timeout, abandoning).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { SipRequest, SipResponse } from '../../src/sip/message';
import { isSipfrag, parseSipfragStatus, readSubscriptionState, referEventId, referHeaders } from '../../src/sip/refer';
import { BlindTransfer, type TransferOutcome } from '../../src/calls/transfer';
import { tabSafeReason } from '../../src/calls/causes';
import type { Dialog } from '../../src/sip';

test('sipfrag status lines: the first line of the body, SIP/2.0 and a status of 100-699', () => {
  assert.deepEqual(parseSipfragStatus('SIP/2.0 200 OK\r\n'), { status: 200, reason: 'OK' });
  assert.deepEqual(parseSipfragStatus('SIP/2.0 100 Trying'), { status: 100, reason: 'Trying' });
  assert.deepEqual(parseSipfragStatus('SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n\r\n'), { status: 486, reason: 'Busy Here' });
  assert.deepEqual(parseSipfragStatus('\r\nSIP/2.0 180 Ringing\r\n'), { status: 180, reason: 'Ringing' }, 'a stray leading line break');
  assert.deepEqual(parseSipfragStatus('sip/2.0 603 Decline'), { status: 603, reason: 'Decline' }, 'the version is case-insensitive');
  assert.deepEqual(parseSipfragStatus('SIP/2.0 200'), { status: 200, reason: '' }, 'no reason phrase');
  assert.deepEqual(parseSipfragStatus('SIP/2.0 200 O\x01K\x7f'), { status: 200, reason: 'OK' }, 'control characters dropped from the reason');
  assert.equal(parseSipfragStatus('SIP/2.0 200 ' + 'x'.repeat(500))!.reason.length, 100, 'reason kept short');
  for (const bad of ['', '\r\n', 'OK', 'SIP/2.0', 'SIP/2.0 99 Low', 'SIP/2.0 700 High', 'SIP/2.0 2000 OK', 'SIP/3.0 200 OK', 'SIP/2.0 20x OK',
    'INVITE sip:a@b SIP/2.0', 'Content-Length: 0\r\n\r\nSIP/2.0 200 OK', ' SIP/2.0 200 OK', 'SIP/2.0200 OK', '<xml/>', 'SIP/2.0 -200 OK']) {
    assert.equal(parseSipfragStatus(bad), null, JSON.stringify(bad));
  }
});

function notify(headers: Array<[string, string]>, body = ''): SipRequest {
  const req = new SipRequest('NOTIFY', 'sip:gw@127.0.0.1');
  for (const [k, v] of headers) req.addHeader(k, v);
  req.body = body;
  return req;
}

test('Subscription-State, Event and Content-Type of a NOTIFY', () => {
  assert.deepEqual(readSubscriptionState(notify([['Subscription-State', 'active;expires=60']])), { state: 'active' });
  assert.deepEqual(readSubscriptionState(notify([['Subscription-State', 'terminated;reason=noresource']])), { state: 'terminated', reason: 'noresource' });
  assert.deepEqual(readSubscriptionState(notify([['Subscription-State', ' Terminated ; Reason=Timeout ']])), { state: 'terminated', reason: 'timeout' });
  assert.deepEqual(readSubscriptionState(notify([['Subscription-State', 'pending']])), { state: 'pending' });
  assert.deepEqual(readSubscriptionState(notify([['Subscription-State', 'weird;reason=<x>']])), { state: 'other' });
  assert.deepEqual(readSubscriptionState(notify([])), { state: 'active' }, 'missing: taken as active');
  assert.equal(referEventId(notify([['Event', 'refer']])), null);
  assert.equal(referEventId(notify([['Event', 'refer;id=7']])), 7);
  assert.equal(referEventId(notify([['Event', 'Refer ; ID=12']])), 12);
  assert.equal(referEventId(notify([['Event', 'refer;id=abc']])), null, 'an unreadable id is none');
  assert.equal(referEventId(notify([['Event', 'talk']])), undefined);
  assert.equal(referEventId(notify([['Event', 'refer-x']])), undefined);
  assert.equal(referEventId(notify([])), undefined);
  assert.equal(isSipfrag(notify([['Content-Type', 'message/sipfrag;version=2.0']])), true);
  assert.equal(isSipfrag(notify([['Content-Type', 'Message/SipFrag']])), true);
  assert.equal(isSipfrag(notify([['Content-Type', 'text/plain']])), false);
  assert.equal(isSipfrag(notify([])), false);
});

test('Refer-To is the target URI in angle brackets; Referred-By our dialog URI without its tag; nothing injectable', () => {
  assert.deepEqual(referHeaders('sip:+15551234567@trunk.example.com:5062;transport=tcp', '"Alice" <sip:alice@gw.example.com>;tag=abc'), [
    ['Refer-To', '<sip:+15551234567@trunk.example.com:5062;transport=tcp>'],
    ['Referred-By', '<sip:alice@gw.example.com>'],
  ]);
  assert.deepEqual(referHeaders('sips:100@10.0.0.1', 'sip:gw@10.0.0.2;tag=x'), [['Refer-To', '<sips:100@10.0.0.1>'], ['Referred-By', '<sip:gw@10.0.0.2>']]);
  for (const bad of ['tel:+15551234567', 'sip:a@b>\r\nX-Evil: 1', 'sip:a b@c', '<sip:a@b>', 'http://x', '']) {
    assert.throws(() => referHeaders(bad, 'sip:gw@h;tag=x'), /not a SIP URI/, bad);
  }
});

/** A dialog whose REFER the test answers: its requests recorded, localSeq counting. */
function scriptedDialog() {
  const sent: Array<{ method: string; headers: Array<[string, string]> }> = [];
  let answer!: (r: SipResponse | Error) => void;
  const dialog = {
    localSeq: 4,
    localAddr: '<sip:gw@127.0.0.1>;tag=ours',
    request(method: string, _body: string, _ct: string | undefined, headers: Array<[string, string]>) {
      sent.push({ method, headers });
      const seq = ++dialog.localSeq;
      return new Promise<SipResponse>((resolve, reject) => {
        answer = (r) => {
          if (r instanceof Error) { reject(r); return; }
          r.addHeader('CSeq', `${seq} REFER`);
          resolve(r);
        };
      });
    },
  };
  return { dialog: dialog as unknown as Dialog, sent, answer: (r: SipResponse | Error) => answer(r) };
}

const sipfrag = (line: string, state = 'active;expires=60', id: string | null = '5') =>
  notify([['Event', id === null ? 'refer' : `refer;id=${id}`], ['Subscription-State', state], ['Content-Type', 'message/sipfrag;version=2.0']], `${line}\r\n`);

function newTransfer(timeoutMs = 10_000) {
  const d = scriptedDialog();
  const progress: number[] = [];
  const t = new BlindTransfer(d.dialog, { number: '+15550001111', uri: 'sip:+15550001111@127.0.0.1:5060' }, { timeoutMs, log: pino({ level: 'silent' }), onProgress: (s) => progress.push(s) });
  let outcome: TransferOutcome | undefined;
  void t.run().then((o) => { outcome = o; });
  const flush = () => new Promise((r) => setImmediate(r));
  return { t, ...d, progress, outcome: () => outcome, flush };
}

test('transfer state machine: 202, NOTIFY 100 then 180 (progress), NOTIFY 200 (succeeded); later NOTIFYs answered 200, ignored', async () => {
  const x = newTransfer();
  assert.equal(x.sent[0].method, 'REFER');
  assert.deepEqual(x.sent[0].headers, [['Refer-To', '<sip:+15550001111@127.0.0.1:5060>'], ['Referred-By', '<sip:gw@127.0.0.1>']]);
  x.answer(new SipResponse(202, 'Accepted'));
  await x.flush();
  assert.equal(x.t.state, 'accepted');
  assert.equal(x.t.matches(5), true);
  assert.equal(x.t.matches(4), false, 'another REFER\'s id');
  assert.equal(x.t.onNotify(sipfrag('SIP/2.0 100 Trying')), 200);
  assert.equal(x.t.onNotify(sipfrag('SIP/2.0 180 Ringing')), 200);
  assert.deepEqual(x.progress, [100, 180]);
  assert.equal(x.t.onNotify(sipfrag('SIP/2.0 200 OK', 'terminated;reason=noresource')), 200);
  await x.flush();
  assert.deepEqual(x.outcome(), { kind: 'succeeded', sipStatus: 200, reason: 'OK' });
  assert.equal(x.t.onNotify(sipfrag('SIP/2.0 486 Busy')), 200, 'after the outcome: known, ignored');
  assert.equal(x.t.state, 'succeeded');
});

test('transfer state machine: REFER refused, or unanswered (408), or not sent: failed with the status', async () => {
  for (const [res, status] of [[new SipResponse(403, 'Forbidden'), 403], [new SipResponse(501, 'Not Implemented'), 501], [new SipResponse(408, 'Request Timeout'), 408]] as const) {
    const x = newTransfer();
    x.answer(res);
    await x.flush();
    assert.equal(x.t.state, 'failed');
    assert.equal((x.outcome() as { sipStatus?: number }).sipStatus, status);
  }
  const y = newTransfer();
  y.answer(new Error('dialog terminated'));
  await y.flush();
  assert.deepEqual(y.outcome(), { kind: 'failed', sipStatus: undefined, message: 'REFER could not be sent: the trunk could not be reached' }, 'no network details for the tab (they are logged)');
});

test('transfer state machine: failure sipfrag; terminated without a final status; unreadable bodies are only no news', async () => {
  const busy = newTransfer();
  busy.answer(new SipResponse(202, 'Accepted'));
  await busy.flush();
  busy.t.onNotify(sipfrag('SIP/2.0 486 Busy Here'));
  await busy.flush();
  assert.deepEqual(busy.outcome(), { kind: 'failed', sipStatus: 486, message: 'the transfer target answered 486 Busy Here' });

  const odd = newTransfer();
  odd.answer(new SipResponse(202, 'Accepted'));
  await odd.flush();
  assert.equal(odd.t.onNotify(notify([['Event', 'refer'], ['Subscription-State', 'active'], ['Content-Type', 'text/plain']], 'SIP/2.0 200 OK')), 200, 'not declared sipfrag: no status read');
  assert.equal(odd.t.onNotify(notify([['Event', 'refer'], ['Content-Type', 'message/sipfrag']], 'garbage\0\xff')), 200, 'no status line');
  assert.equal(odd.t.onNotify(notify([['Event', 'refer'], ['Content-Type', 'message/sipfrag']], '')), 200, 'empty');
  assert.equal(odd.t.state, 'accepted', 'still waiting');
  odd.t.onNotify(notify([['Event', 'refer'], ['Subscription-State', 'terminated;reason=timeout']]));
  await odd.flush();
  assert.deepEqual(odd.outcome(), { kind: 'failed', sipStatus: undefined, message: 'the transfer\'s subscription ended without a final status (timeout)' });
});

test('transfer state machine: a NOTIFY before the 202 counts; a BYE after the 202 is success, before it is not; the timeout; abandon', async () => {
  const early = newTransfer();
  assert.equal(early.t.matches(5), true, 'before the answer: any id the REFER could have');
  early.t.onNotify(sipfrag('SIP/2.0 200 OK', 'terminated'));
  early.answer(new SipResponse(202, 'Accepted'));
  await early.flush();
  assert.equal(early.outcome()?.kind, 'succeeded');

  const bye = newTransfer();
  assert.equal(bye.t.peerHungUp(), false, 'not accepted yet: an ordinary hang-up');
  bye.answer(new SipResponse(202, 'Accepted'));
  await bye.flush();
  assert.equal(bye.t.peerHungUp(), true);
  await bye.flush();
  assert.deepEqual(bye.outcome(), { kind: 'succeeded' });

  const slow = newTransfer(50);
  slow.answer(new SipResponse(202, 'Accepted'));
  await slow.flush();
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(slow.outcome(), { kind: 'failed', sipStatus: undefined, message: 'no final report of the transfer within 0 s' });

  const gone = newTransfer(50);
  gone.answer(new SipResponse(202, 'Accepted'));
  await gone.flush();
  gone.t.abandon();
  await gone.flush();
  assert.deepEqual(gone.outcome(), { kind: 'abandoned' });
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(gone.t.state, 'abandoned', 'the timer went with it');
});

test('tabSafeReason: the far end\'s reason phrase as it is; one our transaction layer made up (no source: a transport error, a timeout) becomes a fixed phrase', () => {
  const theirs = new SipResponse(403, 'Forbidden by policy');
  theirs.source = { protocol: 'udp', host: '192.0.2.1', port: 5060 };
  assert.equal(tabSafeReason(theirs), 'Forbidden by policy');
  const ours = new SipResponse(503, 'Service Unavailable (transport: ECONNREFUSED)');
  assert.equal(tabSafeReason(ours), 'the far end could not be reached');
});
