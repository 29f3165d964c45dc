import { test } from 'node:test';
import assert from 'node:assert/strict';
import { evaluateDestination, matchPattern, normalizeNumber, PREMIUM_PREFIXES, type DialPlanRules } from '../../src/edge/destinations';

const us = (over: Partial<DialPlanRules> = {}): DialPlanRules => ({ defaultCountryCode: '1', allow: [], deny: [], allowInternational: false, allowPremium: false, ...over });
const uk = (over: Partial<DialPlanRules> = {}): DialPlanRules => ({ ...us(), defaultCountryCode: '44', ...over });

function allowed(input: string, rules: DialPlanRules, tokenPatterns?: string[]): string {
  const d = evaluateDestination(input, rules, tokenPatterns);
  assert.ok(d.allowed, `${input} should be allowed: ${JSON.stringify(d)}`);
  return d.normalized;
}

function denied(input: string, rules: DialPlanRules, reason: RegExp, tokenPatterns?: string[]): void {
  const d = evaluateDestination(input, rules, tokenPatterns);
  assert.equal(d.allowed, false, `${input} should be denied: ${JSON.stringify(d)}`);
  if (!d.allowed) assert.match(d.reason, reason, input);
}

test('normalizeNumber: formatted E.164 input', () => {
  assert.equal(normalizeNumber('+1 (555) 123-0000', '1'), '+15551230000');
  assert.equal(normalizeNumber('  +44 20 7946.0000 ', '1'), '+442079460000');
  assert.equal(normalizeNumber('+15551230000', '44'), '+15551230000');
  assert.equal(normalizeNumber('0044 20 7946 0000', '1'), '+442079460000');
});

test('normalizeNumber: national numbers get the default country code', () => {
  assert.equal(normalizeNumber('(555) 123-0000', '1'), '+15551230000');
  assert.equal(normalizeNumber('1 555 123 0000', '1'), '+15551230000');
  assert.equal(normalizeNumber('020 7946 0000', '44'), '+442079460000');
  assert.equal(normalizeNumber('07700 900123', '44'), '+447700900123');
  assert.equal(normalizeNumber('030 1234567', '49'), '+49301234567');
});

test('normalizeNumber: NANP international prefix 011 becomes +', () => {
  assert.equal(normalizeNumber('011 44 20 7946 0000', '1'), '+442079460000');
  // Only in NANP: elsewhere 011 is a national number (trunk prefix 0 dropped).
  assert.equal(normalizeNumber('011 555 1234', '44'), '+44115551234');
});

test('normalizeNumber: short extensions and codes stay as they are', () => {
  assert.equal(normalizeNumber('1000', '1'), '1000');
  assert.equal(normalizeNumber('*72', '1'), '*72');
  assert.equal(normalizeNumber('123456', '44'), '123456');
  assert.equal(normalizeNumber('1234567', '44'), '+441234567');
});

test('normalizeNumber: junk is null', () => {
  for (const junk of ['', '   ', 'abc', 'call me', '+', '+1', '555-CALL-NOW', '+1 555 123 0000 ext 5', 'sip:alice@example.com', '12;user=phone', '1'.repeat(33), '+1555\n1230000x', '00', '+*#', '00*#12', '+1555*123', '011', '<script>']) {
    assert.equal(normalizeNumber(junk, '1'), null, JSON.stringify(junk));
  }
  // The boundaries: 32 digits is fine, '+' with two digits is fine.
  assert.equal(normalizeNumber('+12', '1'), '+12');
  assert.equal(normalizeNumber('+' + '1'.repeat(32), '1'), '+' + '1'.repeat(32));
});

test('matchPattern: * and ? wildcards, everything else literal', () => {
  assert.equal(matchPattern('+1555*', '+15551230000'), true);
  assert.equal(matchPattern('+1555*', '+15561230000'), false);
  assert.equal(matchPattern('+1555*', '+1555'), true);
  assert.equal(matchPattern('*', ''), true);
  assert.equal(matchPattern('*', '+442079460000'), true);
  assert.equal(matchPattern('+1555123000?', '+15551230007'), true);
  assert.equal(matchPattern('+1555123000?', '+155512300077'), false);
  assert.equal(matchPattern('+1555123000?', '+1555123000'), false);
  assert.equal(matchPattern('+15551230000', '+15551230000'), true);
  assert.equal(matchPattern('+15551230000', '+155512300001'), false);
  assert.equal(matchPattern('*0000', '+15551230000'), true);
  assert.equal(matchPattern('*0000', '+15551230001'), false);
  assert.equal(matchPattern('+1*0*0', '+15551230000'), true);
  assert.equal(matchPattern('*72', '*72'), true);
  assert.equal(matchPattern('*1', '*21'), true);
  // Regular expression syntax is literal.
  assert.equal(matchPattern('+1.55', '+1x55'), false);
  assert.equal(matchPattern('+1.55', '+1.55'), true);
  assert.equal(matchPattern('+1[0-9]*', '+15'), false);
  assert.equal(matchPattern('(1|2)', '1'), false);
  assert.equal(matchPattern('1+', '11'), false);
});

test('matchPattern: pathological patterns (config or token dest) do not backtrack catastrophically', () => {
  const start = process.hrtime.bigint();
  assert.equal(matchPattern('*'.repeat(20) + 'X', '+1555123000012345678901234'), false);
  assert.equal(matchPattern('?*'.repeat(60) + 'X', '+15551230000123456789012345678'), false);
  assert.equal(matchPattern('*1'.repeat(64), '1'.repeat(32)), false);
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  assert.ok(ms < 200, `took ${ms.toFixed(0)} ms`);
});

test('deny by default: nothing is allowed without an allow pattern', () => {
  denied('+15551230000', us(), /not in the allowed destinations/);
  denied('1000', us(), /not in the allowed destinations/);
  denied('(555) 123-0000', us({ allowInternational: true, allowPremium: true }), /not in the allowed destinations/);
  denied('+15551230000', us({ allow: ['+1556*'] }), /not in the allowed destinations/);
});

test('junk input is refused with a reason that quotes (a bounded part of) the input', () => {
  denied('call me maybe', us({ allow: ['*'] }), /"call me maybe" is not a dialable number/);
  const d = evaluateDestination('x'.repeat(1000), us({ allow: ['*'] }));
  assert.equal(d.allowed, false);
  if (!d.allowed) assert.ok(d.reason.length < 100, d.reason);
});

test('allow patterns admit matching numbers, normalised', () => {
  const rules = us({ allow: ['+1555*', '1000'] });
  assert.equal(allowed('+1 (555) 123-0000', rules), '+15551230000');
  assert.equal(allowed('555.123.0000', rules), '+15551230000');
  assert.equal(allowed('1000', rules), '1000');
  denied('1001', rules, /not in the allowed destinations/);
  denied('+1 (212) 555-0000', rules, /not in the allowed destinations/);
});

test('deny overrides allow', () => {
  const rules = us({ allow: ['+1*'], deny: ['+1555*', '+12125550000'] });
  denied('+15551230000', rules, /denied by the dial plan/);
  denied('(212) 555-0000', rules, /denied by the dial plan/);
  assert.equal(allowed('+12125550001', rules), '+12125550001');
  // Deny also wins over an explicit token pattern and over allowInternational/allowPremium.
  denied('+15551230000', us({ allow: ['+15551230000'], deny: ['*'], allowInternational: true, allowPremium: true }), /denied/, ['+15551230000']);
});

test('premium-rate numbers are blocked even when a broad allow pattern matches them', () => {
  const rules = us({ allow: ['*', '+*', '+1*', '+1???*', '+19*'] });
  denied('+1 900 555 1234', rules, /premium-rate/);
  denied('1-976-555-1234', rules, /premium-rate/);
  assert.equal(allowed('+1 800 555 1234', rules), '+18005551234');
  const ukRules = uk({ allow: ['+44*'] });
  denied('0909 879 0000', ukRules, /premium-rate/);
  denied('+44 871 000 0000', ukRules, /premium-rate/);
  denied('070 1234 5678', ukRules, /premium-rate/);
  assert.equal(allowed('020 7946 0000', ukRules), '+442079460000');
  // Satellite/IRSF ranges with international allowed in general.
  denied('+881 6 1234 5678', us({ allow: ['*'], allowInternational: true }), /premium-rate/);
  denied('+979 1234 5678', us({ allow: ['+9*'], allowInternational: true }), /premium-rate/);
});

test('premium-rate numbers are allowed by allowPremium or by a pattern specific to the premium range', () => {
  assert.equal(allowed('+19005551234', us({ allow: ['+1*'], allowPremium: true })), '+19005551234');
  assert.equal(allowed('+19005551234', us({ allow: ['+1900555*'] })), '+19005551234');
  assert.equal(allowed('+19005551234', us({ allow: ['+1900*'] })), '+19005551234');
  assert.equal(allowed('+19005551234', us({ allow: ['+19005551234'] })), '+19005551234');
  denied('+19005551235', us({ allow: ['+1*', '+19005551234'] }), /premium-rate/);
  // A token pattern never lifts the premium block.
  denied('+19005551234', us({ allow: ['+1*'] }), /premium-rate/, ['+1900*']);
  // Every listed prefix is actually blocked (with international allowed, so only premium applies).
  for (const p of PREMIUM_PREFIXES) denied(`${p}1234567`, us({ allow: ['*'], allowInternational: true }), /premium-rate/);
});

test('international numbers are blocked unless allowInternational or an allow pattern names the country', () => {
  denied('+44 20 7946 0000', us({ allow: ['*'] }), /is international/);
  denied('+44 20 7946 0000', us({ allow: ['+*'] }), /is international/);
  denied('+44 20 7946 0000', us({ allow: ['+?*'] }), /is international/);
  denied('+44 20 7946 0000', us({ allow: ['*0000'] }), /is international/);
  denied('0044 20 7946 0000', us({ allow: ['*'] }), /is international/);
  denied('011 44 20 7946 0000', us({ allow: ['*', '+1*'] }), /is international/);
  assert.equal(allowed('+44 20 7946 0000', us({ allow: ['*'], allowInternational: true })), '+442079460000');
  assert.equal(allowed('+44 20 7946 0000', us({ allow: ['+44*'] })), '+442079460000');
  assert.equal(allowed('011 44 20 7946 0000', us({ allow: ['+4*'] })), '+442079460000');
  denied('+33 1 23 45 67 89', us({ allow: ['+44*'] }), /not in the allowed destinations/);
  // Home country is not international; in the UK, +1 is.
  assert.equal(allowed('+15551230000', us({ allow: ['*'] })), '+15551230000');
  denied('+15551230000', uk({ allow: ['*'] }), /is international/);
  assert.equal(allowed('020 7946 0000', uk({ allow: ['*'] })), '+442079460000');
  // A token pattern never lifts the international block.
  denied('+442079460000', us({ allow: ['*'] }), /is international/, ['+44*']);
});

test('token patterns narrow the configured allow list', () => {
  const rules = us({ allow: ['+1*'] });
  assert.equal(allowed('+15551230000', rules, ['+1555*']), '+15551230000');
  denied('+12125550000', rules, /not allowed by this token/, ['+1555*']);
  denied('+15551230000', rules, /not allowed by this token/, []);
  assert.equal(allowed('+12125550000', rules, ['*']), '+12125550000');
  assert.equal(allowed('+12125550000', rules, ['+1212*', '+1555*']), '+12125550000');
  // Matching is on the normalised number.
  assert.equal(allowed('(555) 123-0000', rules, ['+1555*']), '+15551230000');
  // Token '*' does not itself allow anything the config does not.
  denied('+15551230000', us(), /not in the allowed destinations/, ['*']);
});

test('a specific token pattern counts as an allow pattern (config or token), within the safety checks', () => {
  assert.equal(allowed('+15551230000', us(), ['+1555*']), '+15551230000');
  denied('+442079460000', us(), /is international/, ['+44*']);
  denied('+19005551234', us(), /premium-rate/, ['+1900*']);
});

test('NANP numbers outside the US and Canada count as international under country code 1', () => {
  const rules = { defaultCountryCode: '1', allow: ['+1*'], deny: [], allowInternational: false, allowPremium: false };
  assert.deepEqual(evaluateDestination('+1 876 555 0100', rules), { allowed: false, reason: '+18765550100 is international' });
  assert.deepEqual(evaluateDestination('1 809 555 0100', rules), { allowed: false, reason: '+18095550100 is international' });
  assert.equal(evaluateDestination('+1 212 555 0100', rules).allowed, true, 'New York stays domestic');
  assert.equal(evaluateDestination('+1 416 555 0100', rules).allowed, true, 'Toronto stays domestic');
  assert.equal(evaluateDestination('+1 787 555 0100', rules).allowed, true, 'Puerto Rico is US');
  // Allowed when the configuration names the area code, or allows international calls.
  assert.equal(evaluateDestination('+18765550100', { ...rules, allow: ['+1*', '+1876*'] }).allowed, true);
  assert.equal(evaluateDestination('+18765550100', { ...rules, allowInternational: true }).allowed, true);
  // Under another home country the same number is simply international.
  assert.equal(evaluateDestination('+18765550100', { ...rules, defaultCountryCode: '44', allow: ['+1*'] }).allowed, true, '+1* names country 1 from abroad');
});

test('* and # past a short code are refused: they slipped a premium or international number past the prefix rules', () => {
  assert.equal(normalizeNumber('1#9005551234', '1'), null);
  assert.equal(normalizeNumber('8#765551234', '1'), null);
  assert.equal(normalizeNumber('0*9012345678', '44'), null);
  assert.equal(normalizeNumber('*67', '1'), '*67', 'a service code stays');
  assert.equal(normalizeNumber('5551234567', '1'), '+15551234567');
});

test('a token pattern allows by itself only a number or country it names; "**", "+*" and "?*" only narrow, like "*"', () => {
  const rules: DialPlanRules = { defaultCountryCode: '1', allow: [], deny: [], allowInternational: false, allowPremium: false };
  for (const wide of ['*', '**', '+*', '?*']) assert.equal(evaluateDestination('+15551234567', rules, [wide]).allowed, false, wide);
  assert.equal(evaluateDestination('+15551234567', rules, ['+1555*']).allowed, true);
  assert.equal(evaluateDestination('+15551234567', rules, ['+15551234567']).allowed, true);
  assert.equal(evaluateDestination('+15551234567', { ...rules, allow: ['+1*'] }, ['**']).allowed, true, 'with a config allow, a wide token pattern narrows nothing away');
});
