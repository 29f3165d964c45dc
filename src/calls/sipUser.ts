/** 'sip:+1555@host' or '"Bob" <sip:bob@host>;tag=x' → '+1555' / 'bob'. */
export function userPart(value: string): string {
  const m = /(?:sips?|tel):([^@;>?\s]+)/i.exec(value);
  if (!m) return '';
  // A broken escape (sip:%ZZ@…) from a peer is taken as written, not thrown (URIError).
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return m[1];
  }
}
