import { isIPv4, isIPv6 } from 'node:net';

type Addr = { value: bigint; v6: boolean };

/**
 * Is `ip` inside one of the CIDRs (IPv4 or IPv6; a bare address is a /32 or /128)? IPv4-mapped
 * IPv6 addresses (::ffff:a.b.c.d) count as their IPv4 address. Malformed input never matches
 * and never throws.
 */
export function ipInCidrs(ip: string, cidrs: string[]): boolean {
  if (typeof ip !== 'string' || !Array.isArray(cidrs)) return false;
  const addr = unmap(parseIp(ip));
  if (!addr) return false;
  for (const c of cidrs) {
    if (typeof c !== 'string') continue;
    const m = /^([^/]+)(?:\/([0-9]{1,3}))?$/.exec(c.trim());
    if (!m) continue;
    let n = parseIp(m[1]);
    if (!n) continue;
    let bits = n.v6 ? 128 : 32;
    let len = m[2] === undefined ? bits : Number(m[2]);
    if (len > bits) continue;
    // An IPv4-mapped network (::ffff:10.0.0.0/104) is the IPv4 network it maps (10.0.0.0/8).
    if (n.v6 && len >= 96 && n.value >> 32n === 0xffffn) {
      n = { value: n.value & 0xffffffffn, v6: false };
      bits = 32;
      len -= 96;
    }
    if (n.v6 !== addr.v6) continue;
    const shift = BigInt(bits - len);
    if (n.value >> shift === addr.value >> shift) return true;
  }
  return false;
}

function unmap(a: Addr | null): Addr | null {
  return a && a.v6 && a.value >> 32n === 0xffffn ? { value: a.value & 0xffffffffn, v6: false } : a;
}

function v4Value(ip: string): bigint {
  return ip.split('.').reduce((a, o) => (a << 8n) | BigInt(Number(o)), 0n);
}

function parseIp(text: string): Addr | null {
  if (isIPv4(text)) return { value: v4Value(text), v6: false };
  if (!isIPv6(text)) return null;
  let ip = text.replace(/%.*$/, ''); // zone id (fe80::1%eth0)
  // A dotted IPv4 tail (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) is the last two 16-bit groups.
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(ip);
  if (dotted) {
    if (!isIPv4(dotted[2])) return null;
    const v = v4Value(dotted[2]);
    ip = `${dotted[1]}${(v >> 16n).toString(16)}:${(v & 0xffffn).toString(16)}`;
  }
  const [head, tail] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8 || !groups.every((g) => /^[0-9a-f]{1,4}$/i.test(g))) return null;
  return { value: groups.reduce((a, g) => (a << 16n) | BigInt(parseInt(g, 16)), 0n), v6: true };
}
