import { isIPv4, isIPv6 } from 'node:net';

/** Is `ip` inside one of the CIDRs (IPv4 or IPv6; a bare address is a /32 or /128)? */
export function ipInCidrs(ip: string, cidrs: string[]): boolean {
  const addr = toBigInt(ip.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, '$1'));
  if (!addr) return false;
  for (const c of cidrs) {
    const [net, lenText] = c.split('/');
    const n = toBigInt(net);
    if (!n || n.v6 !== addr.v6) continue;
    const bits = n.v6 ? 128 : 32;
    const len = lenText === undefined ? bits : Number(lenText);
    if (!Number.isInteger(len) || len < 0 || len > bits) continue;
    const shift = BigInt(bits - len);
    if (n.value >> shift === addr.value >> shift) return true;
  }
  return false;
}

function toBigInt(ip: string): { value: bigint; v6: boolean } | null {
  if (isIPv4(ip)) return { value: ip.split('.').reduce((a, o) => (a << 8n) | BigInt(Number(o)), 0n), v6: false };
  if (!isIPv6(ip)) return null;
  const [head, tail] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8) return null;
  return { value: groups.reduce((a, g) => (a << 16n) | BigInt(parseInt(g || '0', 16)), 0n), v6: true };
}
