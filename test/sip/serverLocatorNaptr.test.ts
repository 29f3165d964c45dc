/**
 * RFC 3263 §4.1: the transport chosen by DNS when the URI names none. With a fake SipDns (the
 * queries asked are recorded): NAPTR records by order then preference, those for transports we
 * do not run or not SIP servers dropped, a sips: URI keeping SIPS+D2T only, a failed NAPTR query
 * taken as none, SRV for each transport without NAPTR, the address records when nothing else,
 * and no NAPTR query when the URI has a transport, a port, or an address. Then against a real
 * DNS server (dnsmasq on loopback): a user agent running UDP and TCP reaching a server that
 * only NAPTR → SRV names, over TCP; over TLS with the certificate checked against the URI's
 * host; and a sips: URI refused when NAPTR offers no SIPS.
 *
 * Ports 28662-28669: DNS 28662, servers 28663 (TLS), 28664 (TCP), client UA 28666 (UDP, TCP),
 * 28667 (TLS).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { SipUserAgent, type ServerInvite } from '../../src/sip';
import {
  locateSipServers, sipDns, sipNaptr, usableNaptr, SipHostNotFoundError, type NaptrRecord, type SipDns, type SrvRecord, type TransportChoice,
} from '../../src/sip/serverLocator';
import type { SipProtocol } from '../../src/sip/transport';
import { startDnsmasq } from '../peers/dnsmasq';
import { tempDir } from '../support/tempDir';

const DNS_PORT = 28662;
const TLS_SERVER = 28663;
const TCP_SERVER = 28664;
const CLIENT = 28666;
const CLIENT_TLS = 28667;
const logger = pino({ level: 'silent' });

const naptr = (order: number, preference: number, service: string, replacement: string, flags = 's', regexp = ''): NaptrRecord => ({ order, preference, service, replacement, flags, regexp });
const srv = (name: string, port: number, priority = 10, weight = 0): SrvRecord => ({ name, port, priority, weight });
const failure = (code: string) => Object.assign(new Error(code), { code });

/** A zone in memory; every query asked, in order, as "NAPTR name", "SRV name", "A name". */
function fakeDns(zone: { naptr?: Record<string, NaptrRecord[] | Error>; srv?: Record<string, SrvRecord[] | Error>; a?: Record<string, string[]> }) {
  const queries: string[] = [];
  const failures: string[] = [];
  const answer = <T>(kind: string, name: string, table: Record<string, T[] | Error> | undefined): Promise<T[]> => {
    queries.push(`${kind} ${name}`);
    const v = table?.[name];
    if (v instanceof Error) return Promise.reject(v);
    return v ? Promise.resolve(v) : Promise.reject(failure('ENOTFOUND'));
  };
  const dns: SipDns = {
    resolveNaptr: (name) => answer('NAPTR', name, zone.naptr),
    resolveSrv: (name) => answer('SRV', name, zone.srv),
    addresses: (name) => answer('A', name, zone.a),
    onSrvFailure: (host, why) => failures.push(`SRV ${host} ${why}`),
    onNaptrFailure: (host, why) => failures.push(`NAPTR ${host} ${why}`),
  };
  return { dns, queries, failures };
}

const ALL: TransportChoice = { running: ['udp', 'tcp', 'tls'], secure: false };
const brief = (targets: Array<{ address: string; port: number; protocol: SipProtocol }>) => targets.map((t) => `${t.protocol} ${t.address}:${t.port}`);

test('NAPTR records: SIP servers only (terminal "s", no regexp, SIP/SIPS service), by order then preference; those we can use: transports we run, SIPS+D2T only for sips:, the first usable order only, TLS only when offered', () => {
  const records = [
    naptr(20, 10, 'SIP+D2U', '_sip._udp.x.test'),
    naptr(10, 50, 'SIP+D2T', '_sip._tcp.x.test'),
    naptr(10, 10, 'sips+d2t', '_sips._tcp.x.test', 'S'), // case does not matter
    naptr(5, 10, 'SIP+D2S', '_sip._sctp.x.test'), // SCTP: a SIP server, on a transport we have not
    naptr(5, 20, 'SIPS+D2W', '_sips._ws.x.test'), // WebSocket (RFC 7118): idem
    naptr(1, 10, 'E2U+sip', '', 'u', '!^.*$!sip:info@x.test!'), // ENUM's regexp rule
    naptr(1, 20, 'SIP+D2U', '_sip._udp.y.test', 's', '!^.*$!y!'), // a regexp: not a plain SRV pointer
    naptr(1, 30, 'SIP+D2U', 'other.x.test', ''), // non-terminal: not followed
    naptr(1, 40, 'SIP+D2U', ''), // replacement "."
  ];
  const sip = sipNaptr(records);
  assert.deepEqual(sip.map((r) => r.service.toUpperCase()), ['SIP+D2S', 'SIPS+D2W', 'SIPS+D2T', 'SIP+D2T', 'SIP+D2U']);
  // Order 10 offers TLS and TCP: TLS only (a failed TLS must not fall over to a clear transport),
  // and order 20's UDP is never considered (RFC 3403 §4.1).
  assert.deepEqual(usableNaptr(sip, ALL), [{ protocol: 'tls', name: '_sips._tcp.x.test' }]);
  assert.deepEqual(usableNaptr(sip, { running: ['udp', 'tcp'], secure: false }).map((u) => u.protocol), ['tcp'], 'no TLS run: SIPS+D2T dropped; order 20 not considered');
  assert.deepEqual(usableNaptr(sip, { running: ['udp'], secure: false }).map((u) => u.protocol), ['udp'], 'order 10 has nothing for us: order 20');
  const clear = sipNaptr([naptr(10, 20, 'SIP+D2U', '_sip._udp.x.test'), naptr(10, 10, 'SIP+D2T', '_sip._tcp.x.test')]);
  assert.deepEqual(usableNaptr(clear, ALL).map((u) => u.protocol), ['tcp', 'udp'], 'one order, no TLS: by preference');
  assert.deepEqual(usableNaptr(sip, { running: ['udp', 'tcp', 'tls'], secure: true }).map((u) => u.protocol), ['tls'], 'sips: SIPS+D2T only');
  assert.deepEqual(usableNaptr(sip, { running: ['udp'], secure: true }), []);
});

test('NAPTR → SRV of each replacement in NAPTR order → addresses, each place on the transport its NAPTR record names (the bare name\'s address unused)', async () => {
  const { dns, queries, failures } = fakeDns({
    naptr: { 'x.test': [naptr(20, 10, 'SIP+D2U', '_sip._udp.x.test'), naptr(10, 10, 'SIP+D2T', '_sip._tcp.pool.x.test'), naptr(10, 5, 'SIPS+D2T', '_sips._tcp.x.test')] },
    srv: {
      '_sip._udp.x.test': [srv('u.x.test', 5060)],
      '_sip._tcp.pool.x.test': [srv('t2.x.test', 5080, 20), srv('t1.x.test', 5070, 10)],
      '_sips._tcp.x.test': [srv('s.x.test', 5061)],
    },
    a: { 'x.test': ['10.0.0.99'], 'u.x.test': ['10.0.0.1'], 't1.x.test': ['10.0.0.2'], 't2.x.test': ['10.0.0.3'], 's.x.test': ['10.0.0.4'] },
  });
  // Order 10 has SIPS+D2T: TLS only.
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'udp', dns, ALL)), ['tls 10.0.0.4:5061']);
  assert.ok(!queries.includes('A x.test'), queries.join('; '));
  assert.deepEqual(failures, []);
  // Running UDP and TCP only: the SIPS+D2T record is not for us; order 10's TCP, in SRV order.
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'udp', dns, { running: ['udp', 'tcp'], secure: false })), ['tcp 10.0.0.2:5070', 'tcp 10.0.0.3:5080']);
  // Running UDP only: order 20.
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'udp', dns, { running: ['udp'], secure: false })), ['udp 10.0.0.1:5060']);
  // A sips: URI: SIPS+D2T only, never UDP or TCP.
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'tls', dns, { running: ['udp', 'tcp', 'tls'], secure: true })), ['tls 10.0.0.4:5061']);
});

test('a NAPTR record we can use whose replacement has no SRV record: the name\'s address records on that record\'s transport (RFC 3263 §4.2)', async () => {
  const { dns } = fakeDns({ naptr: { 'x.test': [naptr(10, 10, 'SIP+D2T', '_sip._tcp.x.test')] }, a: { 'x.test': ['10.0.0.9'] } });
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'udp', dns, ALL)), ['tcp 10.0.0.9:5060']);
  const { dns: dns2 } = fakeDns({ naptr: { 'x.test': [naptr(10, 10, 'SIP+D2T', '_sip._tcp.x.test')] }, srv: { '_sip._tcp.x.test': [srv('gone.x.test', 5060)] }, a: { 'x.test': ['10.0.0.9'] } });
  await assert.rejects(locateSipServers('x.test', undefined, 'udp', dns2, ALL), (e: Error) => e instanceof SipHostNotFoundError && /none of the SRV targets of "x.test" \(by its NAPTR records\)/.test(e.message));
});

test('no NAPTR record: SRV for each transport we run, those that answer in our order (the URI\'s own transport first, then UDP, TCP; _sips._tcp only when the URI takes TLS anyway); a sips: URI asks _sips._tcp only', async () => {
  const zone = {
    srv: { '_sips._tcp.x.test': [srv('s.x.test', 5061)], '_sip._tcp.x.test': [srv('t.x.test', 5060)], '_sip._udp.x.test': [srv('u.x.test', 5060)] },
    a: { 'x.test': ['10.0.0.99'], 'u.x.test': ['10.0.0.1'], 't.x.test': ['10.0.0.2'], 's.x.test': ['10.0.0.4'] },
  };
  const a = fakeDns(zone);
  // A sip: URI: the _sip services (RFC 3263 §4.1), not _sips._tcp.
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'udp', a.dns, ALL)), ['udp 10.0.0.1:5060', 'tcp 10.0.0.2:5060']);
  assert.deepEqual(a.queries.slice(0, 3).sort(), ['NAPTR x.test', 'SRV _sip._tcp.x.test', 'SRV _sip._udp.x.test']);
  assert.ok(!a.queries.includes('SRV _sips._tcp.x.test'), a.queries.join('; '));
  // A user agent running TCP and TLS: the transport the URI takes then (TCP here) first, no UDP query.
  const b = fakeDns(zone);
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'tcp', b.dns, { running: ['tcp', 'tls'], secure: false })), ['tcp 10.0.0.2:5060']);
  assert.ok(!b.queries.includes('SRV _sip._udp.x.test'));
  // Running TLS alone, a sip: URI goes over TLS anyway: its SRV is _sips._tcp.
  const tlsOnly = fakeDns(zone);
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'tls', tlsOnly.dns, { running: ['tls'], secure: false })), ['tls 10.0.0.4:5061']);
  const c = fakeDns(zone);
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'tls', c.dns, { running: ['udp', 'tcp', 'tls'], secure: true })), ['tls 10.0.0.4:5061']);
  assert.deepEqual(c.queries.filter((q) => q.startsWith('SRV')), ['SRV _sips._tcp.x.test'], 'sips: never looks for a clear transport');
  // Only the TCP service published: found though the URI says nothing of TCP.
  const d = fakeDns({ srv: { '_sip._tcp.x.test': [srv('t.x.test', 5060)] }, a: zone.a });
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'udp', d.dns, ALL)), ['tcp 10.0.0.2:5060']);
});

test('the SRV queries go out with the NAPTR query, not after its answer: a DNS server that does not answer costs one wait, not two', async () => {
  const { dns, queries } = fakeDns({ srv: { '_sip._udp.x.test': [srv('u.x.test', 5060)] }, a: { 'u.x.test': ['10.0.0.1'] } });
  let answerNaptr: (r: NaptrRecord[]) => void = () => {};
  dns.resolveNaptr = (name) => { queries.push(`NAPTR ${name}`); return new Promise((resolve) => { answerNaptr = resolve; }); };
  const located = locateSipServers('x.test', undefined, 'udp', dns, ALL);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual([...queries].sort(), ['NAPTR x.test', 'SRV _sip._tcp.x.test', 'SRV _sip._udp.x.test'], 'asked while NAPTR is unanswered');
  answerNaptr([]);
  assert.deepEqual(brief(await located), ['udp 10.0.0.1:5060']);
});

test('nothing in DNS but the address: the URI\'s default transport and port (UDP 5060; TLS 5061 for sips:); an SRV "." for it is "no SIP here"', async () => {
  const { dns } = fakeDns({ a: { 'x.test': ['10.0.0.9'] } });
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'udp', dns, ALL)), ['udp 10.0.0.9:5060']);
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'tls', dns, { running: ['udp', 'tls'], secure: true })), ['tls 10.0.0.9:5061']);
  await assert.rejects(locateSipServers('nothing.test', undefined, 'udp', dns, ALL), /cannot resolve SIP host "nothing.test"/);
  const dot = fakeDns({ srv: { '_sip._udp.x.test': [srv('', 0)] }, a: { 'x.test': ['10.0.0.9'] } });
  await assert.rejects(locateSipServers('x.test', undefined, 'udp', dot.dns, ALL), /"x.test" says it offers no SIP over udp/);
});

test('a NAPTR query that fails (SERVFAIL, a timeout, a resolver refusing NAPTR) is taken as no NAPTR, said once; "no record" is said nowhere', async () => {
  for (const code of ['ESERVFAIL', 'ETIMEOUT', 'ENOTIMP', 'EREFUSED']) {
    const { dns, failures } = fakeDns({ naptr: { 'pbx.internal': failure(code) }, a: { 'pbx.internal': ['10.9.8.7'] } });
    assert.deepEqual(brief(await locateSipServers('pbx.internal', undefined, 'udp', dns, ALL)), ['udp 10.9.8.7:5060'], code);
    assert.deepEqual(failures, [`NAPTR pbx.internal ${code}`]);
  }
  // SRV for each transport failing too: one line for them all.
  const { dns, failures } = fakeDns({ naptr: { 'pbx.internal': failure('ETIMEOUT') }, srv: { '_sip._udp.pbx.internal': failure('ETIMEOUT'), '_sip._tcp.pbx.internal': failure('ESERVFAIL') }, a: { 'pbx.internal': ['10.9.8.7'] } });
  assert.deepEqual(brief(await locateSipServers('pbx.internal', undefined, 'udp', dns, ALL)), ['udp 10.9.8.7:5060']);
  assert.deepEqual(failures, ['NAPTR pbx.internal ETIMEOUT', 'SRV pbx.internal ETIMEOUT, ESERVFAIL']);
  const quiet = fakeDns({ naptr: { 'x.test': failure('ENODATA') }, a: { 'x.test': ['10.0.0.9'] } });
  await locateSipServers('x.test', undefined, 'udp', quiet.dns, ALL);
  assert.deepEqual(quiet.failures, []);
});

test('NAPTR offering SIP only on transports we cannot use: refused naming the host and what DNS offers — not the address on another transport', async () => {
  const zone = { naptr: { 'x.test': [naptr(10, 10, 'SIPS+D2T', '_sips._tcp.x.test'), naptr(10, 20, 'SIP+D2S', '_sip._sctp.x.test')] }, srv: { '_sips._tcp.x.test': [srv('s.x.test', 5061)] }, a: { 'x.test': ['10.0.0.9'], 's.x.test': ['10.0.0.4'] } };
  const { dns, queries } = fakeDns(zone);
  await assert.rejects(locateSipServers('x.test', undefined, 'udp', dns, { running: ['udp'], secure: false }),
    (e: Error) => e instanceof SipHostNotFoundError && e.message === 'cannot reach "x.test": its DNS (NAPTR) offers SIP only as SIPS+D2T (tls), SIP+D2S, and the transports we run are udp');
  assert.ok(!queries.includes('A x.test'), 'no guess at the bare name');
  const sips = fakeDns({ naptr: { 'x.test': [naptr(10, 10, 'SIP+D2U', '_sip._udp.x.test')] }, srv: { '_sip._udp.x.test': [srv('u.x.test', 5060)] }, a: { 'x.test': ['10.0.0.9'], 'u.x.test': ['10.0.0.1'] } });
  await assert.rejects(locateSipServers('x.test', undefined, 'tls', sips.dns, { running: ['udp', 'tls'], secure: true }),
    (e: Error) => e instanceof SipHostNotFoundError && /offers SIP only as SIP\+D2U \(udp\), and a sips: URI takes TLS only/.test(e.message));
  // An SRV record for a transport we run, published beside such NAPTR records, is still used (§4.1's SRV for each transport).
  const both = fakeDns({ ...zone, srv: { ...zone.srv, '_sip._udp.x.test': [srv('u.x.test', 5090)] }, a: { ...zone.a, 'u.x.test': ['10.0.0.1'] } });
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'udp', both.dns, { running: ['udp'], secure: false })), ['udp 10.0.0.1:5090']);
});

test('no NAPTR query for an address, a name with a port, or a URI naming its transport (§4.1: the transport is the URI\'s then)', async () => {
  const { dns, queries } = fakeDns({ naptr: { 'x.test': [naptr(10, 10, 'SIP+D2T', '_sip._tcp.x.test')] }, srv: { '_sip._tcp.x.test': [srv('t.x.test', 5070)] }, a: { 'x.test': ['10.0.0.9'], 't.x.test': ['10.0.0.2'] } });
  assert.deepEqual(brief(await locateSipServers('10.1.2.3', undefined, 'udp', dns, ALL)), ['udp 10.1.2.3:5060']);
  assert.deepEqual(brief(await locateSipServers('x.test', 5080, 'udp', dns, ALL)), ['udp 10.0.0.9:5080']);
  assert.deepEqual(brief(await locateSipServers('x.test', undefined, 'udp', dns)), ['udp 10.0.0.9:5060'], 'no choice given: SRV for udp, then the address');
  assert.deepEqual(queries, ['A x.test', 'SRV _sip._udp.x.test', 'A x.test']);
});

// ------------------------------------------------------------------ against dnsmasq

let dnsmasq: Awaited<ReturnType<typeof startDnsmasq>>;
let cert = '';
let key = '';

before(async () => {
  // A certificate for secure.test only: the TLS server is found as box.secure.test at 127.0.0.1.
  const dir = tempDir('sip-naptr-');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-subj', '/CN=secure.test', '-addext', 'subjectAltName=DNS:secure.test'], { stdio: 'ignore' });
  cert = readFileSync(join(dir, 'c.pem'), 'utf8');
  key = readFileSync(join(dir, 'k.pem'), 'utf8');
  dnsmasq = await startDnsmasq({
    port: DNS_PORT,
    naptr: [
      // Only NAPTR says where: the SRV name is no _sip._tcp.<domain> that SRV-for-each-transport would ask.
      { name: 'carrier.test', order: 10, preference: 10, flags: 's', service: 'SIP+D2T', replacement: '_sip._tcp.sbc-pool.carrier.test' },
      { name: 'carrier.test', order: 5, preference: 10, flags: 'u', service: 'E2U+sip', regexp: '!^.*$!sip:info@carrier.test!' },
      { name: 'secure.test', order: 10, preference: 10, flags: 's', service: 'SIPS+D2T', replacement: '_sips._tcp.pool.secure.test' },
      { name: 'secure.test', order: 20, preference: 10, flags: 's', service: 'SIP+D2U', replacement: '_sip._udp.pool.secure.test' },
      { name: 'clear.test', order: 10, preference: 10, flags: 's', service: 'SIP+D2U', replacement: '_sip._udp.clear.test' },
    ],
    srv: [
      { service: '_sip._tcp.sbc-pool.carrier.test', target: 'sbc.carrier.test', port: TCP_SERVER },
      { service: '_sips._tcp.pool.secure.test', target: 'box.secure.test', port: TLS_SERVER },
      { service: '_sip._udp.pool.secure.test', target: 'box.secure.test', port: 28669 }, // nobody there
      { service: '_sip._udp.clear.test', target: 'box.clear.test', port: 28669 },
    ],
    // The bare domains' addresses are not where SIP goes (nothing listens on 127.0.0.77).
    hosts: [['sbc.carrier.test', '127.0.0.1'], ['box.secure.test', '127.0.0.1'], ['box.clear.test', '127.0.0.1'], ['carrier.test', '127.0.0.77'], ['secure.test', '127.0.0.77'], ['clear.test', '127.0.0.77']],
  });
});
after(() => dnsmasq?.stop());

test('real DNS: a name whose SIP server only NAPTR → SRV names, over TCP: found, and the URI naming a transport skips NAPTR', async () => {
  const dns = sipDns([`127.0.0.1:${DNS_PORT}`]);
  assert.deepEqual(await locateSipServers('carrier.test', undefined, 'udp', dns, { running: ['udp', 'tcp'], secure: false }), [{ address: '127.0.0.1', port: TCP_SERVER, name: 'sbc.carrier.test', protocol: 'tcp' }]);
  assert.deepEqual(await locateSipServers('carrier.test', undefined, 'udp', dns), [{ address: '127.0.0.77', port: 5060, name: 'carrier.test', protocol: 'udp' }], 'transport=udp: its SRV (none), then the address');
  await assert.rejects(locateSipServers('carrier.test', undefined, 'udp', dns, { running: ['udp'], secure: false }), /offers SIP only as SIP\+D2T \(tcp\), and the transports we run are udp/);
});

test('real DNS, a user agent running UDP and TCP: OPTIONS to sip:carrier.test go over TCP to the server NAPTR → SRV names; sip:carrier.test;transport=udp does not look at NAPTR', async () => {
  const server = new SipUserAgent({ transports: [{ protocol: 'tcp', host: '127.0.0.1', port: TCP_SERVER }], logger });
  const client = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: CLIENT }, { protocol: 'tcp', host: '127.0.0.1', port: CLIENT }], logger, dnsServers: [`127.0.0.1:${DNS_PORT}`] });
  await server.start(); await client.start();
  try {
    const seen: string[] = [];
    const inbound = (server as unknown as { onInbound(m: { method?: string }, s: { protocol: string }): void });
    const orig = inbound.onInbound.bind(server);
    inbound.onInbound = (m, s) => { if (m.method) seen.push(`${m.method} ${s.protocol}`); orig(m, s); };
    const res = await client.options('sip:carrier.test');
    assert.equal(res.status, 200);
    assert.deepEqual(seen, ['OPTIONS tcp']);
    const dests = await client.resolveAll('sip:carrier.test');
    assert.deepEqual(dests.map((d) => `${d.transport.protocol} ${d.host}:${d.port}`), [`tcp 127.0.0.1:${TCP_SERVER}`]);
    const named = await client.resolveAll('sip:carrier.test;transport=udp');
    assert.deepEqual(named.map((d) => `${d.transport.protocol} ${d.host}:${d.port}`), ['udp 127.0.0.77:5060'], 'its own cache entry, not the NAPTR-chosen one');
  } finally {
    await client.stop(); await server.stop();
  }
});

test('real DNS: NAPTR prefers SIPS+D2T: the request goes over TLS with the certificate checked against the URI\'s host (not the SRV target\'s name), and never falls over to the clear; a sips: URI NAPTR offers no SIPS for is refused', async () => {
  const server = new SipUserAgent({ transports: [{ protocol: 'tls', host: '127.0.0.1', port: TLS_SERVER, tls: { cert, key } }], logger });
  const client = new SipUserAgent({
    transports: [{ protocol: 'udp', host: '127.0.0.1', port: CLIENT }, { protocol: 'tls', host: '127.0.0.1', port: CLIENT_TLS, tls: { cert, key, ca: cert } }],
    logger, dnsServers: [`127.0.0.1:${DNS_PORT}`],
  });
  await server.start(); await client.start();
  try {
    const invited = new Promise<string>((resolve) => server.once('invite', (inv: ServerInvite) => { resolve(inv.request.source.protocol); inv.reject(486, 'Busy Here'); }));
    const inv = client.invite({ requestUri: 'sip:+15550100@secure.test', from: { uri: 'sip:gw@127.0.0.1' }, sdp: 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n' });
    const outcome = await new Promise<string>((resolve) => { inv.once('rejected', (r) => resolve(String(r.status))); inv.once('failed', (e) => resolve(e.message)); });
    assert.equal(outcome, '486');
    assert.equal(await invited, 'tls');
    const dests = await client.resolveAll('sip:secure.test');
    assert.deepEqual(dests.map((d) => `${d.transport.protocol} ${d.port}`), [`tls ${TLS_SERVER}`], 'a domain offering SIPS+D2T is reached over TLS only (its SIP+D2U, a higher order, is not considered)');
    // When TLS fails (a bad certificate, a reset handshake: anyone on the path can cause one), the
    // request does not go over the domain's UDP instead, nor do later ones.
    client.noteTargetFailed(dests[0]);
    assert.deepEqual((await client.resolveAll('sip:secure.test')).map((d) => `${d.transport.protocol} ${d.port}`), [`tls ${TLS_SERVER}`]);
    assert.deepEqual((await client.resolveAll('sips:secure.test')).map((d) => `${d.transport.protocol} ${d.port}`), [`tls ${TLS_SERVER}`], 'sips: TLS only');
    await assert.rejects(client.resolveAll('sips:clear.test'), /cannot reach "clear.test": its DNS \(NAPTR\) offers SIP only as SIP\+D2U \(udp\), and a sips: URI takes TLS only/);
    assert.deepEqual(client.counts, { clientTx: 0, serverTx: 0, dialogs: 0, serverInvites: 0 });
  } finally {
    await client.stop(); await server.stop();
  }
});
