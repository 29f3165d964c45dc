import { lookup, Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { SipProtocol } from './transport';

/**
 * Where requests for a SIP host go, and on which transport (RFC 3263 §4). A literal address as
 * it is; a name with a port by its address records; a name without one by DNS:
 *
 * - The URI names the transport (`transport=`): SRV records for it (§4.2, RFC 2782), so that a
 *   trunk published as `_sip._udp.carrier.example` — often with no address record on the bare
 *   domain, or one that is its web site — is reached at the servers the carrier names, in its
 *   order; its address records when there are none.
 * - It does not: the domain says (§4.1). Its NAPTR records (RFC 3403) name the transports it
 *   offers, best first, each with the SRV name to look up; those we run are tried in that order
 *   (the first order that has one only, and TLS only when TLS is among them: usableNaptr).
 *   Without any, SRV records for each `_sip` transport we run; without those, the name's address
 *   records with the URI's default transport (UDP; TLS for sips:) — unless its NAPTR records
 *   offer SIP on other transports only: then there is no place (the address on a transport the
 *   domain says it does not offer would be a guess against its word).
 *
 * A sips: URI only ever gets TLS: NAPTR services other than SIPS+D2T are discarded (§4.1), and
 * nothing falls back to a transport in the clear (RFC 3261 §26.2.2).
 */

export interface SrvRecord { name: string; port: number; priority: number; weight: number }
/** As node:dns gives it (replacement "" for "."). */
export interface NaptrRecord { flags: string; service: string; regexp: string; replacement: string; order: number; preference: number }

/** The DNS queries a locator makes: the system's, or a set of servers (`sip.dnsServers`). */
export interface SipDns {
  resolveNaptr(name: string): Promise<NaptrRecord[]>;
  resolveSrv(name: string): Promise<SrvRecord[]>;
  /** IPv4 addresses of a name. */
  addresses(name: string): Promise<string[]>;
  /** SRV queries of one lookup failed (not "no record"; `why`: their codes): taken as no record. */
  onSrvFailure?(host: string, why: string): void;
  /** A NAPTR query failed (not "no record"): taken as no NAPTR, so SRV for each transport follows. */
  onNaptrFailure?(host: string, why: string): void;
}

/**
 * One place to send to: an address, its port, the transport to use there, and the name it was
 * found under (TLS checks the certificate against the URI's host, not this).
 */
export interface SipTarget { address: string; port: number; name: string; protocol: SipProtocol }

/**
 * When the URI names no transport (§4.1): the transports the user agent runs, which DNS may
 * choose from; `secure` for a sips: URI, which takes TLS only.
 */
export interface TransportChoice { running: readonly SipProtocol[]; secure: boolean }

export class SipHostNotFoundError extends Error {}

/** The system's resolver, or one asking only `servers` ("ip" or "ip:port"). */
export function sipDns(servers?: string[]): SipDns {
  if (!servers || servers.length === 0) {
    // The system's servers, but bounded: c-ares' defaults wait up to ~20 s for a server that
    // does not answer before the address lookup may go ahead.
    const system = new Resolver({ timeout: 2000, tries: 2 });
    return {
      resolveNaptr: (name) => system.resolveNaptr(name),
      resolveSrv: (name) => system.resolveSrv(name),
      // getaddrinfo, as before SRV: /etc/hosts and the system's configuration apply.
      addresses: async (name) => (await lookup(name, { family: 4, all: true })).map((a) => a.address),
    };
  }
  const r = new Resolver({ timeout: 2000, tries: 2 });
  r.setServers(servers);
  return { resolveNaptr: (name) => r.resolveNaptr(name), resolveSrv: (name) => r.resolveSrv(name), addresses: (name) => r.resolve4(name) };
}

/** RFC 3263 §4.2 / RFC 2782: the SRV service name for a transport. */
export function srvName(host: string, protocol: SipProtocol): string {
  return protocol === 'tls' ? `_sips._tcp.${host}` : `_sip._${protocol}.${host}`;
}

/**
 * RFC 2782's order: lowest priority first; within a priority, a weighted random draw (weight 0
 * entries only when nothing else is left, after the weighted ones, as the RFC's running sum
 * gives them almost no chance). `random` in [0, 1) for tests.
 */
export function orderSrv(records: SrvRecord[], random: () => number = Math.random): SrvRecord[] {
  const byPriority = new Map<number, SrvRecord[]>();
  for (const r of records) byPriority.set(r.priority, [...(byPriority.get(r.priority) ?? []), r]);
  const out: SrvRecord[] = [];
  for (const priority of [...byPriority.keys()].sort((a, b) => a - b)) {
    const left = [...byPriority.get(priority)!];
    while (left.length > 0) {
      const total = left.reduce((s, r) => s + r.weight, 0);
      let pick = 0;
      if (total > 0) {
        let draw = random() * total;
        pick = left.findIndex((r) => (draw -= r.weight) < 0);
        if (pick < 0) pick = left.length - 1;
      }
      out.push(left.splice(pick, 1)[0]);
    }
  }
  return out;
}


/** RFC 3263 §4.1: the NAPTR services of SIP we can send on (not SCTP's D2S nor WebSocket's D2W, RFC 7118). */
const NAPTR_TRANSPORTS: Record<string, SipProtocol> = { 'SIP+D2U': 'udp', 'SIP+D2T': 'tcp', 'SIPS+D2T': 'tls' };

/**
 * The transports whose SRV records are looked up when the domain has no NAPTR record for us:
 * RFC 3263 §4.1 leaves the choice among those that answer to the client. The URI's own comes
 * first (`fallback`: what it takes when DNS says nothing, UDP for a sip: URI when we run it),
 * so a trunk that publishes `_sip._udp` besides other transports is called as it was before
 * NAPTR and the other transports were looked up; then TCP. TLS only when the URI takes it
 * anyway (a sips: URI, or a user agent running TLS alone): §4.1 asks `_sip` services for a sip:
 * URI, and `_sips._tcp` is the only TLS service SRV names — a trunk that wants TLS for a sip:
 * URI says so in its NAPTR records, whose order is followed.
 */
const SRV_PREFERENCE: readonly SipProtocol[] = ['udp', 'tcp'];

/** DNS answers meaning "no such record" (as opposed to a failed query). */
const NO_RECORD = new Set(['ENODATA', 'ENOTFOUND', 'ENONAME', 'NXDOMAIN']);

/** Why a query failed, or undefined when its answer was "no such record". */
function failureOf(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  return NO_RECORD.has(code) ? undefined : code || (err as Error).message;
}

function defaultPort(protocol: SipProtocol): number {
  return protocol === 'tls' ? 5061 : 5060;
}

/** The transport of a NAPTR service field, if it is one we can send on. */
export function naptrProtocol(service: string): SipProtocol | undefined {
  return NAPTR_TRANSPORTS[service.toUpperCase()];
}

/**
 * A domain's NAPTR records for SIP servers (RFC 3263 §4.1), by order, then preference (RFC 3403
 * §4.1): terminal ("s": an SRV lookup of the replacement follows), no regexp, a SIP or SIPS
 * service. Regexp rules (ENUM's "u", "a") and non-terminal ones name no SIP server: skipped.
 */
export function sipNaptr(records: NaptrRecord[]): NaptrRecord[] {
  return records
    .filter((r) => r.flags.toLowerCase() === 's' && r.regexp === '' && r.replacement !== '' && /^SIPS?\+D2[A-Z]+$/i.test(r.service))
    .sort((a, b) => a.order - b.order || a.preference - b.preference);
}

/**
 * Those of sipNaptr's records we can use, in their order: a transport we run, and for a sips:
 * URI SIPS+D2T only (§4.1: "MUST discard any services that do not contain SIPS"). A sip: URI
 * keeps SIPS+D2T when we run TLS (§4.1: it "SHOULD retain" them). Two rules keep a domain that
 * offers TLS from being reached in the clear when its TLS fails (a bad certificate, a reset
 * handshake — which anyone on the path can cause — would otherwise fail over to the next
 * record's UDP, and that would go first for every request while TLS counts as failed):
 * only the lowest order with a record we can use counts (RFC 3403 §4.1: once a rule of one order
 * matches, higher orders are not considered), and when TLS is among its records, only TLS.
 */
export function usableNaptr(records: NaptrRecord[], choice: TransportChoice): Array<{ protocol: SipProtocol; name: string }> {
  const out: Array<{ protocol: SipProtocol; name: string }> = [];
  let order: number | undefined;
  for (const r of records) {
    const protocol = naptrProtocol(r.service);
    if (!protocol || !choice.running.includes(protocol) || (choice.secure && protocol !== 'tls')) continue;
    if (order !== undefined && r.order !== order) break; // sorted by order: the first usable order only
    order = r.order;
    const name = r.replacement.toLowerCase();
    if (!out.some((o) => o.protocol === protocol && o.name === name)) out.push({ protocol, name });
  }
  return out.some((o) => o.protocol === 'tls') ? out.filter((o) => o.protocol === 'tls') : out;
}

interface SrvAnswer { records: SrvRecord[]; failed?: string }

/** An SRV query's records; none when there are none or the query failed (`failed`: why). */
async function querySrv(dns: SipDns, name: string): Promise<SrvAnswer> {
  try {
    return { records: await dns.resolveSrv(name) };
  } catch (err) {
    return { records: [], failed: failureOf(err) };
  }
}

/** RFC 2782: a single SRV record with target "." says the service is not offered there. */
function saysNoSip(records: SrvRecord[]): boolean {
  return records.length === 1 && records[0].name === '';
}

/** Failed SRV queries of one lookup, said once (onSrvFailure). */
function reportSrvFailures(host: string, answers: SrvAnswer[], dns: SipDns): void {
  const why = [...new Set(answers.flatMap((a) => (a.failed ? [a.failed] : [])))];
  if (why.length > 0) dns.onSrvFailure?.(host, why.join(', '));
}

async function byAddress(name: string, port: number, protocol: SipProtocol, dns: SipDns): Promise<SipTarget[]> {
  try {
    return (await dns.addresses(name)).map((address) => ({ address, port, name, protocol }));
  } catch {
    return [];
  }
}

/** The name's own address records (no SRV, or a port in the URI). */
async function addressTargets(host: string, port: number, protocol: SipProtocol, dns: SipDns): Promise<SipTarget[]> {
  const targets = await byAddress(host, port, protocol, dns);
  if (targets.length === 0) throw new SipHostNotFoundError(`cannot resolve SIP host "${host}"`);
  return targets;
}

/** Each SRV record's target by its address records, in RFC 2782 order. */
async function srvTargets(records: SrvRecord[], protocol: SipProtocol, dns: SipDns): Promise<SipTarget[]> {
  const targets: SipTarget[] = [];
  for (const r of orderSrv(records)) targets.push(...(await byAddress(r.name, r.port, protocol, dns)));
  return targets;
}

/**
 * Every place a request for `host` may go, best first, each with its transport. `port`: the
 * URI's, if it has one. `protocol`: the URI's transport — its `transport=`, else UDP (TLS for
 * sips:) or the one the user agent runs instead. `choice`: given when the URI names no
 * transport, so that DNS may choose one (§4.1); it only does for a name without a port. Throws
 * SipHostNotFoundError when there is no place (a name that does not resolve, an SRV answer of
 * "." meaning "no SIP here" (RFC 2782), a domain offering SIP only on transports we cannot use).
 */
export async function locateSipServers(host: string, port: number | undefined, protocol: SipProtocol, dns: SipDns, choice?: TransportChoice): Promise<SipTarget[]> {
  if (isIP(host)) return [{ address: host, port: port ?? defaultPort(protocol), name: host, protocol }];
  if (port !== undefined) return addressTargets(host, port, protocol, dns);
  if (choice) return chosenByDns(host, protocol, choice, dns);
  // §4.2: SRV for the URI's transport. No record, or a query that failed (a resolver that
  // refuses SRV, a timeout): the name's own address, as before SRV was looked up — a host in
  // /etc/hosts, or a container name, has no SRV record to find and may not even get an answer.
  const answer = await querySrv(dns, srvName(host, protocol));
  reportSrvFailures(host, [answer], dns);
  if (saysNoSip(answer.records)) throw new SipHostNotFoundError(`"${host}" says it offers no SIP over ${protocol} (SRV target ".")`);
  if (answer.records.length > 0) return someTargets(await srvTargets(answer.records, protocol, dns), `none of the SRV targets of "${host}" resolves`);
  return addressTargets(host, defaultPort(protocol), protocol, dns);
}

function someTargets(targets: SipTarget[], otherwise: string): SipTarget[] {
  if (targets.length === 0) throw new SipHostNotFoundError(otherwise);
  return targets;
}

/**
 * RFC 3263 §4.1 for a name with no port in a URI naming no transport: its NAPTR records for
 * the transports we can use, in their order; without any, SRV records for each transport we
 * can use, in SRV_PREFERENCE's order; without those, its address records on `fallback`.
 */
async function chosenByDns(host: string, fallback: SipProtocol, choice: TransportChoice, dns: SipDns): Promise<SipTarget[]> {
  // The SRV queries of the no-NAPTR case go out with the NAPTR query, not after it: with a DNS
  // server that does not answer, each round waits out the resolver (2 s, 2 tries: about 6 s),
  // and asking NAPTR first would add a round before the address lookup (measured: 13 s instead
  // of 6-7 s). A NAPTR record's replacement is most often one of these names: each is asked once.
  const asked = new Map<string, Promise<SrvAnswer>>();
  const srv = (name: string): Promise<SrvAnswer> => {
    if (!asked.has(name)) asked.set(name, querySrv(dns, name)); // never rejects
    return asked.get(name)!;
  };
  const own = [fallback, ...SRV_PREFERENCE.filter((p) => p !== fallback)].filter((p) => choice.running.includes(p) && (!choice.secure || p === 'tls'));
  // (fallback is TLS for a sips: URI, and for a sip: URI only when TLS is all we run.)
  for (const p of own) void srv(srvName(host, p));
  let naptr: NaptrRecord[] = [];
  try {
    naptr = await dns.resolveNaptr(host);
  } catch (err) {
    // A failed query (a timeout, SERVFAIL, a resolver refusing NAPTR) is taken as no record:
    // the name may well have only SRV or address records, and calls to it must go on.
    const why = failureOf(err);
    if (why) dns.onNaptrFailure?.(host, why);
  }
  const offered = sipNaptr(naptr);
  const usable = usableNaptr(offered, choice);
  if (usable.length > 0) return fromNaptr(host, usable, srv, dns);

  const answers = await Promise.all(own.map(async (p) => ({ protocol: p, ...(await srv(srvName(host, p))) })));
  reportSrvFailures(host, answers, dns);
  const found = answers.filter((a) => a.records.length > 0 && !saysNoSip(a.records));
  if (found.length > 0) {
    const targets: SipTarget[] = [];
    for (const a of found) targets.push(...(await srvTargets(a.records, a.protocol, dns)));
    return someTargets(targets, `none of the SRV targets of "${host}" resolves`);
  }
  // The domain does say which transports it offers, none we can use: its address on another
  // (UDP for a domain offering TLS only) would be a guess against its word — and never for a
  // sips: URI, which must not go in the clear (RFC 3261 §26.2.2).
  if (offered.length > 0) {
    const services = [...new Set(offered.map((r) => { const p = naptrProtocol(r.service); return `${r.service.toUpperCase()}${p ? ` (${p})` : ''}`; }))].join(', ');
    const ours = choice.secure ? 'a sips: URI takes TLS only (SIPS+D2T)' : `the transports we run are ${choice.running.join(', ')}`;
    throw new SipHostNotFoundError(`cannot reach "${host}": its DNS (NAPTR) offers SIP only as ${services}, and ${ours}`);
  }
  if (saysNoSip(answers.find((a) => a.protocol === fallback)?.records ?? [])) throw new SipHostNotFoundError(`"${host}" says it offers no SIP over ${fallback} (SRV target ".")`);
  return addressTargets(host, defaultPort(fallback), fallback, dns);
}

/**
 * The servers of the NAPTR records we can use, in their order, each on its transport: the SRV
 * records of each replacement (§4.2) — or, when none has any, the name's address records on
 * the first one's transport (§4.2: "If no SRV records were found, the client performs an A or
 * AAAA record lookup of the domain name").
 */
async function fromNaptr(host: string, usable: Array<{ protocol: SipProtocol; name: string }>, srv: (name: string) => Promise<SrvAnswer>, dns: SipDns): Promise<SipTarget[]> {
  const answers = await Promise.all(usable.map(async (n) => ({ ...n, ...(await srv(n.name)) })));
  reportSrvFailures(host, answers, dns);
  const targets: SipTarget[] = [];
  for (const a of answers) if (!saysNoSip(a.records)) targets.push(...(await srvTargets(a.records, a.protocol, dns)));
  if (targets.length > 0) return targets;
  if (answers.some((a) => a.records.length > 0 && !saysNoSip(a.records))) throw new SipHostNotFoundError(`none of the SRV targets of "${host}" (by its NAPTR records) resolves`);
  const first = answers.find((a) => !saysNoSip(a.records));
  if (!first) throw new SipHostNotFoundError(`"${host}" says it offers no SIP (the SRV targets its NAPTR records name are ".")`);
  return addressTargets(host, defaultPort(first.protocol), first.protocol, dns);
}
