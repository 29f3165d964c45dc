import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DigestServer } from '../../src/sip/digestServer';
import { DigestClient, pickChallenge } from '../../src/sip/digest';
import { SipRequest } from '../../src/sip/message';

const server = new DigestServer('gw.example', (u) => ({ pbx: 's3cret' } as Record<string, string>)[u], 60_000);

function answered(challenge: string[], user: string, password: string, uri = 'sip:support@gw.example'): SipRequest {
  const req = new SipRequest('INVITE', uri);
  const auth = new DigestClient(pickChallenge(challenge)!, user, password).authorization('INVITE', uri);
  req.addHeader('Authorization', auth);
  return req;
}

test('our own digest client passes the server with SHA-256 and with MD5', () => {
  assert.deepEqual(server.verify(answered(server.challenges(), 'pbx', 's3cret')), { ok: true, username: 'pbx' });
  const md5Only = server.challenges().filter((c) => c.includes('MD5'));
  const req = answered(md5Only, 'pbx', 's3cret');
  assert.match(req.header('authorization')!, /algorithm=MD5/);
  assert.deepEqual(server.verify(req), { ok: true, username: 'pbx' });
});

test('wrong password, unknown user, missing header, forged nonce and a wrong realm are refused', () => {
  assert.deepEqual(server.verify(answered(server.challenges(), 'pbx', 'guess')), { ok: false, reason: 'bad-response' });
  assert.deepEqual(server.verify(answered(server.challenges(), 'mallory', 's3cret')), { ok: false, reason: 'unknown-user' });
  assert.deepEqual(server.verify(new SipRequest('INVITE', 'sip:x@y')), { ok: false, reason: 'missing' });
  const forged = server.challenges().map((c) => c.replace(/nonce="[^"]+"/, 'nonce="lq0abc.AAAAAAAAAAAAAAAAAAAAAA"'));
  assert.deepEqual(server.verify(answered(forged, 'pbx', 's3cret')), { ok: false, reason: 'bad-nonce' });
  const otherRealm = server.challenges().map((c) => c.replace('realm="gw.example"', 'realm="elsewhere"'));
  assert.deepEqual(server.verify(answered(otherRealm, 'pbx', 's3cret')), { ok: false, reason: 'malformed' });
  const req = new SipRequest('INVITE', 'sip:x@y');
  req.addHeader('Authorization', 'Digest username="pbx"');
  assert.deepEqual(server.verify(req), { ok: false, reason: 'malformed' });
});

test('a good answer on an expired nonce is stale, and the stale challenge says so', () => {
  const req = answered(server.challenges(), 'pbx', 's3cret');
  assert.deepEqual(server.verify(req, Date.now() + 61_000), { ok: false, reason: 'stale' });
  assert.ok(server.challenges(true).every((c) => c.includes('stale=true')));
});

test('answers re-computed for the same nonce all verify, each with a higher nc and a new cnonce', () => {
  const client = new DigestClient(pickChallenge(server.challenges())!, 'pbx', 's3cret');
  const answers = [1, 2, 3].map(() => {
    const req = new SipRequest('INVITE', 'sip:support@gw.example');
    req.addHeader('Authorization', client.authorization('INVITE', 'sip:support@gw.example'));
    assert.deepEqual(server.verify(req), { ok: true, username: 'pbx' });
    return /nc=(\w+)/.exec(req.header('authorization')!)![1] + ' ' + /cnonce="([^"]+)"/.exec(req.header('authorization')!)![1];
  });
  assert.deepEqual(answers.map((a) => a.split(' ')[0]), ['00000001', '00000002', '00000003']);
  assert.equal(new Set(answers.map((a) => a.split(' ')[1])).size, 3);
});

test('a captured answer cannot be replayed: not on another Request-URI, not on the same one', () => {
  const challenge = server.challenges();
  assert.notEqual(server.challenges()[0], challenge[0], 'every challenge has a nonce of its own, even in the same millisecond');
  const good = answered(challenge, 'pbx', 's3cret', 'sip:100@gw.example');
  // The same Authorization on an INVITE to a premium number: the digest-uri is not this request's.
  const elsewhere = new SipRequest('INVITE', 'sip:+19005551234@gw.example');
  elsewhere.addHeader('Authorization', good.header('authorization')!);
  assert.deepEqual(server.verify(elsewhere), { ok: false, reason: 'wrong-uri' });
  // The same target written differently, or behind a proxy that rewrote host and port: accepted.
  for (const [digestUri, requestUri] of [['sip:100@gw.example', 'sip:100@GW.example'], ['sip:100@gw.example:5060', 'sip:100@gw.example'], ['sip:%31%30%30@gw.example', 'sip:100@gw.example'], ['sip:100@pbx.example.com', 'sip:100@10.0.0.5:5060;transport=udp']]) {
    const req = new SipRequest('INVITE', requestUri);
    req.addHeader('Authorization', new DigestClient(pickChallenge(server.challenges())!, 'pbx', 's3cret').authorization('INVITE', digestUri));
    assert.deepEqual(server.verify(req), { ok: true, username: 'pbx' }, `${digestUri} for ${requestUri}`);
  }
  assert.deepEqual(server.verify(good), { ok: true, username: 'pbx' });
  assert.deepEqual(server.verify(good), { ok: false, reason: 'replay' }, 'the same nonce-count twice');
  // A genuine client's requests on one nonce count up, and pass; its replayed last one does not.
  const client = new DigestClient(pickChallenge(server.challenges())!, 'pbx', 's3cret');
  const first = client.authorization('INVITE', 'sip:200@gw.example');
  const second = client.authorization('INVITE', 'sip:200@gw.example');
  for (const [auth, ok] of [[first, true], [second, true], [second, false]] as const) {
    const req = new SipRequest('INVITE', 'sip:200@gw.example');
    req.addHeader('Authorization', auth);
    assert.equal(server.verify(req).ok, ok, auth);
  }
});
