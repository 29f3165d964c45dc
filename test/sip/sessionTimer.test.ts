import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { SipUserAgent, type Dialog, type ServerInvite } from '../../src/sip';
import { readInfoDtmf } from '../../src/sip/dialog';
import { negotiateAsUas, readSessionExpires, SessionTimer } from '../../src/sip/sessionTimer';
import { SipRequest } from '../../src/sip/message';
import { DigestServer, parseDigestParams } from '../../src/sip/digestServer';

const logger = pino({ level: 'silent' });
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function ua(opts: Partial<ConstructorParameters<typeof SipUserAgent>[0]> = {}): Promise<SipUserAgent> {
  const u = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger, ...opts });
  await u.start();
  return u;
}

/** A calls B; resolves with both dialogs and the 2xx A got. */
async function call(a: SipUserAgent, b: SipUserAgent, sessionExpires?: number) {
  const bDialog = new Promise<Dialog>((resolve) => b.once('invite', (inv: ServerInvite) => resolve(inv.accept(SDP))));
  const inv = a.invite({ requestUri: `sip:b@127.0.0.1:${b.boundAddresses[0].port}`, from: { uri: 'sip:a@127.0.0.1' }, sdp: SDP, sessionExpires });
  const [res, aDialog] = await new Promise<[any, Dialog]>((resolve, reject) => {
    inv.once('accepted', (r, d) => resolve([r, d]));
    inv.once('rejected', (r) => reject(new Error(`rejected ${r.status}`)));
  });
  return { res, aDialog, bDialog: await bDialog };
}

test('Session-Expires parsing and UAS negotiation (RFC 4028 §9)', () => {
  const req = (headers: Array<[string, string]>) => { const r = new SipRequest('INVITE', 'sip:x@y'); for (const [k, v] of headers) r.addHeader(k, v); return r; };
  assert.deepEqual(readSessionExpires(req([['Session-Expires', '1800;refresher=uas']])), { interval: 1800, refresher: 'uas' });
  assert.deepEqual(readSessionExpires(req([['x', '600']])), { interval: 600, refresher: undefined }, 'compact form');
  assert.equal(readSessionExpires(req([['Session-Expires', 'soon']])), null);
  const s = { minSe: 90, expires: 1800 };
  assert.deepEqual(negotiateAsUas(req([['Session-Expires', '60'], ['Supported', 'timer']]), s), { reject422: 90 });
  const ok = negotiateAsUas(req([['Session-Expires', '300'], ['Supported', 'timer']]), s);
  assert.ok(ok && 'agreed' in ok);
  assert.deepEqual(ok.agreed, { interval: 300, refresher: 'uac' });
  assert.deepEqual(ok.headers, [['Session-Expires', '300;refresher=uac'], ['Require', 'timer']]);
  // A peer that cannot refresh: we refresh, and do not Require timer of it.
  const noSupport = negotiateAsUas(req([['Session-Expires', '300']]), s);
  assert.ok(noSupport && 'agreed' in noSupport);
  assert.equal(noSupport.agreed.refresher, 'uas');
  assert.deepEqual(noSupport.headers, [['Session-Expires', '300;refresher=uas']]);
  assert.equal(negotiateAsUas(req([]), s), null, 'no timer asked, none supported: no timer');
  const imposed = negotiateAsUas(req([['Supported', 'timer, 100rel']]), s);
  assert.ok(imposed && 'agreed' in imposed);
  assert.equal(imposed.agreed.interval, 1800);
});

test('an interval below Min-SE gets 422 and the caller retries with the Min-SE it was given', async () => {
  const a = await ua();
  const b = await ua(); // Min-SE 90
  try {
    const { res, aDialog, bDialog } = await call(a, b, 30);
    assert.match(res.header('session-expires'), /^90;refresher=uac$/);
    assert.equal(res.header('require'), 'timer');
    assert.equal(aDialog.sessionTimer.interval, 90);
    assert.equal(aDialog.sessionTimer.weRefresh, true);
    assert.equal(bDialog.sessionTimer.weRefresh, false);
    assert.ok(bDialog.sessionTimer.running);
    await aDialog.bye();
  } finally { await a.stop(); await b.stop(); }
});

/**
 * A callee that wants digest first and a Min-SE of 90 s after that (the order a PBX behind an
 * authenticating front end produces). It checks each answer with DigestServer, and is strict
 * about replays (RFC 7616 §3.4): an nc not above the last one seen for that nonce is refused
 * with a fresh challenge. With `oneTimeNonces`, a nonce is good for one request only.
 */
function strictCallee(b: SipUserAgent, opts: { oneTimeNonces?: boolean } = {}) {
  const server = new DigestServer('pbx.example', (u) => (u === 'gw' ? 's3cret' : undefined));
  const lastNc = new Map<string, number>();
  const seen: Array<{ cseq: number; se: string | undefined; auth: Record<string, string> | null; verdict: string }> = [];
  const challenge = (inv: ServerInvite) => inv.reject(401, 'Unauthorized', server.challenges().map((c) => ['WWW-Authenticate', c] as [string, string]));
  b.on('invite', (inv: ServerInvite) => {
    const req = inv.request;
    const header = req.header('authorization');
    const auth = header ? parseDigestParams(header) : null;
    const v = server.verify(req);
    let verdict: string = v.ok ? 'ok' : v.reason;
    if (v.ok && auth) {
      const nc = parseInt(auth.nc ?? '0', 16);
      const prev = lastNc.get(auth.nonce);
      if (prev !== undefined && (opts.oneTimeNonces || nc <= prev)) verdict = 'replay';
      else lastNc.set(auth.nonce, nc);
    }
    seen.push({ cseq: req.cseq.seq, se: req.header('session-expires'), auth, verdict });
    if (verdict !== 'ok') { challenge(inv); return; }
    if (Number(req.header('session-expires') ?? 0) < 90) { inv.reject(422, 'Session Interval Too Small', [['Min-SE', '90']]); return; }
    inv.accept(SDP);
  });
  return seen;
}

async function invite(a: SipUserAgent, b: SipUserAgent, password = 's3cret', sessionExpires = 30) {
  const inv = a.invite({
    requestUri: `sip:b@127.0.0.1:${b.boundAddresses[0].port}`, from: { uri: 'sip:a@127.0.0.1' }, sdp: SDP,
    sessionExpires, credentials: { username: 'gw', password },
  });
  return new Promise<{ status: number; dialog?: Dialog }>((resolve) => {
    inv.once('accepted', (r, d) => resolve({ status: r.status, dialog: d }));
    inv.once('rejected', (r) => resolve({ status: r.status }));
    inv.once('failed', () => resolve({ status: 0 }));
  });
}

test('a 422 after a digest challenge: the retried INVITE carries fresh credentials (nc 2, new cnonce) and a higher CSeq', async () => {
  const a = await ua();
  const b = await ua({ sessionTimers: { minSe: 1 } }); // the 422 comes from strictCallee, after auth
  try {
    const seen = strictCallee(b);
    const { status, dialog } = await invite(a, b);
    assert.deepEqual(seen.map((s) => s.verdict), ['missing', 'ok', 'ok'], JSON.stringify(seen));
    assert.equal(status, 200);
    const [, first, retry] = seen;
    assert.equal(first.se, '30');
    assert.equal(retry.se, '90');
    assert.equal(first.auth!.nc, '00000001');
    assert.equal(retry.auth!.nc, '00000002', 'nonce count goes up for the re-sent INVITE');
    assert.equal(retry.auth!.nonce, first.auth!.nonce, 'the nonce is still good: no new round trip');
    assert.notEqual(retry.auth!.cnonce, first.auth!.cnonce);
    assert.notEqual(retry.auth!.response, first.auth!.response);
    assert.ok(seen[0].cseq < seen[1].cseq && seen[1].cseq < seen[2].cseq, `CSeq ${seen.map((s) => s.cseq).join(',')}`);
    assert.equal(dialog!.sessionTimer.interval, 90);
    await dialog!.bye();
  } finally { await a.stop(); await b.stop(); }
});

test('a new challenge after the 422 retry (one-time nonces) is answered; a wrong password still ends the call', async () => {
  const a = await ua();
  const b = await ua({ sessionTimers: { minSe: 1 } });
  try {
    const seen = strictCallee(b, { oneTimeNonces: true });
    const { status, dialog } = await invite(a, b);
    assert.deepEqual(seen.map((s) => s.verdict), ['missing', 'ok', 'replay', 'ok'], JSON.stringify(seen));
    assert.equal(status, 200);
    assert.notEqual(seen[3].auth!.nonce, seen[1].auth!.nonce);
    assert.equal(seen[3].auth!.nc, '00000001', 'a new nonce counts from 1');
    assert.deepEqual(seen.map((s) => s.cseq), [1, 2, 3, 4]);
    await dialog!.bye();
    // Every answer fails: the caller gives up after a bounded number of tries.
    seen.length = 0;
    const wrong = await invite(a, b, 'guess');
    assert.equal(wrong.status, 401);
    assert.ok(seen.length <= 4 && seen.slice(1).every((s) => s.verdict === 'bad-response'), JSON.stringify(seen));
  } finally { await a.stop(); await b.stop(); }
});

test('the refresher keeps the session alive with UPDATE; the other side does not expire it', async () => {
  const timers = { minSe: 1, expires: 2 };
  const a = await ua({ sessionTimers: timers });
  const b = await ua({ sessionTimers: timers });
  try {
    const { aDialog, bDialog } = await call(a, b);
    const methods: string[] = [];
    const orig = bDialog.receive.bind(bDialog);
    bDialog.receive = (req, respond) => { methods.push(req.method); orig(req, respond); };
    // Without refreshes B would end the call after 2 - 2/3 s.
    await sleep(3200);
    assert.equal(aDialog.state, 'confirmed');
    assert.equal(bDialog.state, 'confirmed');
    assert.ok(methods.filter((m) => m === 'UPDATE').length >= 2, `refreshes seen by B: ${methods.join(',')}`);
    await aDialog.bye();
  } finally { await a.stop(); await b.stop(); }
});

test('a refresh due while a re-INVITE is in flight is deferred, and the next one still asks for the whole interval', async () => {
  const timers = { minSe: 1, expires: 8 };
  const a = await ua({ sessionTimers: timers });
  const b = await ua({ sessionTimers: timers });
  try {
    const { aDialog, bDialog } = await call(a, b);
    const asked: string[] = [];
    const orig = bDialog.receive.bind(bDialog);
    bDialog.receive = (req, respond) => { asked.push(req.header('session-expires') ?? ''); orig(req, respond); };
    aDialog['reinviteInFlight'] = true; // a hold re-INVITE has not been answered yet
    await aDialog.refreshSession();
    assert.equal(aDialog['sessionTimer'].interval, 8, 'the negotiated interval is kept');
    aDialog['reinviteInFlight'] = false;
    await sleep(2300); // the deferral: a quarter of the interval
    assert.deepEqual(asked, ['8;refresher=uac'], 'the deferred refresh asks for 8 s, not 2');
    await aDialog.bye();
  } finally { await a.stop(); await b.stop(); }
});

test('when the refresher goes quiet, the other side ends the call with BYE before the session expires', async () => {
  const timers = { minSe: 1, expires: 2 };
  const a = await ua({ sessionTimers: timers });
  const b = await ua({ sessionTimers: timers });
  try {
    const { aDialog, bDialog } = await call(a, b);
    aDialog.sessionTimer.stop(); // the refresher "dies" but its SIP stack still answers BYE
    const t0 = Date.now();
    const [bReason, aReason] = await Promise.all([
      new Promise<string>((r) => bDialog.once('terminated', r)),
      new Promise<string>((r) => aDialog.once('terminated', r)),
    ]);
    assert.equal(bReason, 'session-timer');
    assert.equal(aReason, 'bye');
    assert.ok(Date.now() - t0 < 2000, 'ended before the 2 s interval ran out');
  } finally { await a.stop(); await b.stop(); }
});

test('a refresh that gets no answer ends the session with BYE', async () => {
  const a = await ua({ sessionTimers: { minSe: 1, expires: 2 }, timers: { T1: 40 } });
  const b = await ua({ sessionTimers: { minSe: 1, expires: 2 } });
  try {
    const { aDialog } = await call(a, b);
    await b.stop(); // the far end vanishes
    const reason = await new Promise<string>((r) => aDialog.once('terminated', r));
    assert.equal(reason, 'session-timer');
    await sleep(50);
    assert.equal(a.counts.dialogs, 0);
  } finally { await a.stop(); }
});

/**
 * Makes `d` (the callee's dialog) challenge in-dialog INVITE/UPDATE: the first `challengeFirst`
 * requests get 401 whatever they carry (`always`: every request does), later ones are checked
 * with DigestServer and answered 401 unless good; `on422` answers the first good one with 422.
 */
function challengeInDialog(d: Dialog, opts: { challengeFirst?: number; always?: boolean; on422?: number } = {}) {
  const server = new DigestServer('pbx.example', (u) => (u === 'gw' ? 's3cret' : undefined));
  const seen: Array<{ method: string; cseq: number; se: string | undefined; auth: Record<string, string> | null; verdict: string; status: number }> = [];
  let sent422 = false;
  const orig = d.receive.bind(d);
  d.receive = (req, respond) => {
    if (req.method !== 'INVITE' && req.method !== 'UPDATE') { orig(req, respond); return; }
    const header = req.header('authorization');
    const v = server.verify(req);
    const entry = { method: req.method, cseq: req.cseq.seq, se: req.header('session-expires'), auth: header ? parseDigestParams(header) : null, verdict: v.ok ? 'ok' : v.reason, status: 0 };
    seen.push(entry);
    if (opts.always || seen.length <= (opts.challengeFirst ?? 1) || !v.ok) {
      entry.status = 401;
      respond(401, 'Unauthorized', { headers: server.challenges().map((c) => ['WWW-Authenticate', c] as [string, string]) });
      return;
    }
    if (opts.on422 && !sent422) {
      sent422 = true;
      entry.status = 422;
      respond(422, 'Session Interval Too Small', { headers: [['Min-SE', String(opts.on422)]] });
      return;
    }
    entry.status = 200;
    orig(req, respond);
  };
  return seen;
}

async function until(cond: () => boolean, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(20);
  }
}

/** A calls B with credentials; B accepts without a challenge. sessionExpires 0: no timer. */
async function callWithCredentials(a: SipUserAgent, b: SipUserAgent, sessionExpires = 0) {
  const bDialog = new Promise<Dialog>((resolve) => b.once('invite', (inv: ServerInvite) => resolve(inv.accept(SDP))));
  const { status, dialog } = await invite(a, b, 's3cret', sessionExpires);
  assert.equal(status, 200);
  return { aDialog: dialog!, bDialog: await bDialog };
}

for (const method of ['UPDATE', 'INVITE'] as const) {
  test(`a session refresh by ${method} challenged with 401 is retried with credentials; the call stays up`, async () => {
    const timers = { minSe: 1, expires: 2 };
    const a = await ua({ sessionTimers: timers });
    const b = await ua({ sessionTimers: timers });
    try {
      const { aDialog, bDialog } = await callWithCredentials(a, b, 2);
      if (method === 'INVITE') aDialog.peerAllowsUpdate = false;
      bDialog.on('reinvite', (_req, reply) => reply(200, SDP));
      const ended: string[] = [];
      aDialog.on('terminated', (r) => ended.push(`a:${r}`));
      bDialog.on('terminated', (r) => ended.push(`b:${r}`));
      // The re-INVITE variant also gets a 422 after the digest: its retry must carry fresh credentials.
      const seen = challengeInDialog(bDialog, { on422: method === 'INVITE' ? 3 : undefined });
      const want = method === 'INVITE' ? 4 : 3; // challenged, (422,) accepted, next refresh accepted
      await until(() => seen.length >= want && seen[want - 1].status === 200 || ended.length > 0);
      await sleep(100); // the 2xx reaches A
      assert.deepEqual(ended, [], 'no BYE');
      assert.equal(aDialog.state, 'confirmed');
      assert.ok(aDialog.sessionTimer.running && aDialog.sessionTimer.weRefresh);
      const summary = JSON.stringify(seen);
      assert.ok(seen.every((s) => s.method === method), summary);
      assert.deepEqual(seen.slice(0, want).map((s) => s.verdict), ['missing', ...Array(want - 1).fill('ok')], summary);
      assert.deepEqual(seen.slice(0, want).map((s) => s.status), method === 'INVITE' ? [401, 422, 200, 200] : [401, 200, 200], summary);
      for (let i = 1; i < want; i++) assert.ok(seen[i].cseq > seen[i - 1].cseq, `CSeq ${seen.map((s) => s.cseq).join(',')}`);
      const [, first, ...later] = seen.slice(0, want);
      assert.equal(first.auth!.nc, '00000001');
      later.forEach((s, i) => {
        // Later requests reuse the nonce with nc + 1 and a new cnonce (RFC 7616 §3.4).
        assert.equal(s.auth!.nonce, first.auth!.nonce);
        assert.equal(s.auth!.nc, (i + 2).toString(16).padStart(8, '0'));
        assert.notEqual(s.auth!.cnonce, first.auth!.cnonce);
      });
      if (method === 'INVITE') assert.equal(seen[2].se, '3;refresher=uac', 'the 422 retry asks for the Min-SE given');
      await aDialog.bye();
    } finally { await a.stop(); await b.stop(); }
  });
}

test('a challenged re-INVITE (hold) is retried with credentials; bounded retries; no retry in a dialog we accepted', async () => {
  const a = await ua();
  const b = await ua();
  try {
    const { aDialog, bDialog } = await callWithCredentials(a, b);
    bDialog.on('reinvite', (_req, reply) => reply(200, SDP));
    aDialog.on('reinvite', (_req, reply) => reply(200, SDP));
    const seen = challengeInDialog(bDialog);
    const hold = SDP.replace('a=rtpmap', 'a=sendonly\r\na=rtpmap');
    const res = await aDialog.reinvite(hold);
    assert.equal(res.status, 200, JSON.stringify(seen));
    assert.deepEqual(seen.map((s) => s.verdict), ['missing', 'ok']);
    assert.ok(seen[1].cseq > seen[0].cseq);
    assert.equal(aDialog.state, 'confirmed');

    // A peer that refuses every answer: 3 retries at most, then the 401 is the result.
    seen.length = 0;
    const always = challengeInDialog(bDialog, { always: true });
    const refused = await aDialog.reinvite(SDP);
    assert.equal(refused.status, 401);
    assert.ok(always.length >= 2 && always.length <= 4, JSON.stringify(always));

    // B accepted the call: it holds no credentials, so a 401 to its re-INVITE is final, as before.
    const toB = challengeInDialog(aDialog);
    const fromB = await bDialog.reinvite(SDP);
    assert.equal(fromB.status, 401);
    assert.equal(toB.length, 1);
    await aDialog.bye();
  } finally { await a.stop(); await b.stop(); }
});

test('a Session-Expires below our Min-SE (a peer\'s 2xx saying 1 s) is taken as Min-SE, not as a refresh every half second', () => {
  const due: number[] = [];
  const clock = { setTimeout: (_fn: () => void, ms: number) => { due.push(ms); return due.length; }, clearTimeout: () => undefined };
  const timer = new SessionTimer(clock, () => undefined, () => undefined, 90);
  timer.start(1, true);
  assert.equal(timer.interval, 90);
  assert.deepEqual(due, [45_000], 'the refresh at half of 90 s');
  timer.start(1800, false);
  assert.equal(timer.interval, 1800, 'longer intervals are kept');
  timer.stop();
});

test('a refresh refused with 491 or 500 (glare, a busy peer) is tried again and the call stays up; one answered 481 ends it with BYE', async () => {
  const timers = { minSe: 1, expires: 6 }; // refreshes at 3 s; the peer would expire the session at 4 s
  const a = await ua({ sessionTimers: timers });
  const b = await ua({ sessionTimers: timers });
  try {
    const { aDialog, bDialog } = await call(a, b);
    const statuses = [491, 500];
    const seen: number[] = [];
    const orig = bDialog.receive.bind(bDialog);
    bDialog.receive = (req, respond) => {
      if (req.method === 'UPDATE' && statuses.length > 0) { const s = statuses.shift()!; seen.push(s); respond(s); return; }
      if (req.method === 'UPDATE') seen.push(200);
      orig(req, respond);
    };
    const ended: string[] = [];
    aDialog.on('terminated', (r) => ended.push(r));
    await until(() => seen.includes(200) || ended.length > 0);
    assert.deepEqual(ended, [], 'no BYE for a refused refresh');
    assert.deepEqual(seen.slice(0, 3), [491, 500, 200], 'tried again until accepted');
    assert.equal(aDialog.state, 'confirmed');
    // A refresh that finds no dialog at the peer: the session is over.
    bDialog.receive = (req, respond) => { if (req.method === 'UPDATE') { respond(481); return; } orig(req, respond); };
    const reason = await new Promise<string>((r) => aDialog.once('terminated', r));
    assert.equal(reason, 'session-timer');
  } finally { await a.stop(); await b.stop(); }
});

test('a peer that refuses every refresh gets BYE once the session would have expired, not retries for ever', async () => {
  const timers = { minSe: 1, expires: 6 };
  const a = await ua({ sessionTimers: timers });
  const b = await ua({ sessionTimers: timers });
  try {
    const { aDialog, bDialog } = await call(a, b);
    let refused = 0;
    const orig = bDialog.receive.bind(bDialog);
    bDialog.receive = (req, respond) => { if (req.method === 'UPDATE') { refused++; respond(500); return; } orig(req, respond); };
    const t0 = Date.now();
    const reason = await new Promise<string>((r) => aDialog.once('terminated', r));
    assert.equal(reason, 'session-timer');
    assert.ok(refused >= 2 && refused <= 4, `refreshes refused before the BYE: ${refused}`);
    assert.ok(Date.now() - t0 < 4500, 'before the peer would have expired the session (4 s)');
  } finally { await a.stop(); await b.stop(); }
});

test('a refresh refused 500 with Retry-After is tried again after that long (within what the session allows), not sooner', async () => {
  const timers = { minSe: 1, expires: 12 };
  const a = await ua({ sessionTimers: timers });
  const b = await ua({ sessionTimers: timers });
  try {
    const { aDialog, bDialog } = await call(a, b);
    const at: number[] = [];
    const orig = bDialog.receive.bind(bDialog);
    bDialog.receive = (req, respond) => {
      if (req.method !== 'UPDATE') { orig(req, respond); return; }
      at.push(Date.now());
      // The first refresh (due at 6 s) finds the peer busy for 1 s; the budget before the peer
      // would expire the session is 2 s, and our own retry step 0.75 s.
      if (at.length === 1) { respond(500, 'Server Internal Error', { headers: [['Retry-After', '1']] }); return; }
      orig(req, respond);
    };
    await until(() => at.length === 2, 12_000);
    const gap = at[1] - at[0];
    assert.ok(gap >= 950, `tried again after ${gap} ms, before the Retry-After`);
    assert.equal(aDialog.state, 'confirmed');
  } finally { await a.stop(); await b.stop(); }
});

test('our BYE challenged by the far end (401) is sent again with credentials', async () => {
  const a = await ua();
  const b = await ua();
  try {
    const { aDialog, bDialog } = await callWithCredentials(a, b);
    const server = new DigestServer('pbx.example', (u) => (u === 'gw' ? 's3cret' : undefined));
    const byes: Array<{ auth: boolean; status: number }> = [];
    const bEnded = new Promise<string>((r) => bDialog.once('terminated', r));
    const orig = bDialog.receive.bind(bDialog);
    bDialog.receive = (req, respond) => {
      if (req.method !== 'BYE') { orig(req, respond); return; }
      if (!server.verify(req).ok) { byes.push({ auth: false, status: 401 }); respond(401, 'Unauthorized', { headers: server.challenges().map((c) => ['WWW-Authenticate', c] as [string, string]) }); return; }
      byes.push({ auth: true, status: 200 });
      orig(req, respond);
    };
    await aDialog.bye();
    assert.equal(await Promise.race([bEnded, sleep(3000).then(() => 'still up after 3 s')]), 'bye', 'the far end ended the call');
    assert.deepEqual(byes, [{ auth: false, status: 401 }, { auth: true, status: 200 }]);
  } finally { await a.stop(); await b.stop(); }
});

test('a refused re-offer is not ours: a later refresh re-INVITE sends the SDP before it; an UPDATE offer crossing our re-INVITE gets 491', async () => {
  const a = await ua();
  const b = await ua();
  try {
    const { aDialog, bDialog } = await call(a, b);
    aDialog.localSdp = SDP;
    const hold = SDP + 'a=sendonly\r\n';
    let answer: (status: number) => void = () => undefined;
    bDialog.on('reinvite', (_req, reply) => { answer = reply; });
    const pending = aDialog.reinvite(hold);
    await sleep(50);
    // B offers by UPDATE while our re-INVITE waits for its answer: refused, the offers would cross.
    const update = await bDialog.request('UPDATE', SDP);
    assert.equal(update.status, 491);
    answer(488);
    assert.equal((await pending).status, 488);
    assert.equal(aDialog.localSdp, SDP, 'the refused hold offer is not what a refresh would send');
    await aDialog.bye();
  } finally { await a.stop(); await b.stop(); }
});

test('readInfoDtmf: the digit of a DTMF INFO (dtmf-relay with Signal and Duration, or dtmf with the digit alone); anything else is none', () => {
  const info = (type: string, body: string) => { const r = new SipRequest('INFO', 'sip:x@127.0.0.1'); if (type) r.addHeader('Content-Type', type); r.body = body; return r; };
  assert.deepEqual(readInfoDtmf(info('application/dtmf-relay', 'Signal=5\r\nDuration=160\r\n')), { digit: '5', durationMs: 160 });
  assert.deepEqual(readInfoDtmf(info('application/dtmf-relay', 'Signal= *\r\n')), { digit: '*', durationMs: undefined });
  assert.deepEqual(readInfoDtmf(info('application/dtmf-relay', 'Signal=11\r\nDuration=99999')), { digit: '#', durationMs: 8000 }, 'event 11 is #; a length capped at 8 s');
  assert.deepEqual(readInfoDtmf(info('Application/DTMF; charset=x', 'd')), { digit: 'D', durationMs: undefined });
  assert.deepEqual(readInfoDtmf(info('application/dtmf-relay', 'Signal=12\r\nDuration=1')), { digit: 'A', durationMs: 40 }, 'event 12 is A; a 1 ms digit lasts 40 ms');
  for (const [type, body] of [['application/dtmf-relay', 'Signal=x'], ['application/dtmf-relay', ''], ['application/sdp', 'Signal=5'], ['', 'Signal=5'], ['application/dtmf', '55']]) {
    assert.equal(readInfoDtmf(info(type, body)), null, `${type}: ${body}`);
  }
});

test('a refresh by UPDATE refused 405 (a peer that listed UPDATE but does not take it) is made again at once by re-INVITE', async () => {
  const timers = { minSe: 1, expires: 6 };
  const a = await ua({ sessionTimers: timers });
  const b = await ua({ sessionTimers: timers });
  try {
    const { aDialog, bDialog } = await call(a, b);
    aDialog.peerAllowsUpdate = true;
    const seen: string[] = [];
    bDialog.on('reinvite', (_req, reply) => reply(200, SDP));
    const orig = bDialog.receive.bind(bDialog);
    bDialog.receive = (req, respond) => {
      seen.push(req.method);
      if (req.method === 'UPDATE') { respond(405); return; }
      orig(req, respond);
    };
    const ended: string[] = [];
    aDialog.on('terminated', (r) => ended.push(r));
    await until(() => seen.includes('INVITE') || ended.length > 0);
    await sleep(100);
    assert.deepEqual(seen.slice(0, 2), ['UPDATE', 'INVITE']);
    assert.deepEqual(ended, []);
    assert.equal(aDialog.peerAllowsUpdate, false, 'later refreshes go by re-INVITE');
    await aDialog.bye();
  } finally { await a.stop(); await b.stop(); }
});
