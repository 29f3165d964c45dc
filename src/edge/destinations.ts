/**
 * Dial plan: normalisation to E.164 and allow/deny rules with toll-fraud-safe defaults.
 */
export interface DialPlanRules {
  defaultCountryCode: string;
  allow: string[];
  deny: string[];
  allowInternational: boolean;
  allowPremium: boolean;
}

/**
 * Premium-rate and other high-cost prefixes blocked unless allowed (a documented selection,
 * not exhaustive): NANP 900/976, UK 09 and 070/087x, France 089, Germany 0900/0137,
 * satellite and international premium (+881, +882, +883, +979), and some of the ranges most
 * abused for international revenue share fraud.
 */
export const PREMIUM_PREFIXES = ['+1900', '+1976', '+449', '+4470', '+44871', '+44872', '+44873', '+3389', '+49900', '+49137', '+39899', '+34803', '+34806', '+34807', '+881', '+882', '+883', '+979', '+870'];

/**
 * '+1 (555) 123-4567' → '+15551234567'; '00' (and, in NANP, '011') → '+'; national numbers get the
 * default country code; short extensions and service codes (up to 6 characters, `*` and `#`
 * allowed) stay. Anything longer must be digits only (E.164), national or international.
 */
export function normalizeNumber(input: string, defaultCountryCode: string): string | null {
  const s = input.trim().replace(/[\s\-().]/g, '');
  if (!/^\+?[0-9*#]{1,32}$/.test(s)) return null;
  const intl = s.startsWith('+') ? s.slice(1) : s.startsWith('00') ? s.slice(2) : defaultCountryCode === '1' && s.startsWith('011') ? s.slice(3) : null;
  if (intl !== null) return /^[0-9]{2,}$/.test(intl) ? `+${intl}` : null;
  if (s.length <= 6) return s; // extension / short code
  // Past a short code, digits only: '1#9005551234' as '+11#900…' slipped past every prefix rule
  // (+1900 premium, international) while a trunk that drops '#' would dial it.
  if (/[*#]/.test(s)) return null;
  if (defaultCountryCode === '1' && s.length === 11 && s.startsWith('1')) return `+${s}`;
  return `+${defaultCountryCode}${s.replace(/^0/, '')}`;
}

/**
 * '*' = any suffix, '?' = one character; everything else literal. Linear-time glob matching (no
 * regular expression, so patterns from config or tokens cannot cause catastrophic backtracking).
 */
export function matchPattern(pattern: string, value: string): boolean {
  let p = 0;
  let v = 0;
  let star = -1;
  let mark = 0;
  while (v < value.length) {
    if (p < pattern.length && pattern[p] === '*') {
      star = p++;
      mark = v;
    } else if (p < pattern.length && (pattern[p] === '?' || pattern[p] === value[v])) {
      p++;
      v++;
    } else if (star >= 0) {
      p = star + 1;
      v = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.length && pattern[p] === '*') p++;
  return p === pattern.length;
}

/** The literal part of a pattern before its first wildcard: '+1900*' → '+1900'. */
function literalPrefix(pattern: string): string {
  const i = pattern.search(/[*?]/);
  return i < 0 ? pattern : pattern.slice(0, i);
}

export type DestinationDecision = { allowed: true; normalized: string } | { allowed: false; reason: string };

/**
 * Deny by default. A number is allowed only when an allow pattern (config or token) matches it,
 * no deny pattern does, and — unless explicitly allowed — it is neither premium-rate nor
 * outside the home country. Token patterns narrow further: with a token `dest` claim, the
 * number must match one of its patterns too.
 */
/**
 * NANP area codes of countries other than the US and Canada (Caribbean and Atlantic): dialled as
 * +1 numbers but billed as international, and a favourite of revenue-share fraud.
 */
export const NANP_NON_US_CA = ['242', '246', '264', '268', '284', '345', '441', '473', '649', '658', '664', '721', '758', '767', '784', '809', '829', '849', '868', '869', '876'];

export function evaluateDestination(input: string, rules: DialPlanRules, tokenPatterns?: string[]): DestinationDecision {
  const n = normalizeNumber(input, rules.defaultCountryCode);
  if (!n) return { allowed: false, reason: `"${input.slice(0, 32)}" is not a dialable number` };
  if (rules.deny.some((p) => matchPattern(p, n))) return { allowed: false, reason: `${n} is denied by the dial plan` };
  if (tokenPatterns && !tokenPatterns.some((p) => matchPattern(p, n))) return { allowed: false, reason: `${n} is not allowed by this token` };
  // A token pattern allows by itself only a number it names, or one under a country it names
  // ('+1555*'); a wildcard of no country ('*', '**', '+*', '?*') only narrows the config's allow.
  const tokenAllows = (p: string) => (!/[*?]/.test(p) || /^\+[0-9]/.test(literalPrefix(p))) && matchPattern(p, n);
  const explicitlyAllowed = rules.allow.some((p) => matchPattern(p, n)) || (tokenPatterns?.some(tokenAllows) ?? false);
  if (!explicitlyAllowed) return { allowed: false, reason: `${n} is not in the allowed destinations` };
  if (n.startsWith('+')) {
    // Only a config allow pattern at least as specific as the premium prefix ('+1900555*', not
    // '+1*') lifts the premium block; only one naming a country ('+44*', not '*' or '+?*') lifts
    // the international block. Token patterns never do.
    const premium = PREMIUM_PREFIXES.filter((p) => n.startsWith(p));
    if (!rules.allowPremium && premium.length && !rules.allow.some((p) => matchPattern(p, n) && premium.some((pp) => literalPrefix(p).startsWith(pp)))) return { allowed: false, reason: `${n} is a premium-rate number` };
    // Other NANP countries share +1 but are international calls (and classic fraud targets): under
    // country code 1 they need an allow pattern naming their area code ('+1876*'), like '+44*'.
    const nanpForeign = rules.defaultCountryCode === '1' && NANP_NON_US_CA.some((a) => n.startsWith(`+1${a}`));
    const international = !n.startsWith(`+${rules.defaultCountryCode}`) || nanpForeign;
    const namedByAllow = (p: string) => matchPattern(p, n) && (nanpForeign ? literalPrefix(p).length >= 5 : /^\+[0-9]/.test(literalPrefix(p)));
    if (!rules.allowInternational && international && !rules.allow.some(namedByAllow)) return { allowed: false, reason: `${n} is international` };
  }
  return { allowed: true, normalized: n };
}
