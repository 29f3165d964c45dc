import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, redactConfig, validateConfig, type GatewayConfig, type LoadResult } from '../../src/config';

const ROOT = join(__dirname, '..', '..');
const work = mkdtempSync(join(tmpdir(), 'gw-config-test-'));
const SECRET = 'hs256-secret-that-is-long-enough-0123456789';
after(() => rmSync(work, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = join(work, name);
  writeFileSync(p, text);
  return p;
}

function ok(r: LoadResult): GatewayConfig {
  if (!r.ok) assert.fail(`expected a valid configuration, got:\n${r.errors.join('\n')}`);
  return r.config;
}

function errorsOf(r: LoadResult): string[] {
  if (r.ok) assert.fail('expected configuration errors, got a valid configuration');
  return r.errors;
}

/** Exactly one error line, matching every pattern. */
function oneError(r: LoadResult, ...patterns: RegExp[]): string {
  const errors = errorsOf(r);
  assert.equal(errors.length, 1, `one error expected, got:\n${errors.join('\n')}`);
  for (const p of patterns) assert.match(errors[0], p);
  assert.doesNotMatch(errors[0], /\n/);
  return errors[0];
}

test('defaults: http 127.0.0.1:8080, sip 127.0.0.1:5060/udp, demo endpoint and demo auth', () => {
  const c = ok(loadConfig([], {}));
  assert.deepEqual(c.http, { host: '127.0.0.1', port: 8080 });
  assert.equal(c.sip.host, '127.0.0.1');
  assert.equal(c.sip.port, 5060);
  assert.deepEqual(c.sip.transports, ['udp']);
  assert.equal(c.trunk, undefined);
  assert.equal(c.demo.enabled, true);
  assert.equal(c.demo.sipPort, 5062);
  assert.equal(c.auth.mode, 'demo');
  assert.deepEqual(c.media.portRange, [30000, 30999]);
  assert.equal(c.media.opusComplexity, 1);
  assert.deepEqual(c.webrtc.portRange, [40000, 40999]);
  assert.deepEqual(c.webrtc.hostAddresses, ['127.0.0.1']);
  assert.equal(c.dialplan.defaultCountryCode, '1');
  assert.deepEqual(c.dialplan.allow, []);
  assert.equal(c.log.level, 'info');
  assert.equal(c.cdr.path, 'cdr.jsonl');
});

test('a YAML file loads, with defaults for what it leaves out', () => {
  const p = file('a.yaml', ['http:', '  port: 9000', 'sip:', '  port: 5070', '  transports: [udp, tcp]', 'dialplan:', '  defaultCountryCode: "44"', '  allow: ["+44*"]', 'log:', '  level: debug', ''].join('\n'));
  const c = ok(loadConfig(['--config', p], {}));
  assert.equal(c.http.port, 9000);
  assert.equal(c.http.host, '127.0.0.1');
  assert.equal(c.sip.port, 5070);
  assert.deepEqual(c.sip.transports, ['udp', 'tcp']);
  assert.equal(c.dialplan.defaultCountryCode, '44');
  assert.deepEqual(c.dialplan.allow, ['+44*']);
  assert.equal(c.log.level, 'debug');
  assert.equal(c.media.inactivityTimeoutSec, 30);
});

test('a JSON file loads; --config=path and GATEWAY_CONFIG name the file too', () => {
  const p = file('b.json', JSON.stringify({ http: { port: 9001 }, trunk: { uri: 'sip:trunk.example.com', codecs: ['PCMA'] }, auth: { hs256Secret: SECRET } }));
  for (const r of [loadConfig(['--config', p], {}), loadConfig([`--config=${p}`], {}), loadConfig([], { GATEWAY_CONFIG: p })]) {
    const c = ok(r);
    assert.equal(c.http.port, 9001);
    assert.equal(c.trunk?.uri, 'sip:trunk.example.com');
    assert.deepEqual(c.trunk?.codecs, ['PCMA']);
    assert.equal(c.trunk?.srtp, 'off');
    assert.equal(c.demo.enabled, false, 'a trunk turns the demo endpoint off by default');
    assert.equal(c.auth.mode, 'token');
  }
  // --config wins over GATEWAY_CONFIG.
  const other = file('other.yaml', 'http:\n  port: 9002\n');
  assert.equal(ok(loadConfig(['--config', other], { GATEWAY_CONFIG: p })).http.port, 9002);
});

test('an empty YAML file is the defaults; a file that is not a mapping is an error', () => {
  assert.equal(ok(loadConfig(['--config', file('empty.yaml', '')], {})).http.port, 8080);
  oneError(loadConfig(['--config', file('list.yaml', '- a\n- b\n')], {}), /list\.yaml: expected a mapping of sections/);
});

test('file problems: missing file, --config without a path, YAML and JSON syntax errors — one line each', () => {
  oneError(loadConfig(['--config', join(work, 'nope.yaml')], {}), /^config error: config file not found: .*nope\.yaml$/);
  // Not a file (it would be read for ever, or fail with EISDIR): refused at once.
  oneError(loadConfig(['--config', '/dev/zero'], {}), /^config error: \/dev\/zero: not a regular file$/);
  oneError(loadConfig(['--config', work], {}), /: not a regular file$/);
  oneError(loadConfig(['--config'], {}), /--config needs a file path/);
  oneError(loadConfig(['--config', '--check-config'], {}), /--config needs a file path/);
  oneError(loadConfig(['--config', file('broken.yaml', 'http: [\n')], {}), /broken\.yaml: .*line \d+, column \d+$/);
  oneError(loadConfig(['--config', file('dup.yaml', 'http:\n  port: 1\nhttp:\n  port: 2\n')], {}), /dup\.yaml: Map keys must be unique/);
  oneError(loadConfig(['--config', file('broken.json', '{"http": ')], {}), /broken\.json: /);
  // A key twice in one object: JSON.parse kept the last without a word (YAML refuses it too).
  oneError(loadConfig(['--config', file('twice.json', '{"trunk": {"uri": "sip:a.example.com",\n "password": "first-pw-1", "password": "second-pw-2"}}')], {}),
    /^config error: .*twice\.json: a key appears twice in one object \(keys must be unique at line 2, column 28\)$/);
});

test('env overrides nested keys: numbers, booleans, lists (JSON or comma-separated), deep keys', () => {
  const p = file('base.yaml', 'sip:\n  port: 5070\nwebrtc:\n  preferPcmu: true\n');
  const c = ok(loadConfig(['--config', p], {
    GATEWAY_SIP__PORT: '5080',
    GATEWAY_SIP__TRANSPORTS: 'udp, tcp',
    GATEWAY_WEBRTC__PREFERPCMU: 'false',
    GATEWAY_WEBRTC__HOSTADDRESSES: '["127.0.0.1","127.0.0.2"]',
    GATEWAY_MEDIA__PORTRANGE: '31000,31099',
    GATEWAY_MEDIA__INACTIVITYTIMEOUTSEC: '12.5',
    GATEWAY_DIALPLAN__ALLOWINTERNATIONAL: 'yes',
    GATEWAY_DIALPLAN__ALLOW: '+1555*,+1666*',
    GATEWAY_LOG__LEVEL: 'warn',
    GATEWAY_INBOUND__DIDMAP: '{"+15551230000":"sales"}',
  }));
  assert.equal(c.sip.port, 5080, 'env wins over the file');
  assert.deepEqual(c.sip.transports, ['udp', 'tcp']);
  assert.equal(c.webrtc.preferPcmu, false);
  assert.deepEqual(c.webrtc.hostAddresses, ['127.0.0.1', '127.0.0.2']);
  assert.deepEqual(c.media.portRange, [31000, 31099]);
  assert.equal(c.media.inactivityTimeoutSec, 12.5);
  assert.equal(c.dialplan.allowInternational, true);
  assert.deepEqual(c.dialplan.allow, ['+1555*', '+1666*']);
  assert.equal(c.log.level, 'warn');
  // Spread: the map has no prototype (a DID "constructor" finds nothing).
  assert.deepEqual({ ...c.inbound.didMap }, { '+15551230000': 'sales' });
});

test('env: keys three levels deep, list items by index, case and underscores ignored', () => {
  const certs = join(ROOT, 'certs');
  const c = ok(loadConfig([], {
    GATEWAY_WEBRTC__TURNSERVERS: '[{"urls":"turn:127.0.0.1:3478","username":"lab"}]',
    GATEWAY_WEBRTC__TURNSERVERS__0__CREDENTIAL: 'turn-pw',
    GATEWAY_WEBRTC__STUN_SERVERS: 'stun:127.0.0.1:3478',
    GATEWAY_Log__Level: 'error',
  }));
  assert.deepEqual(c.webrtc.turnServers, [{ urls: 'turn:127.0.0.1:3478', username: 'lab', credential: 'turn-pw' }]);
  assert.deepEqual(c.webrtc.stunServers, ['stun:127.0.0.1:3478']);
  assert.equal(c.log.level, 'error');
  // Three levels: the key reaches the file check (the files do not exist here).
  const r = loadConfig([], { GATEWAY_HTTP__TLS__CERTFILE: join(certs, 'nope.cert.pem'), GATEWAY_HTTP__TLS__KEYFILE: join(certs, 'nope.key.pem') });
  const errors = errorsOf(r);
  assert.match(errors[0], /^config error: http\.tls\.certFile: file not found: .*nope\.cert\.pem$/);
  assert.match(errors[1], /^config error: http\.tls\.keyFile: file not found: .*nope\.key\.pem$/);
});

test('env: text settings stay text even when they look like numbers or JSON', () => {
  const c = ok(loadConfig([], {
    GATEWAY_TRUNK__URI: 'sip:trunk.example.com',
    GATEWAY_TRUNK__USERNAME: '4930123456',
    GATEWAY_TRUNK__PASSWORD: '[123456]',
    GATEWAY_DIALPLAN__DEFAULTCOUNTRYCODE: '44',
    GATEWAY_AUTH__HS256SECRET: '12345678901234567890123456789012345',
  }));
  assert.equal(c.trunk?.username, '4930123456');
  assert.equal(c.trunk?.password, '[123456]');
  assert.equal(c.dialplan.defaultCountryCode, '44');
  assert.equal(c.auth.hs256Secret, '12345678901234567890123456789012345');
});

test('env: an empty variable counts as unset', () => {
  const c = ok(loadConfig([], { PORT: '', GATEWAY_SIP__PORT: '', GATEWAY_TRUNK__PASSWORD: '' }));
  assert.equal(c.http.port, 8080);
  assert.equal(c.sip.port, 5060);
  assert.equal(c.trunk, undefined);
});

test('PORT and SIP_PORT set http.port and sip.port; GATEWAY_* wins over them in any order', () => {
  const c = ok(loadConfig([], { PORT: '3000', SIP_PORT: '5090' }));
  assert.equal(c.http.port, 3000);
  assert.equal(c.sip.port, 5090);
  const p = file('ports.yaml', 'http:\n  port: 9000\n');
  assert.equal(ok(loadConfig(['--config', p], { PORT: '3001' })).http.port, 3001, 'PORT wins over the file');
  assert.equal(ok(loadConfig([], { PORT: '3000', GATEWAY_HTTP__PORT: '4000' })).http.port, 4000);
  assert.equal(ok(loadConfig([], { GATEWAY_HTTP__PORT: '4000', PORT: '3000' })).http.port, 4000);
  assert.equal(ok(loadConfig([], { GATEWAY_SIP__PORT: '5070', SIP_PORT: '5090' })).sip.port, 5070);
  // A Kubernetes/Docker service link named "sip" is not a port number.
  assert.equal(ok(loadConfig([], { SIP_PORT: 'tcp://10.0.0.7:5060', PORT: 'tcp://10.0.0.8:80' })).sip.port, 5060);
});

test('a bad value names the key path, what is expected and what was given', () => {
  oneError(validateConfig({ sip: { port: 70000 } }), /^config error: sip\.port: expected an integer 0-65535, got 70000$/);
  oneError(validateConfig({ http: { port: 'eighty' } }), /^config error: http\.port: expected an integer 1-65535, got "eighty"$/);
  oneError(validateConfig({ media: { portRange: [31000, 30000] } }), /^config error: media\.portRange: expected \[low, high\] with high > low, got \[31000,30000\]$/);
  oneError(validateConfig({ sip: { transports: ['udp', 'sctp'] } }), /^config error: sip\.transports\.1: expected one of "udp", "tcp", "tls", got "sctp"$/);
  oneError(validateConfig({ log: { level: 'loud' } }), /^config error: log\.level: expected one of "fatal", .*"silent", got "loud"$/);
  oneError(validateConfig({ webrtc: { preferPcmu: 'sometimes' } }), /^config error: webrtc\.preferPcmu: expected true or false, got "sometimes"$/);
  oneError(validateConfig({ limits: { wsMaxMessageBytes: 100 } }), /^config error: limits\.wsMaxMessageBytes: expected a number >= 1024, got 100$/);
  oneError(validateConfig({ trunk: { codecs: ['PCMU'] }, auth: { hs256Secret: SECRET } }), /^config error: trunk\.uri: missing; expected a SIP URI such as sip:/);
  oneError(validateConfig({ trunk: { uri: 'trunk.example.com' }, auth: { hs256Secret: SECRET } }), /^config error: trunk\.uri: expected a SIP URI .*, got "trunk\.example\.com"$/);
  oneError(validateConfig({ dialplan: { defaultCountryCode: 44 } }), /^config error: dialplan\.defaultCountryCode: expected text \(in YAML, put the value in quotes\), got 44$/);
  oneError(validateConfig({ dialplan: { allow: ['+1 555*'] } }), /^config error: dialplan\.allow\.0: expected a number pattern/);
  oneError(validateConfig({ trunk: { uri: 'sip:t.example.com', sourceCidrs: ['10.0.0.0/33'] }, auth: { hs256Secret: SECRET } }), /^config error: trunk\.sourceCidrs\.0: expected an IP address or CIDR/);
  oneError(validateConfig({ edge: { allowedOrigins: ['https://app.example.com/'] } }), /^config error: edge\.allowedOrigins\.0: expected an origin such as https:\/\/app\.example\.com/);
  oneError(validateConfig({ webrtc: { stunServers: ['stun.example.com:3478'] } }), /^config error: webrtc\.stunServers\.0: expected a STUN URI/);
  // A password in a TURN URI: refused (browsers refuse it too), and masked in the message.
  const turnPw = oneError(validateConfig({ webrtc: { turnServers: [{ urls: 'turn:lab:s3cret-pw@turn.example.com' }] } }), /^config error: webrtc\.turnServers\.0\.urls: expected a TURN URI/);
  assert.doesNotMatch(turnPw, /s3cret-pw/);
  // The mask reaches the last @ (a password may hold one) and takes a / in the user part.
  for (const uri of ['sip:bob:p@ss-w0rd@trunk.example.com', 'sip:dept/sales:hunter2-pw@trunk.example.com']) {
    const e = oneError(validateConfig({ trunk: { uri }, auth: { hs256Secret: SECRET } }), /^config error: trunk\.uri: expected no password in the URI/);
    assert.doesNotMatch(e, /ss-w0rd|hunter2/, e);
  }
  oneError(validateConfig({ media: { opusComplexity: 11 } }), /^config error: media\.opusComplexity: expected .*10.*, got 11$/);
  oneError(validateConfig({ media: { portRange: [31001, 31005], workers: 3 } }), /^config error: media\.workers: expected at least one even\/odd RTP\/RTCP port pair per media worker in portRange/);
  oneError(validateConfig({ sip: 'udp' }), /^config error: sip: expected a section \(key: value mapping\), got "udp"$/);
  oneError(validateConfig({ sip: { dnsServers: ['dns.example.com'] } }), /^config error: sip\.dnsServers\.0: expected a DNS server as an IP address, optionally with :port/);
  oneError(validateConfig({ sip: { dnsServers: ['10.0.0.2:70000'] } }), /^config error: sip\.dnsServers\.0: expected a DNS server/);
  oneError(validateConfig({ sip: { dnsServers: [] } }), /^config error: sip\.dnsServers: expected at least one DNS server, or leave dnsServers out/);
  assert.deepEqual(ok(validateConfig({ sip: { dnsServers: ['10.0.0.2', '10.0.0.3:5353', '::1', '[2001:db8::53]:53'] } })).sip.dnsServers, ['10.0.0.2', '10.0.0.3:5353', '::1', '[2001:db8::53]:53']);
});

test('a bad value from the environment also names the variable', () => {
  oneError(loadConfig([], { SIP_PORT: 'abc' }), /^config error: sip\.port \(from SIP_PORT\): expected an integer 0-65535, got "abc"$/);
  oneError(loadConfig([], { GATEWAY_HTTP__PORT: '0' }), /^config error: http\.port \(from GATEWAY_HTTP__PORT\): expected an integer 1-65535, got 0$/);
  oneError(loadConfig([], { GATEWAY_WEBRTC__TURNSERVERS: '[{"urls":"http://x"}]' }), /^config error: webrtc\.turnServers\.0\.urls \(from GATEWAY_WEBRTC__TURNSERVERS\): expected a TURN URI/);
  oneError(loadConfig([], { GATEWAY_WEBRTC__TURNSERVERS: '[{"urls": }]' }), /^config error: webrtc\.turnServers \(from GATEWAY_WEBRTC__TURNSERVERS\): expected a JSON list/);
});

test('unknown keys are rejected: sections, keys, nested keys, environment variables', () => {
  oneError(validateConfig({ htpp: { port: 1 } }), /^config error: htpp: unknown setting; sections are: http, sip, trunk,/);
  oneError(validateConfig({ sip: { Port: 5070 } }), /^config error: sip\.Port: unknown setting; did you mean "port"\? sip takes: host, port,/);
  oneError(validateConfig({ http: { tls: { certFile: 'a', keyFile: 'b', ca: 'c' } } }), /^config error: http\.tls\.ca: unknown setting; http\.tls takes: certFile, keyFile$/);
  oneError(validateConfig({ webrtc: { turnServers: [{ urls: 'turn:127.0.0.1', password: 'x' }] } }), /^config error: webrtc\.turnServers\.0\.password: unknown setting; webrtc\.turnServers\.0 takes: urls, username, credential$/);
  const p = file('unknown.yaml', 'sip:\n  port: 5070\n  proxy: sip:x\n');
  oneError(loadConfig(['--config', p], {}), /^config error: sip\.proxy: unknown setting/);
  oneError(loadConfig([], { GATEWAY_SIP__PROXY: 'sip:x' }), /^config error: GATEWAY_SIP__PROXY: no such setting \(sip\.proxy\)$/);
  // Other variables are none of our business, GATEWAY_* ones without "__" included (Kubernetes
  // injects GATEWAY_PORT=tcp://… and GATEWAY_SERVICE_HOST for a service named "gateway").
  ok(loadConfig([], { HOME: '/root', NODE_ENV: 'production', GATEWAYX: '1', LOG__LEVEL: 'x', GATEWAY_PORT: 'tcp://10.0.0.7:8080', GATEWAY_SERVICE_HOST: '10.0.0.7', GATEWAY_PORT_8080_TCP_PORT: '8080' }));
  ok(loadConfig([], { constructor: '1', toString: '2', hasOwnProperty: '3' }));
});

test('semantic checks: token auth needs a key, demo auth needs loopback, trunk credentials, TLS', () => {
  oneError(validateConfig({ trunk: { uri: 'sip:t.example.com' } }), /^config error: auth: token mode needs auth\.hs256Secret \(GATEWAY_AUTH__HS256SECRET\) or auth\.es256PublicKeyFile$/);
  oneError(validateConfig({ http: { host: '0.0.0.0' } }), /^config error: auth\.mode: "demo" \(no tokens\) is only allowed when http\.host is loopback, got http\.host "0\.0\.0\.0"; set auth\.mode: token with auth\.hs256Secret or auth\.es256PublicKeyFile$/);
  ok(validateConfig({ http: { host: '0.0.0.0' }, demo: { enabled: true }, auth: { mode: 'token', hs256Secret: SECRET } }));
  oneError(validateConfig({ trunk: { uri: 'sip:t.example.com' }, auth: { mode: 'demo' } }), /^config error: auth\.mode: "demo" needs the built-in demo endpoint/);
  oneError(validateConfig({ auth: { hs256Secret: 'short' } }), /^config error: auth\.hs256Secret: expected at least 32 characters, got "\*\*\*"$/);
  oneError(validateConfig({ trunk: { uri: 'sip:t.example.com', register: true }, auth: { hs256Secret: SECRET } }), /^config error: trunk\.username: trunk\.register needs a user name/);
  oneError(validateConfig({ trunk: { uri: 'sip:t.example.com', password: 'pw' }, auth: { hs256Secret: SECRET } }), /^config error: trunk\.username: trunk\.password is set but digest auth also needs trunk\.username$/);
  oneError(validateConfig({ trunk: { uri: 'sip:t.example.com', outboundProxy: 'sbc.example.com' }, auth: { hs256Secret: SECRET } }), /^config error: trunk\.outboundProxy: expected a SIP URI such as sip:sbc\.example\.com:5060/);
  ok(validateConfig({ trunk: { uri: 'sip:t.example.com', outboundProxy: 'sip:sbc.example.com;transport=tcp' }, auth: { hs256Secret: SECRET } }));
  oneError(validateConfig({ sip: { transports: ['udp', 'tls'] } }), /^config error: sip\.tls: the tls transport needs sip\.tls\.certFile and sip\.tls\.keyFile$/);
  oneError(validateConfig({ sip: { transports: ['udp', 'udp'] } }), /^config error: sip\.transports: expected each transport at most once/);
  const notPem = file('not.pem', 'hello\n');
  const pemErrors = errorsOf(validateConfig({ http: { tls: { certFile: notPem, keyFile: notPem } } }));
  assert.equal(pemErrors.length, 2, pemErrors.join('\n'));
  assert.match(pemErrors[0], /^config error: http\.tls\.certFile: expected a PEM certificate, .*not\.pem is not one$/);
  assert.match(pemErrors[1], /^config error: http\.tls\.keyFile: expected a PEM private key, .*not\.pem is not one$/);
  oneError(validateConfig({ auth: { mode: 'token', es256PublicKeyFile: notPem }, demo: { enabled: true } }), /^config error: auth\.es256PublicKeyFile: expected a PEM EC P-256 public key/);
  const sipTlsErrors = errorsOf(validateConfig({ sip: { tls: { certFile: notPem, keyFile: notPem, caFile: notPem } } }));
  assert.match(sipTlsErrors.at(-1)!, /^config error: sip\.tls\.caFile: expected a PEM certificate, .*not\.pem is not one$/, sipTlsErrors.join('\n'));
  assert.ok(errorsOf(validateConfig({ sip: { tls: { certFile: notPem, keyFile: notPem, caFile: '' } } })).some((e) => /sip\.tls\.caFile: expected a file path/.test(e)));
});

test('secrets come from the environment and redactConfig hides them', () => {
  const p = file('trunk.yaml', [
    'trunk:',
    '  uri: sip:trunk.example.com:5060',
    '  username: "4930123456"',
    '  srtp: mandatory',
    'webrtc:',
    '  turnServers:',
    '    - urls: turn:127.0.0.1:3478',
    '      username: lab',
    '',
  ].join('\n'));
  const env = { GATEWAY_TRUNK__PASSWORD: 'trunk-pw-s3cret', GATEWAY_AUTH__HS256SECRET: SECRET, GATEWAY_WEBRTC__TURNSERVERS__0__CREDENTIAL: 'turn-pw-s3cret' };
  const c = ok(loadConfig(['--config', p], env));
  assert.equal(c.trunk?.password, 'trunk-pw-s3cret');
  assert.equal(c.auth.hs256Secret, SECRET);
  assert.equal(c.webrtc.turnServers[0].credential, 'turn-pw-s3cret');
  assert.equal(c.trunk?.username, '4930123456', 'the file still supplies the rest of the section');
  assert.equal(c.trunk?.srtp, 'mandatory');

  const red = redactConfig(c) as GatewayConfig;
  const text = JSON.stringify(red);
  for (const s of Object.values(env)) assert.ok(!text.includes(s), `redacted output must not contain ${s}`);
  assert.equal(red.trunk?.password, '***');
  assert.equal(red.auth.hs256Secret, '***');
  assert.equal(red.webrtc.turnServers[0].credential, '***');
  assert.equal(red.trunk?.username, '4930123456');
  assert.equal(c.trunk?.password, 'trunk-pw-s3cret', 'redactConfig does not touch the configuration itself');
  // Nothing to hide: nothing added.
  const plain = redactConfig(ok(loadConfig([], {}))) as GatewayConfig;
  assert.equal(plain.auth.hs256Secret, undefined);
  assert.equal(plain.trunk, undefined);
});

test('errors never print secret values, even next to an unrelated mistake', () => {
  const errors = errorsOf(validateConfig({ trunk: { uri: 'sip:t.example.com', username: 'u', password: 'trunk-pw-s3cret', bogus: 1 }, auth: { hs256Secret: 'short-s3cret' }, webrtc: { turnServers: [{ urls: 'turn:x', credential: 5 }] }, extra: { password: 'other-s3cret' } }));
  const text = errors.join('\n');
  assert.ok(!/s3cret/.test(text), text);
  assert.match(text, /trunk\.bogus: unknown setting/);
  assert.match(text, /auth\.hs256Secret: expected at least 32 characters, got "\*\*\*"/);
  assert.match(text, /webrtc\.turnServers\.0\.credential: expected text.*got "\*\*\*"/);
  assert.match(text, /extra: unknown setting/);
  const fromEnv = errorsOf(loadConfig([], { GATEWAY_AUTH__HS256SECRET: 'short-s3cret' })).join('\n');
  assert.ok(!fromEnv.includes('short-s3cret'), fromEnv);
});

// ---- the command line ----------------------------------------------------------------------

function runMain(args: string[], env: Record<string, string> = {}) {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('GATEWAY_') && k !== 'PORT' && k !== 'SIP_PORT') clean[k] = v;
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', ...args], { cwd: ROOT, env: { ...clean, ...env }, encoding: 'utf8', timeout: 60000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

function assertOneCleanLine(out: string, pattern: RegExp): void {
  const lines = out.split('\n').filter((l) => l.trim() !== '');
  assert.equal(lines.length, 1, `one line expected, got:\n${out}`);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(out, /^\s+at /m, 'no stack trace');
  assert.doesNotMatch(out, /Error:|ZodError|node:internal/);
}

test('--check-config with a bad file exits non-zero with one clear line and no stack trace', () => {
  const bad = file('bad.yaml', 'http:\n  port: 8080\nsip:\n  port: 99999\n');
  const r = runMain(['--check-config', '--config', bad]);
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stdout, '');
  assertOneCleanLine(r.stderr, /^config error: sip\.port: expected an integer 0-65535, got 99999$/);

  const unknown = runMain(['--check-config', '--config', file('bad2.yaml', 'trunk:\n  uri: sip:t.example.com\n  passwd: x\n')]);
  assert.equal(unknown.status, 2);
  assertOneCleanLine(unknown.stderr, /^config error: trunk\.passwd: unknown setting; trunk takes: uri, username, password,/);

  const syntax = runMain(['--check-config', '--config', file('bad3.yaml', 'sip: [\n')]);
  assert.equal(syntax.status, 2);
  assertOneCleanLine(syntax.stderr, /^config error: .*bad3\.yaml: /);

  const missing = runMain(['--check-config', '--config', join(work, 'missing.yaml')]);
  assert.equal(missing.status, 2);
  assertOneCleanLine(missing.stderr, /^config error: config file not found: /);

  const badEnv = runMain(['--check-config'], { SIP_PORT: 'x' });
  assert.equal(badEnv.status, 2);
  assertOneCleanLine(badEnv.stderr, /^config error: sip\.port \(from SIP_PORT\): /);
});

test('--check-config with a good file exits 0 and prints the configuration with secrets hidden', () => {
  const good = file('good.yaml', 'http:\n  port: 8090\ntrunk:\n  uri: sip:trunk.example.com\n  username: gw\n');
  const r = runMain(['--check-config', '--config', good], { GATEWAY_TRUNK__PASSWORD: 'trunk-pw-s3cret', GATEWAY_AUTH__HS256SECRET: SECRET });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.match(r.stdout, /^configuration is valid\n/);
  const printed = JSON.parse(r.stdout.slice(r.stdout.indexOf('\n') + 1)) as GatewayConfig;
  assert.equal(printed.http.port, 8090);
  assert.equal(printed.trunk?.password, '***');
  assert.equal(printed.auth.hs256Secret, '***');
  assert.ok(!r.stdout.includes('trunk-pw-s3cret') && !r.stdout.includes(SECRET));
});

test('webrtc.preferPcmu goes with any trunk codecs (a PCMU browser is transcoded to an Opus trunk)', () => {
  const trunk = 'sip:trunk.example.com';
  for (const codecs of ['["opus","PCMU"]', '["PCMA"]']) {
    const c = ok(loadConfig([], { GATEWAY_WEBRTC__PREFERPCMU: 'true', GATEWAY_TRUNK__URI: trunk, GATEWAY_TRUNK__CODECS: codecs, GATEWAY_AUTH__HS256SECRET: 'a-secret-of-thirty-two-characters-at-least' }));
    assert.equal(c.webrtc.preferPcmu, true);
  }
});

test('no secret in config errors: a short digest password (a map entry under a secret path), JSON with a password in it from the environment or a .json file', () => {
  const short = errorsOf(loadConfig([], { GATEWAY_INBOUND__DIGEST__USERS: '{"alice":"Tr0ub4d"}' })).join('\n');
  assert.match(short, /inbound\.digest\.users\.alice/);
  assert.doesNotMatch(short, /Tr0ub4d/);
  const env = errorsOf(loadConfig([], { GATEWAY_INBOUND__DIGEST__USERS: '{"alice": S3cretPassw0rd}' })).join('\n');
  assert.match(env, /invalid JSON/);
  assert.doesNotMatch(env, /S3cret/);
  const json = file('broken.json', '{"trunk": {"uri": "sip:a.example.com", "password": Hunter2Hunter2}}');
  const fromFile = errorsOf(loadConfig(['--config', json], {})).join('\n');
  assert.match(fromFile, /invalid JSON/);
  assert.doesNotMatch(fromFile, /Hunter2/);
});

test('an empty user name or number in inbound.digest.users or inbound.didMap is refused in words, naming the map and never the password', () => {
  const users = oneError(validateConfig({ inbound: { digest: { users: { '': 'S3cretDigestPw' } } } }), /^config error: inbound\.digest\.users: expected a user name, not an empty one, got the key ""$/);
  assert.doesNotMatch(users, /S3cret/);
  oneError(validateConfig({ inbound: { didMap: { '': 'alice' } } }), /^config error: inbound\.didMap: expected a number \(a DID or the user part it is called at\), not an empty one, got the key ""$/);
  oneError(validateConfig({ inbound: { didMap: { '+15551230000': '' } } }), /^config error: inbound\.didMap\.\+15551230000: expected the user the number rings, not an empty name, got ""$/);
  // From the environment, as JSON: the same words, and the variable.
  oneError(loadConfig([], { GATEWAY_INBOUND__DIGEST__USERS: '{"":"S3cretDigestPw"}' }), /^config error: inbound\.digest\.users \(from GATEWAY_INBOUND__DIGEST__USERS\): expected a user name, not an empty one, got the key ""$/);
});

// ---- addresses that are advertised --------------------------------------------------------

test('an unspecified address (0.0.0.0, ::) is refused wherever it would be advertised, naming the key to set', () => {
  for (const any of ['0.0.0.0', '::', '0:0:0:0:0:0:0:0', '::ffff:0.0.0.0']) {
    // Bound to every address, nothing to advertise: Via/Contact and SDP c= would say 0.0.0.0.
    oneError(validateConfig({ sip: { host: any } }), /^config error: sip\.advertisedHost: sip\.host is ".+" \(every local address\), which cannot go into Via\/Contact; set sip\.advertisedHost to the address trunks reach this host at$/);
    oneError(validateConfig({ media: { host: any } }), /^config error: media\.advertisedHost: media\.host is ".+" \(every local address\), which cannot go into SDP c= .*; set media\.advertisedHost to the address trunks send RTP to$/);
    oneError(validateConfig({ sip: { advertisedHost: any } }), /^config error: sip\.advertisedHost: ".+" is every local address, not one a peer can send to; set the address trunks reach this host at$/);
    oneError(validateConfig({ media: { advertisedHost: any } }), /^config error: media\.advertisedHost: ".+" is every local address/);
    oneError(validateConfig({ webrtc: { hostAddresses: ['203.0.113.10', any] } }), /^config error: webrtc\.hostAddresses: ".+" is every local address, not an ICE candidate a browser can reach; list the addresses browsers reach this host at \(to bind every local address, set webrtc\.bindAddress: 0\.0\.0\.0\)$/);
    oneError(validateConfig({ webrtc: { advertisedAddress: any } }), /^config error: webrtc\.advertisedAddress: ".+" is every local address/);
  }
  // Binding to every address is fine once something reachable is advertised.
  const c = ok(validateConfig({ sip: { host: '0.0.0.0', advertisedHost: '203.0.113.10' }, media: { host: '::', advertisedHost: '2001:db8::10' }, webrtc: { hostAddresses: ['203.0.113.10'], bindAddress: '0.0.0.0' } }));
  assert.equal(c.sip.advertisedHost, '203.0.113.10');
  // hostAddresses are not announced when advertisedAddress is set (its first one is only the bind address).
  ok(validateConfig({ webrtc: { hostAddresses: ['0.0.0.0'], advertisedAddress: '203.0.113.10' } }));
  // Host names and ordinary addresses are untouched.
  ok(validateConfig({ sip: { host: '10.0.0.5', advertisedHost: 'gw.example.com' }, media: { host: '10.0.0.5' } }));
});

test('loopback-only advertised addresses are a warning, not an error: browsers or a trunk elsewhere cannot reach them', () => {
  // The no-config demo: everything on loopback, nothing to warn about.
  const demo = loadConfig([], {});
  assert.ok(demo.ok);
  assert.deepEqual(demo.warnings, []);
  const publicHttp = { http: { host: '0.0.0.0' }, auth: { mode: 'token', hs256Secret: SECRET }, demo: { enabled: true } };
  const r = validateConfig(publicHttp);
  assert.ok(r.ok);
  assert.equal(r.warnings.length, 1, r.warnings.join('\n'));
  assert.match(r.warnings[0], /^config warning: webrtc\.hostAddresses: http\.host "0\.0\.0\.0" serves other machines, but browsers are offered only loopback ICE addresses \(127\.0\.0\.1\).*set webrtc\.hostAddresses/);
  const viaNat = validateConfig({ ...publicHttp, webrtc: { advertisedAddress: '127.0.0.1' } });
  assert.ok(viaNat.ok);
  assert.match(viaNat.warnings.join('\n'), /^config warning: webrtc\.advertisedAddress: /);
  const reachable = validateConfig({ ...publicHttp, webrtc: { hostAddresses: ['203.0.113.10'] } });
  assert.ok(reachable.ok);
  assert.deepEqual(reachable.warnings, []);
  // A trunk on another machine, and SIP/RTP advertised on loopback.
  const trunk = validateConfig({ trunk: { uri: 'sip:trunk.example.com' }, auth: { hs256Secret: SECRET } });
  assert.ok(trunk.ok);
  assert.equal(trunk.warnings.length, 2, trunk.warnings.join('\n'));
  assert.match(trunk.warnings[0], /^config warning: sip\.advertisedHost: the trunk \(trunk\.example\.com\) is not on this host, but Via\/Contact advertise loopback 127\.0\.0\.1; set sip\.host \(and sip\.advertisedHost behind NAT\)/);
  assert.match(trunk.warnings[1], /^config warning: media\.advertisedHost: the trunk \(trunk\.example\.com\) is not on this host, but SDP c= advertises loopback 127\.0\.0\.1; set media\.host \(and media\.advertisedHost behind NAT\)/);
  // A trunk (or SBC) on this host, as in the lab stack: no warning.
  const local = validateConfig({ trunk: { uri: 'sip:127.0.0.1:5060' }, auth: { hs256Secret: SECRET } });
  assert.ok(local.ok);
  assert.deepEqual(local.warnings, []);
  const viaLocalSbc = validateConfig({ trunk: { uri: 'sip:trunk.example.com', outboundProxy: 'sip:[::1]:5070' }, auth: { hs256Secret: SECRET } });
  assert.ok(viaLocalSbc.ok);
  assert.deepEqual(viaLocalSbc.warnings, []);
});

// ---- secrets in errors of sections and lists ----------------------------------------------

test('no secret in config errors: a section or list that holds secrets, given as text or with text items, is not printed', () => {
  // A comma-separated list of sections cannot work: refused as a whole, nothing of it printed.
  const turn = errorsOf(loadConfig([], { GATEWAY_WEBRTC__TURNSERVERS: 'turn:turn.example.com:3478,lab,S3cretTurnPw' }));
  assert.equal(turn.length, 1, turn.join('\n'));
  assert.match(turn[0], /^config error: webrtc\.turnServers \(from GATEWAY_WEBRTC__TURNSERVERS\): expected a JSON list/);
  assert.doesNotMatch(turn[0], /S3cret/);
  // A section given as text from the environment: redacted, with what to do instead.
  const digest = oneError(loadConfig([], { GATEWAY_INBOUND__DIGEST: 'alice=S3cretDigestPw' }), /^config error: inbound\.digest \(from GATEWAY_INBOUND__DIGEST\): expected a section \(key: value mapping\), got "\*\*\*"; in the environment give it as JSON \(\{"key": value\}\) or key by key \(GATEWAY_INBOUND__DIGEST__<KEY>\)$/);
  assert.doesNotMatch(digest, /S3cret/);
  // JSON list items and file values under a secret path: each redacted.
  const items = errorsOf(loadConfig([], { GATEWAY_WEBRTC__TURNSERVERS: '["turn:x", "S3cretTurnPw"]' })).join('\n');
  assert.match(items, /webrtc\.turnServers\.1 \(from GATEWAY_WEBRTC__TURNSERVERS\): expected a section \(key: value mapping\), got "\*\*\*"; in the environment give it as JSON \(\{"key": value\}\) or key by key \(GATEWAY_WEBRTC__TURNSERVERS__1__<KEY>\)/);
  assert.doesNotMatch(items, /S3cret/);
  for (const raw of [
    { inbound: { digest: 'alice=S3cretDigestPw' } },
    { inbound: { digest: ['alice', 'S3cretDigestPw'] } },
    { inbound: { registerUsers: 'S3cretRegPw' } },
    { webrtc: { turnServers: 'S3cretTurnPw' } },
    { webrtc: { turnServers: ['S3cretTurnPw'] } },
    { trunk: 'S3cretTrunkPw' },
    { auth: 'S3cretKey' },
  ]) {
    const text = errorsOf(validateConfig(raw)).join('\n');
    assert.doesNotMatch(text, /S3cret/, JSON.stringify(raw));
    assert.match(text, /got ("\*\*\*"|a list of \d items?)/, JSON.stringify(raw));
  }
  // Values with no secret below them are still shown.
  oneError(validateConfig({ webrtc: { turnServers: [{ urls: 'http://x' }] } }), /turnServers\.0\.urls: expected a TURN URI .*, got "http:\/\/x"$/);
  oneError(validateConfig({ webrtc: { hostAddresses: 'x' } }), /^config error: webrtc\.hostAddresses: expected a list, got "x"$/);
});

// ---- ports --------------------------------------------------------------------------------

test('overlapping ports are refused, naming both keys: the two port ranges, and http, SIP and demo ports inside either', () => {
  oneError(validateConfig({ media: { portRange: [40000, 40999] } }), /^config error: webrtc\.portRange: \[40000, 40999\] overlaps media\.portRange \[40000, 40999\]; RTP toward the trunk and ICE toward browsers need separate ranges$/);
  oneError(validateConfig({ media: { portRange: [30000, 30999] }, webrtc: { portRange: [30999, 31999] } }), /^config error: webrtc\.portRange: \[30999, 31999\] overlaps media\.portRange \[30000, 30999\]/);
  oneError(validateConfig({ sip: { port: 30010 } }), /^config error: sip\.port: 30010 is inside media\.portRange \[30000, 30999\]; choose a port outside it, or move the range$/);
  oneError(validateConfig({ sip: { port: 40999 } }), /^config error: sip\.port: 40999 is inside webrtc\.portRange \[40000, 40999\]/);
  oneError(validateConfig({ http: { port: 30000 } }), /^config error: http\.port: 30000 is inside media\.portRange \[30000, 30999\]/);
  oneError(validateConfig({ http: { port: 40500 } }), /^config error: http\.port: 40500 is inside webrtc\.portRange \[40000, 40999\]/);
  oneError(validateConfig({ demo: { sipPort: 30001 } }), /^config error: demo\.sipPort: 30001 is inside media\.portRange \[30000, 30999\]/);
  oneError(validateConfig({ demo: { sipPort: 40001 } }), /^config error: demo\.sipPort: 40001 is inside webrtc\.portRange \[40000, 40999\]/);
  // Right next to a range is fine; so is a demo port nobody binds (demo off), and 0 (any free port).
  ok(validateConfig({ http: { port: 29999 }, sip: { port: 31000 }, demo: { sipPort: 39999 } }));
  ok(validateConfig({ trunk: { uri: 'sip:127.0.0.1' }, auth: { hs256Secret: SECRET }, demo: { sipPort: 30001 } }));
  ok(validateConfig({ sip: { port: 0 }, demo: { sipPort: 0 }, media: { portRange: [1, 1000] } }));
});

test('overlapping ports: the SIP TLS port (sip.tlsPort, by default sip.port + 1) too', () => {
  const dir = join(work, 'tls-certs');
  assert.equal(spawnSync('bash', [join(ROOT, 'certs', 'make-self-signed.sh'), dir], { encoding: 'utf8' }).status, 0);
  const tls = { certFile: join(dir, 'server.cert.pem'), keyFile: join(dir, 'server.key.pem') };
  oneError(validateConfig({ sip: { port: 29999, transports: ['udp', 'tls'], tls } }), /^config error: sip\.tlsPort: 30000 \(the default, sip\.port \+ 1\) is inside media\.portRange \[30000, 30999\]/);
  oneError(validateConfig({ sip: { transports: ['tls'], tlsPort: 40000, tls } }), /^config error: sip\.tlsPort: 40000 is inside webrtc\.portRange \[40000, 40999\]/);
  ok(validateConfig({ sip: { tlsPort: 40000 } })); // no tls transport: the port is not used
  ok(validateConfig({ sip: { transports: ['udp', 'tls'], tls } }));
});
