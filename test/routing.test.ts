import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateConfig, type GatewayConfig, type GatewayConfigInput } from '../src/config';
import { EventEmitter } from 'node:events';
import pino from 'pino';
import { buildRouting } from '../src/routing';
import { CallManager } from '../src/calls/callManager';

/** Which sources' INVITEs buildRouting trusts (the rest get 403 or the digest challenge). */
function config(input: Partial<GatewayConfigInput>): GatewayConfig {
  const r = validateConfig({ demo: { enabled: false }, auth: { mode: 'token', hs256Secret: 'routing-test-secret-0123456789abcdef' }, ...input } as Record<string, unknown>);
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return r.config;
}
const registerUsers = (registrar: string) => ({ registerUsers: { registrar, domain: 'pbx.example' } });

test('the inbound.registerUsers registrar is trusted when it is an IP address, with no trunk at all', () => {
  const routing = buildRouting(config({ inbound: registerUsers('sip:192.0.2.10:5060') }), null);
  assert.equal(routing.trustedSource('192.0.2.10'), true, 'the PBX routing calls to registered users');
  assert.equal(routing.trustedSource('192.0.2.11'), false);
  assert.equal(routing.trustedSource('127.0.0.1'), false);

  const v6 = buildRouting(config({ inbound: registerUsers('sip:[2001:db8::5]:5060;transport=tcp') }), null);
  assert.equal(v6.trustedSource('2001:db8::5'), true, 'an IPv6 literal, brackets taken off');
});

test('beside a trunk: the registrar, the trunk and trunk.sourceCidrs are all trusted', () => {
  const routing = buildRouting(config({
    trunk: { uri: 'sip:198.51.100.1:5060', sourceCidrs: ['203.0.113.0/24'] },
    inbound: registerUsers('sip:192.0.2.10'),
  }), null);
  for (const ip of ['192.0.2.10', '198.51.100.1', '203.0.113.77']) assert.equal(routing.trustedSource(ip), true, ip);
  assert.equal(routing.trustedSource('192.0.2.99'), false);
});

test('a registrar given by host name is not trusted by itself: its addresses go in trunk.sourceCidrs', () => {
  const byName = buildRouting(config({ inbound: registerUsers('sip:pbx.example.com:5060') }), null);
  assert.equal(byName.trustedSource('192.0.2.10'), false);
  const listed = buildRouting(config({ trunk: { uri: 'sip:trunk.example.com', sourceCidrs: ['192.0.2.10/32'] }, inbound: registerUsers('sip:pbx.example.com:5060') }), null);
  assert.equal(listed.trustedSource('192.0.2.10'), true);
});

test('a registrar URI that does not parse is a clear error at start, as trunk.uri is', () => {
  assert.throws(() => buildRouting(config({ inbound: registerUsers('sip:alice@') }), null), /inbound\.registerUsers\.registrar is not a SIP URI: sip:alice@/);
});

test('the trunk\'s credentials answer challenges only from the trunk\'s own addresses, not from a trusted PBX', () => {
  const routing = buildRouting(config({
    trunk: { uri: 'sip:198.51.100.1:5060', username: 'gw', password: 'trunk-secret', sourceCidrs: ['203.0.113.0/24'], outboundProxy: 'sip:198.51.100.9' },
    inbound: registerUsers('sip:192.0.2.10'),
  }), null);
  for (const ip of ['198.51.100.1', '198.51.100.9', '203.0.113.77']) assert.deepEqual(routing.trunkCredentials?.(ip), { username: 'gw', password: 'trunk-secret' }, ip);
  assert.equal(routing.trustedSource('192.0.2.10'), true);
  assert.equal(routing.trunkCredentials?.('192.0.2.10'), undefined, 'the registrar PBX is trusted, but gets no trunk password');
});

test('a transfer target goes through the trunk: beside a trunk, a demo number (our loopback endpoint) is refused; a trunk number is referred as a call to it would be sent', () => {
  const routing = buildRouting(config({ trunk: { uri: 'sip:198.51.100.1:5060' }, dialplan: { allow: ['+1555*'] } }), 'sip:127.0.0.1:5062');
  assert.equal(routing.checkDestination('1000', { id: 'alice' }).allowed, true, 'a call to the demo number is allowed');
  const manager = new CallManager({ ua: new EventEmitter(), routing, logger: pino({ level: 'silent' }) } as unknown as ConstructorParameters<typeof CallManager>[0]);
  const demo = manager.transferTarget({ id: 'alice' }, '1000');
  assert.deepEqual(demo, { ok: false, message: '1000 is a demo number: a transfer goes through the trunk' });
  assert.deepEqual(manager.transferTarget({ id: 'alice' }, '+15551234567'), { ok: true, target: { number: '+15551234567', uri: 'sip:+15551234567@198.51.100.1:5060' } });
});
