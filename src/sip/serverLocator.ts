import { lookup, Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { SipProtocol } from './transport';

/**
 * Where requests for a SIP host go (RFC 3263 §4): a literal address as it is; a name with a port
 * by its address records; a name without one by its SRV records first (RFC 2782), so that a
 * trunk published as `_sip._udp.carrier.example` — often with no address record on the bare
 * domain, or one that is its web site — is reached at the servers the carrier names, in its
 * order. NAPTR is not read: the transport is the URI's (`transport=`, `sips:`), as when NAPTR
 * finds nothing (§4.1).
 */

export interface SrvRecord { name: string; port: number; priority: number; weight: number }

/** The DNS queries a locator makes: the system's, or a set of servers (`sip.dnsServers`). */
export interface SipDns {
  resolveSrv(name: string): Promise<SrvRecord[]>;
  /** IPv4 addresses of a name. */
  addresses(name: string): Promise<string[]>;
  /** An SRV query failed (not "no record"): the name's own address is used instead. */
  onSrvFailure?(host: string, why: string): void;
}

/** One place to send to: an address, its port, and the name it was found under (TLS checks the certificate against the URI's host, not this). */
export interface SipTarget { address: string; port: number; name: string }

export class SipHostNotFoundError extends Error {}

/** The system's resolver, or one asking only `servers` ("ip" or "ip:port"). */
export function sipDns(servers?: string[]): SipDns {
  if (!servers || servers.length === 0) {
    // The system's servers, but bounded: c-ares' defaults wait up to ~20 s for a server that
    // does not answer before the address lookup may go ahead.
    const system = new Resolver({ timeout: 2000, tries: 2 });
    return {
      resolveSrv: (name) => system.resolveSrv(name),
      // getaddrinfo, as before SRV: /etc/hosts and the system's configuration apply.
      addresses: async (name) => (await lookup(name, { family: 4, all: true })).map((a) => a.address),
    };
  }
  const r = new Resolver({ timeout: 2000, tries: 2 });
  r.setServers(servers);
  return { resolveSrv: (name) => r.resolveSrv(name), addresses: (name) => r.resolve4(name) };
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

/** DNS answers meaning "no such record" (as opposed to a failed query). */
const NO_RECORD = new Set(['ENODATA', 'ENOTFOUND', 'ENONAME', 'NXDOMAIN']);

/**
 * Every place a request for `host` may go, best first. `port`: the URI's, if it has one. Throws
 * SipHostNotFoundError when there is none (a name that does not resolve, an SRV answer of "."
 * meaning "no SIP here", RFC 2782).
 */
export async function locateSipServers(host: string, port: number | undefined, protocol: SipProtocol, dns: SipDns): Promise<SipTarget[]> {
  const defaultPort = protocol === 'tls' ? 5061 : 5060;
  if (isIP(host)) return [{ address: host, port: port ?? defaultPort, name: host }];
  const byAddress = async (name: string, p: number): Promise<SipTarget[]> => {
    try {
      return (await dns.addresses(name)).map((address) => ({ address, port: p, name }));
    } catch {
      return [];
    }
  };
  if (port === undefined) {
    let records: SrvRecord[] = [];
    try {
      records = await dns.resolveSrv(srvName(host, protocol));
    } catch (err) {
      // No record, or a query that failed (a resolver that refuses SRV, a timeout): the name's
      // own address, as before SRV was looked up — a host in /etc/hosts, or a container name,
      // has no SRV record to find and may not even get an answer.
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (!NO_RECORD.has(code)) dns.onSrvFailure?.(host, code || (err as Error).message);
    }
    if (records.length === 1 && records[0].name === '') throw new SipHostNotFoundError(`"${host}" says it offers no SIP over ${protocol} (SRV target ".")`);
    if (records.length > 0) {
      const targets: SipTarget[] = [];
      for (const r of orderSrv(records)) targets.push(...(await byAddress(r.name, r.port)));
      if (targets.length > 0) return targets;
      throw new SipHostNotFoundError(`none of the SRV targets of "${host}" resolves`);
    }
  }
  const targets = await byAddress(host, port ?? defaultPort);
  if (targets.length === 0) throw new SipHostNotFoundError(`cannot resolve SIP host "${host}"`);
  return targets;
}
