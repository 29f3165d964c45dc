/**
 * RFC 3263 server location against a real DNS server (dnsmasq on loopback): SRV records in
 * RFC 2782 order, address records when there are none or the URI has a port, "." as "no SIP
 * here", a dead DNS server as a failure (never a silent fallback), and the user agent sending
 * to the SRV targets — the next one once the first has failed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import pino from 'pino';
import { SipUserAgent } from '../../src/sip';
import { locateSipServers, orderSrv, sipDns, srvName, SipHostNotFoundError, type SrvRecord } from '../../src/sip/serverLocator';
import { startDnsmasq } from '../peers/dnsmasq';
import { until } from '../support/tabs';

const DNS_PORT = 26750;
const SIP1 = 26751;
const SIP2 = 26752;
const logger = pino({ level: 'silent' });
let dns: Awaited<ReturnType<typeof startDnsmasq>>;

before(async () => {
  dns = await startDnsmasq({
    port: DNS_PORT,
    srv: [
      // Listed backup first: the order must come from the priorities, not the answer's order.
      { service: '_sip._udp.trunk.test', target: 'sip2.trunk.test', port: SIP2, priority: 20, weight: 10 },
      { service: '_sip._udp.trunk.test', target: 'sip1.trunk.test', port: SIP1, priority: 10, weight: 10 },
      { service: '_sips._tcp.trunk.test', target: 'tls.trunk.test', port: 26753, priority: 10, weight: 0 },
      { service: '_sip._udp.none.test' },
      { service: '_sip._udp.dangling.test', target: 'gone.dangling.test', port: 5060 },
    ],
    hosts: [['sip1.trunk.test', '127.0.0.1'], ['sip2.trunk.test', '127.0.0.1'], ['tls.trunk.test', '127.0.0.5'], ['trunk.test', '127.0.0.9'], ['plain.test', '127.0.0.4'], ['none.test', '127.0.0.6']],
  });
});
after(() => dns?.stop());

const resolver = () => sipDns([`127.0.0.1:${DNS_PORT}`]);

test('RFC 2782 order: lowest priority first, weighted draws within one, weight 0 only after the weighted ones', () => {
  const r = (name: string, priority: number, weight: number): SrvRecord => ({ name, port: 5060, priority, weight });
  const records = [r('c', 20, 0), r('a', 10, 30), r('b', 10, 10), r('z', 10, 0), r('d', 20, 5)];
  // draws: 0.9 of 40 → past a (30): b; then a alone among the weighted; then z; priority 20: d (weighted) before c
  assert.deepEqual(orderSrv(records, () => 0.9).map((x) => x.name), ['b', 'a', 'z', 'd', 'c']);
  assert.deepEqual(orderSrv(records, () => 0.1).map((x) => x.name), ['a', 'b', 'z', 'd', 'c']);
  assert.equal(srvName('x.test', 'udp'), '_sip._udp.x.test');
  assert.equal(srvName('x.test', 'tcp'), '_sip._tcp.x.test');
  assert.equal(srvName('x.test', 'tls'), '_sips._tcp.x.test');
});

test('a name without a port: its SRV records in priority order, each target by its address records (not the bare name\'s address)', async () => {
  assert.deepEqual(await locateSipServers('trunk.test', undefined, 'udp', resolver()), [
    { address: '127.0.0.1', port: SIP1, name: 'sip1.trunk.test', protocol: 'udp' },
    { address: '127.0.0.1', port: SIP2, name: 'sip2.trunk.test', protocol: 'udp' },
  ]);
  assert.deepEqual(await locateSipServers('trunk.test', undefined, 'tls', resolver()), [{ address: '127.0.0.5', port: 26753, name: 'tls.trunk.test', protocol: 'tls' }]);
});

test('a port in the URI, or no SRV record: address records and the port given or the default', async () => {
  assert.deepEqual(await locateSipServers('trunk.test', 5070, 'udp', resolver()), [{ address: '127.0.0.9', port: 5070, name: 'trunk.test', protocol: 'udp' }]);
  assert.deepEqual(await locateSipServers('plain.test', undefined, 'udp', resolver()), [{ address: '127.0.0.4', port: 5060, name: 'plain.test', protocol: 'udp' }]);
  assert.deepEqual(await locateSipServers('plain.test', undefined, 'tls', resolver()), [{ address: '127.0.0.4', port: 5061, name: 'plain.test', protocol: 'tls' }]);
  assert.deepEqual(await locateSipServers('10.1.2.3', undefined, 'udp', resolver()), [{ address: '10.1.2.3', port: 5060, name: '10.1.2.3', protocol: 'udp' }], 'a literal address: no lookup');
});

test('no SIP there: an SRV target "." (even with an address record), SRV targets that do not resolve, or no name at all', async () => {
  await assert.rejects(locateSipServers('none.test', undefined, 'udp', resolver()), (e: Error) => e instanceof SipHostNotFoundError && /no SIP over udp/.test(e.message));
  await assert.rejects(locateSipServers('dangling.test', undefined, 'udp', resolver()), (e: Error) => e instanceof SipHostNotFoundError && /none of the SRV targets/.test(e.message));
  await assert.rejects(locateSipServers('nothing.test', undefined, 'udp', resolver()), (e: Error) => e instanceof SipHostNotFoundError && /cannot resolve/.test(e.message));
});

test('an SRV query that fails (not "no record": a resolver refusing SRV, a timeout) falls back to the name\'s own address, and says so; a dead DNS server resolves nothing', async () => {
  const failures: string[] = [];
  const refusing = { resolveNaptr: async () => [], resolveSrv: () => Promise.reject(Object.assign(new Error('queryServfail'), { code: 'ESERVFAIL' })), addresses: async () => ['10.9.8.7'], onSrvFailure: (h: string, why: string) => failures.push(`${h} ${why}`) };
  assert.deepEqual(await locateSipServers('pbx.internal', undefined, 'udp', refusing), [{ address: '10.9.8.7', port: 5060, name: 'pbx.internal', protocol: 'udp' }]);
  assert.deepEqual(failures, ['pbx.internal ESERVFAIL']);
  const dead = sipDns(['127.0.0.1:26759']); // nothing listens there
  await assert.rejects(locateSipServers('trunk.test', undefined, 'udp', dead), (e: Error) => e instanceof SipHostNotFoundError && /cannot resolve SIP host "trunk.test"/.test(e.message));
});

test('the user agent sends to the first SRV target; once it has failed (no answer), the next request goes to the next one', async () => {
  const servers = await Promise.all([SIP1, SIP2].map(async (port) => {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(port, '127.0.0.1', () => r()));
    const got: string[] = [];
    s.on('message', (m, rinfo) => {
      const text = m.toString();
      got.push(text);
      if (port === SIP2) {
        // The backup answers OPTIONS 200; the first one stays silent (a dead server).
        const h = (n: string) => text.match(new RegExp(`^${n}: *(.*)$`, 'mi'))?.[1].trim() ?? '';
        s.send(['SIP/2.0 200 OK', `Via: ${h('Via')}`, `From: ${h('From')}`, `To: ${h('To')};tag=b`, `Call-ID: ${h('Call-ID')}`, `CSeq: ${h('CSeq')}`, 'Content-Length: 0', '', ''].join('\r\n'), rinfo.port, rinfo.address);
      }
    });
    return { s, got };
  }));
  // T1 of 20 ms: a request nobody answers times out after 64·T1 = 1.3 s.
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger, dnsServers: [`127.0.0.1:${DNS_PORT}`], timers: { T1: 20, T2: 160, T4: 200 } });
  await ua.start();
  try {
    const first = await ua.options('sip:trunk.test');
    assert.equal(first.status, 408, 'the first SRV target never answered');
    assert.ok(servers[0].got.length >= 1 && servers[0].got.every((m) => m.startsWith('OPTIONS sip:trunk.test SIP/2.0')), 'sent to sip1 (priority 10), Request-URI unchanged');
    assert.equal(servers[1].got.length, 0);
    const second = await ua.options('sip:trunk.test');
    assert.equal(second.status, 200, 'the next request went to the backup');
    assert.equal(servers[1].got.length, 1);
  } finally {
    await ua.stop();
    for (const { s } of servers) s.close();
  }
});

/**
 * Raw UDP servers on the two SRV targets; `behave` says what each answers to an INVITE: a
 * status line, 'silent', or a script of [delay ms, status] answered in turn.
 */
async function srvServers(behave: Record<number, 'silent' | string | Array<[number, string]>>) {
  return Promise.all([SIP1, SIP2].map(async (port) => {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(port, '127.0.0.1', () => r()));
    const got: string[] = [];
    s.on('message', (m, rinfo) => {
      const text = m.toString();
      got.push(text);
      const h = (n: string) => text.match(new RegExp(`^${n}: *(.*)$`, 'mi'))?.[1].trim() ?? '';
      const reply = (status: string) => s.send([`SIP/2.0 ${status}`, `Via: ${h('Via')}`, `From: ${h('From')}`, `To: ${h('To')};tag=t${port}`, `Call-ID: ${h('Call-ID')}`, `CSeq: ${h('CSeq')}`,
        `Contact: <sip:uas@127.0.0.1:${port}>`, 'Content-Length: 0', '', ''].join('\r\n'), rinfo.port, rinfo.address);
      if (text.startsWith('CANCEL ') || text.startsWith('BYE ')) { reply('200 OK'); return; }
      if (!text.startsWith('INVITE ') || behave[port] === 'silent') return;
      const b = behave[port];
      if (typeof b === 'string') { reply(b); return; }
      if (got.filter((m) => m.startsWith('INVITE ')).length > 1) return; // a retransmission: the script runs once
      for (const [delay, status] of b) setTimeout(() => reply(status), delay);
    });
    return { s, got, invites: () => got.filter((m) => m.startsWith('INVITE ')), acks: () => got.filter((m) => m.startsWith('ACK ')), byes: () => got.filter((m) => m.startsWith('BYE ')), cancels: () => got.filter((m) => m.startsWith('CANCEL ')) };
  }));
}

const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n';

async function inviteThrough(behave: Record<number, 'silent' | string | Array<[number, string]>>) {
  const servers = await srvServers(behave);
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger, dnsServers: [`127.0.0.1:${DNS_PORT}`], timers: { T1: 20, T2: 160, T4: 200 } });
  await ua.start();
  const inv = ua.invite({ requestUri: 'sip:+15550100@trunk.test', from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP });
  const outcome = await new Promise<{ kind: string; status?: number }>((resolve) => {
    inv.once('accepted', (res) => resolve({ kind: 'accepted', status: res.status }));
    inv.once('rejected', (res) => resolve({ kind: 'rejected', status: res.status }));
    inv.once('failed', () => resolve({ kind: 'failed' }));
  });
  return { servers, ua, inv, outcome, close: async () => { await ua.stop(); for (const { s } of servers) s.close(); } };
}

test('an INVITE to a trunk whose first SRV server does not answer at all goes to the next after 10·T1, not Timer B; a second call starts at the one that works', async () => {
  const r = await inviteThrough({ [SIP1]: 'silent', [SIP2]: '200 OK' });
  try {
    assert.deepEqual(r.outcome, { kind: 'accepted', status: 200 });
    const [first, second] = r.servers;
    assert.ok(first.invites().length >= 1, 'tried the first');
    const cseqs = [...first.invites(), ...second.invites()].map((m) => m.match(/^CSeq: *(\d+)/mi)![1]);
    assert.notEqual(cseqs[0], cseqs.at(-1), 'a new transaction toward the next server, CSeq + 1');
    await until(() => second.acks().length === 1, 'the ACK at the next server');
    // The next call goes to the working one first.
    const inv2 = r.ua.invite({ requestUri: 'sip:+15550101@trunk.test', from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP });
    await new Promise<void>((resolve) => inv2.once('accepted', () => resolve()));
    assert.equal(first.invites().filter((m) => m.includes(`Call-ID: ${inv2.callId}`)).length, 0, 'the failed server is tried last for a while');
  } finally {
    await r.close();
  }
});

test('an INVITE answered 503 by the first SRV server goes to the next (ACKing the 503); a 486 does not: the callee is busy wherever we ask', async () => {
  const a = await inviteThrough({ [SIP1]: '503 Service Unavailable', [SIP2]: '200 OK' });
  try {
    assert.deepEqual(a.outcome, { kind: 'accepted', status: 200 });
    assert.equal(a.servers[0].acks().length, 1, 'the 503 was ACKed');
  } finally {
    await a.close();
  }
  const b = await inviteThrough({ [SIP1]: '486 Busy Here', [SIP2]: '200 OK' });
  try {
    assert.deepEqual(b.outcome, { kind: 'rejected', status: 486 });
    assert.equal(b.servers[1].invites().length, 0);
  } finally {
    await b.close();
  }
});

test('a first SRV server that said 100 Trying is not failed over from while the callee takes longer than 10·T1 to ring: the call is answered there, the next server never asked', async () => {
  // T1 20 ms: the no-answer failover would fire after 200 ms.
  const r = await inviteThrough({ [SIP1]: [[0, '100 Trying'], [400, '180 Ringing'], [600, '200 OK']], [SIP2]: '200 OK' });
  try {
    assert.deepEqual(r.outcome, { kind: 'accepted', status: 200 });
    assert.equal(r.servers[1].invites().length, 0);
  } finally {
    await r.close();
  }
});

test('a server failed over from that answers after all is not left ringing or answered: its 180 gets a CANCEL, its 200 an ACK and a BYE', async () => {
  // Silent for longer than 10·T1 (200 ms here), then it rings and answers; the next one answers at once.
  const r = await inviteThrough({ [SIP1]: [[300, '180 Ringing'], [500, '200 OK']], [SIP2]: '200 OK' });
  try {
    assert.deepEqual(r.outcome, { kind: 'accepted', status: 200 });
    await new Promise((res) => setTimeout(res, 900));
    const first = r.servers[0];
    assert.equal(first.cancels().length, 1, 'its ringing was cancelled');
    assert.equal(first.acks().length, 1, 'its late 200 was ACKed');
    assert.equal(first.byes().length, 1, 'and ended');
    assert.equal(r.servers[1].byes().length, 0, 'the call on the next server goes on');
  } finally {
    await r.close();
  }
});
