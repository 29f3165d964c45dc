import { isIP } from 'node:net';
import sdpTransform from 'sdp-transform';
import { formatCryptoAttribute, type SdesCrypto } from '../media/srtp';
import { usableEventClock } from '../media/dtmf';

/**
 * SDP toward and from the SIP side (RFC 4566 / RFC 3264 offer-answer), with sdp-transform.
 * The WebRTC side's SDP is werift's business; here we only speak plain SIP SDP:
 * RTP/AVP or RTP/SAVP with a=crypto (RFC 4568), G.711, telephone-event, optional Opus.
 */

export type MediaDirection = 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';
export type SipCodecName = 'PCMU' | 'PCMA' | 'opus';

export interface SipMediaDescription {
  address: string;
  port: number;
  rtcpPort?: number;
  rtcpMux: boolean;
  codecs: Array<{ name: string; payloadType: number; clockRate: number; channels?: number }>;
  /** The 8 kHz telephone-event's PT, else the first one's (see telephoneEventFor for a codec's own). */
  telephoneEventPayloadType?: number;
  /** Every telephone-event format offered, in order (Chrome-style offers carry /8000 and /48000). */
  telephoneEvents?: Array<{ payloadType: number; clockRate: number }>;
  ptime?: number;
  direction: MediaDirection;
  crypto: string[];
  profile: string;
  /**
   * Every m-line of the SDP in order (type, proto, formats), and which one is the audio stream
   * described here: an answer has one m-line per offered one (RFC 3264 §6), the others refused
   * with port 0.
   */
  streams?: { sections: Array<{ type: string; protocol: string; fmt: string }>; audioIndex: number };
}

export interface SipSdpOptions {
  advertisedHost: string;
  port: number;
  srtp: 'off' | 'optional' | 'mandatory';
  localCrypto?: SdesCrypto[];
  codecs: SipCodecName[];
  /** An answer takes this codec when the offer lists it (mid-call: the one in use), else the first offered we support. */
  keepCodec?: SipCodecName;
  ptime?: number;
  sessionId?: string;
  sessionVersion?: number;
  direction?: MediaDirection;
}

const STATIC: Record<number, { name: string; clockRate: number }> = { 0: { name: 'PCMU', clockRate: 8000 }, 8: { name: 'PCMA', clockRate: 8000 }, 9: { name: 'G722', clockRate: 8000 }, 13: { name: 'CN', clockRate: 8000 }, 18: { name: 'G729', clockRate: 8000 } };
const OUR_PT: Record<SipCodecName, number> = { PCMU: 0, PCMA: 8, opus: 111 };
const TELEPHONE_EVENT_PT = 101;
/** telephone-event at Opus's 48 kHz RTP clock, offered beside the 8 kHz one when we offer Opus. */
const TELEPHONE_EVENT_48K_PT = 110;

/**
 * The telephone-event format to use beside an audio codec of `clockRate`: RFC 4733 §2.1 has the
 * events on the audio's RTP clock, so an Opus stream takes telephone-event/48000 where offered
 * (its durations then count 48 kHz ticks); else the 8 kHz one, else whatever there is.
 */
export function telephoneEventFor(desc: Pick<SipMediaDescription, 'telephoneEvents' | 'telephoneEventPayloadType'>, clockRate: number): { payloadType: number; clockRate: number } | undefined {
  const all = desc.telephoneEvents ?? (desc.telephoneEventPayloadType !== undefined ? [{ payloadType: desc.telephoneEventPayloadType, clockRate: 8000 }] : []);
  return all.find((t) => t.clockRate === clockRate) ?? all.find((t) => t.clockRate === 8000) ?? all[0];
}

type ListedCodec = SipMediaDescription['codecs'][number];

/**
 * The one place a SIP-side codec is chosen from the far end's list (an offer we answer, or an
 * answer to our offer), among the codecs we do (`ours`):
 * - `keep`, the codec in use, while the far end still lists it: a re-offer in another order
 *   must not switch it under a running bridge;
 * - else, with `preferG711` (answering for a browser that sends PCMU), a G.711 law before Opus,
 *   so the bridge passes audio through instead of transcoding it;
 * - else the first listed that we do: an answerer sends what it put first.
 * `otherLaw` is the other G.711 law when the far end listed it and we do it too: an answerer may
 * send any format it listed (RFC 3264 §6.1), and our SIP leg converts that law to the chosen one.
 */
export function chooseSipCodec(
  listed: readonly ListedCodec[],
  ours: readonly SipCodecName[],
  opts: { keep?: SipCodecName; preferG711?: boolean } = {},
): { codec: ListedCodec; name: SipCodecName; otherLaw?: ListedCodec } | undefined {
  const isOurs = (c: ListedCodec) => ours.some((n) => n.toLowerCase() === c.name.toLowerCase());
  const named = (name: string) => (c: ListedCodec) => isOurs(c) && c.name.toLowerCase() === name.toLowerCase();
  const codec = (opts.keep ? listed.find(named(opts.keep)) : undefined)
    ?? (opts.preferG711 ? listed.find((c) => isOurs(c) && /^PCM[AU]$/i.test(c.name)) : undefined)
    ?? listed.find(isOurs);
  if (!codec) return undefined;
  const name = normaliseCodecName(codec.name);
  const otherLaw = name === 'opus' ? undefined : listed.find(named(name === 'PCMU' ? 'PCMA' : 'PCMU'));
  return { codec, name, otherLaw };
}

/** Our offer toward the trunk. `srtp: 'optional'` offers RTP/AVP with a=crypto (best-effort SRTP). */
export function buildSipOffer(o: SipSdpOptions): string {
  const events = [{ payloadType: TELEPHONE_EVENT_PT, clockRate: 8000 }];
  if (o.codecs.includes('opus')) events.push({ payloadType: TELEPHONE_EVENT_48K_PT, clockRate: 48000 });
  return buildSdp(o, o.codecs.map((c) => ({ name: c, pt: OUR_PT[c] })), events, o.srtp === 'off' ? [] : o.localCrypto ?? [], o.srtp === 'mandatory' ? 'RTP/SAVP' : 'RTP/AVP');
}

/**
 * Our answer to a SIP offer: the first offered codec we support, its PT, their telephone-event PT.
 * When we cannot take the stream (no common codec, or an RTP/SAVP offer we have no keys for) the
 * audio stream is rejected with port 0 (RFC 3264 §6) rather than answered with a bogus m-line.
 */
export function buildSipAnswer(offer: SipMediaDescription, o: SipSdpOptions): string {
  const chosen = chooseSipCodec(offer.codecs, o.codecs, { keep: o.keepCodec })?.codec;
  const crypto = o.srtp === 'off' ? [] : o.localCrypto ?? [];
  const savp = offer.profile.includes('SAVP');
  // The refusal mirrors the offer's m-lines too (RFC 3264 §6): an answer with fewer m-lines
  // than an audio + video offer is no answer at all to many user agents.
  if (!chosen || (savp && crypto.length === 0)) return mirrorStreams(buildRejection(o, offer), offer);
  const profile = savp ? 'RTP/SAVP' : 'RTP/AVP';
  // RFC 5761 §5.1.1: an offer of rtcp-mux is taken by saying so in the answer (our leg then
  // sends RTCP to the RTP port and reads it there).
  const te = telephoneEventFor(offer, chosen.clockRate);
  const sdp = buildSdp({ ...o, ptime: o.ptime ?? offer.ptime }, [{ name: normaliseCodecName(chosen.name), pt: chosen.payloadType }], te ? [te] : [], crypto, profile, offer.rtcpMux);
  return mirrorStreams(sdp, offer);
}

/**
 * An answer with one m-line per offered one, in the offer's order (RFC 3264 §6): our audio
 * stream where the offer had it, every other stream (video, a second audio) refused with port 0.
 * Many user agents reject an answer with fewer m-lines than their offer.
 */
function mirrorStreams(answer: string, offer: SipMediaDescription): string {
  const streams = offer.streams;
  if (!streams || streams.sections.length <= 1) return answer;
  const at = answer.indexOf('\r\nm=') + 2;
  const session = answer.slice(0, at);
  const audio = answer.slice(at);
  return session + streams.sections.map((m, i) => (i === streams.audioIndex ? audio : `m=${m.type} 0 ${m.protocol} ${m.fmt}\r\n`)).join('');
}

function buildRejection(o: SipSdpOptions, offer: SipMediaDescription): string {
  const ipver = o.advertisedHost.includes(':') ? 'IP6' : 'IP4';
  const fmt = offer.codecs[0]?.payloadType ?? offer.telephoneEventPayloadType ?? 0;
  return [
    'v=0',
    `o=- ${o.sessionId ?? '1'} ${o.sessionVersion ?? 1} IN ${ipver} ${o.advertisedHost}`,
    's=-',
    `c=IN ${ipver} ${o.advertisedHost}`,
    't=0 0',
    `m=audio 0 ${offer.profile} ${fmt}`,
    '',
  ].join('\r\n');
}

function buildSdp(o: SipSdpOptions, codecs: Array<{ name: SipCodecName; pt: number }>, events: Array<{ payloadType: number; clockRate: number }>, crypto: SdesCrypto[], profile: string, rtcpMux = false): string {
  const ip6 = o.advertisedHost.includes(':');
  const ipver = ip6 ? 'IP6' : 'IP4';
  const fmts = [...codecs.map((c) => c.pt), ...events.map((e) => e.payloadType)];
  const lines = [
    'v=0',
    `o=- ${o.sessionId ?? '1'} ${o.sessionVersion ?? 1} IN ${ipver} ${o.advertisedHost}`,
    's=-',
    `c=IN ${ipver} ${o.advertisedHost}`,
    't=0 0',
    `m=audio ${o.port} ${profile} ${fmts.join(' ')}`,
  ];
  for (const c of codecs) {
    if (c.name === 'opus') {
      lines.push(`a=rtpmap:${c.pt} opus/48000/2`, `a=fmtp:${c.pt} useinbandfec=1;maxplaybackrate=16000`);
    } else {
      lines.push(`a=rtpmap:${c.pt} ${c.name}/8000`);
    }
  }
  for (const e of events) lines.push(`a=rtpmap:${e.payloadType} telephone-event/${e.clockRate}`, `a=fmtp:${e.payloadType} 0-16`);
  lines.push(`a=ptime:${o.ptime ?? 20}`, rtcpMux ? 'a=rtcp-mux' : `a=rtcp:${o.port + 1}`);
  for (const c of crypto) lines.push(`a=crypto:${formatCryptoAttribute(c)}`);
  lines.push(`a=${o.direction ?? 'sendrecv'}`);
  return `${lines.join('\r\n')}\r\n`;
}

/** Our name for a codec the far end listed (only names chooseSipCodec took from ours reach here). */
export function normaliseCodecName(name: string): SipCodecName {
  const u = name.toUpperCase();
  return u === 'PCMU' ? 'PCMU' : u === 'PCMA' ? 'PCMA' : 'opus';
}

/** Media parameters from a SIP answer (or offer): the first usable audio stream. */
export function parseSipAnswer(sdp: string): SipMediaDescription | { error: string } {
  return parseSipSdp(sdp);
}

export function parseSipOffer(sdp: string): SipMediaDescription | { error: string } {
  return parseSipSdp(sdp);
}

/**
 * sdp-transform turns every field that reads as a number into one (toIntIfInt) and leaves the
 * rest strings, whatever its type: "a=rtpmap:96 1234/8000" has the number 1234 as codec name,
 * "c=IN IP4 1234" a number as address, "m=audio 0001" the string "0001" as port. These take the
 * field as the type it must be, so nothing below calls a string method on a number or does
 * arithmetic on a string (port + 1 was "00011").
 */
const str = (v: unknown): string | undefined => (v === undefined || v === null ? undefined : String(v));
/** A decimal number field (leading zeros allowed), NaN when it is empty or anything else. */
const num = (v: unknown): number => (typeof v === 'number' ? v : /^\d+$/.test(String(v)) ? Number(v) : NaN);
const isPort = (n: number) => Number.isInteger(n) && n >= 1 && n <= 65535;

function parseSipSdp(sdp: string): SipMediaDescription | { error: string } {
  if (!sdp || !/^v=0/m.test(sdp)) return { error: 'no SDP body' };
  let s: sdpTransform.SessionDescription;
  try {
    s = sdpTransform.parse(sdp);
  } catch (e) {
    return { error: `unparseable SDP: ${(e as Error).message}` };
  }
  const audioIndex = (s.media ?? []).findIndex((m) => m.type === 'audio' && num(m.port) !== 0);
  const audio = audioIndex >= 0 ? s.media[audioIndex] : undefined;
  if (!audio) return { error: (s.media ?? []).some((m) => m.type === 'audio') ? 'audio stream rejected (port 0)' : 'no audio stream in SDP' };
  // A port a datagram cannot be sent to is refused here (488), not handed to the media leg.
  const port = num(audio.port);
  if (!isPort(port)) return { error: `m=audio port ${JSON.stringify(str(audio.port)?.slice(0, 24)).replace(/^"(\d+)"$/, '$1')} is not a port number` };
  // An a=rtcp whose port is no port is ignored, as SDP ignores an attribute it cannot read: RTCP
  // then goes to the RTP port + 1 (RFC 3550's default), and the call is not refused for it.
  const offeredRtcp = audio.rtcp === undefined ? undefined : num(audio.rtcp.port);
  const rtcpPort = offeredRtcp !== undefined && isPort(offeredRtcp) ? offeredRtcp : undefined;
  const address = str(audio.connection?.ip ?? s.connection?.ip);
  if (!address) return { error: 'no connection address (c=) for the audio stream' };
  // RFC 4566 allows a host name here; we take addresses only: a name would be looked up for
  // every packet sent (dgram resolves per send) until the far end's own packets latch us.
  if (isIP(address) === 0) return { error: `connection address ${JSON.stringify(address.slice(0, 64))} is not an IP address (host names in c= are not supported)` };
  const pts = String(audio.payloads ?? '').trim().split(/\s+/).filter(Boolean).map(Number).filter((n) => Number.isInteger(n) && n >= 0 && n < 128);
  const rtpmap = new Map((audio.rtp ?? []).map((r) => [r.payload, r]));
  const codecs: SipMediaDescription['codecs'] = [];
  const telephoneEvents: Array<{ payloadType: number; clockRate: number }> = [];
  for (const pt of pts) {
    const r = rtpmap.get(pt);
    const name = str(r?.codec) ?? STATIC[pt]?.name;
    if (!name) continue;
    // "PCMA/" (no rate) or a rate of 400 digits: the codec's usual one.
    const rate = r?.rate !== undefined && Number.isSafeInteger(num(r.rate)) && num(r.rate) > 0 ? num(r.rate) : undefined;
    if (name.toLowerCase() === 'telephone-event') {
      const clockRate = rate ?? 8000;
      if (usableEventClock(clockRate)) telephoneEvents.push({ payloadType: pt, clockRate });
      continue;
    }
    codecs.push({ name, payloadType: pt, clockRate: rate ?? STATIC[pt]?.clockRate ?? 8000, channels: r?.encoding ? Number(r.encoding) : undefined });
  }
  if (codecs.length === 0) return { error: 'no audio codec in SDP' };
  const dirAttr = (audio.direction ?? s.direction ?? 'sendrecv') as MediaDirection;
  // RFC 2543-style hold: c=0.0.0.0 means "don't send to me".
  // It takes away our sending direction: sendrecv becomes sendonly, recvonly becomes inactive.
  const direction: MediaDirection = address === '0.0.0.0' ? (dirAttr === 'sendrecv' ? 'sendonly' : dirAttr === 'recvonly' ? 'inactive' : dirAttr) : dirAttr;
  // "a=ptime:1.2.3" or "a=ptime:0" says nothing usable: as if absent (never "a=ptime:NaN" back).
  const ptime = Number(audio.ptime ?? (s as { ptime?: number }).ptime);
  return {
    address,
    port,
    rtcpPort,
    rtcpMux: audio.rtcpMux !== undefined,
    codecs,
    telephoneEventPayloadType: (telephoneEvents.find((t) => t.clockRate === 8000) ?? telephoneEvents[0])?.payloadType,
    telephoneEvents,
    // As the SIP leg sends it (sipFrameSamplesFor): 10-120 ms in steps of 10, so that our answer
    // repeats a packet length we keep to, never an offered 100000.
    ptime: Number.isFinite(ptime) && ptime > 0 ? Math.min(120, Math.max(10, Math.round(ptime / 10) * 10)) : undefined,
    direction,
    // From the raw text: sdp-transform keeps only the first session parameter, and a dropped
    // UNENCRYPTED_SRTCP (etc.) would make us accept keys we cannot honour.
    crypto: rawCryptoLines(sdp, audioIndex),
    profile: str(audio.protocol) ?? '',
    streams: { sections: rawMediaSections(sdp), audioIndex },
  };
}

/**
 * Media type, transport protocol and formats of every m-line, from the raw text: sdp-transform
 * reads none of them from a legal line it does not know, such as a port count
 * ("m=video 49170/2 RTP/AVP 31"), and our answer must repeat each (RFC 3264 §6).
 */
function rawMediaSections(sdp: string): Array<{ type: string; protocol: string; fmt: string }> {
  return sdp.split(/\r\n|\r|\n/).filter((l) => l.startsWith('m=')).map((l) => {
    const [type, , protocol, ...fmt] = l.slice(2).trim().split(/\s+/);
    return { type: type || 'audio', protocol: protocol || 'RTP/AVP', fmt: fmt.join(' ') || '0' };
  });
}

/** The a=crypto values (without 'crypto:') of the `index`-th m-section, verbatim but for whitespace. */
function rawCryptoLines(sdp: string, index: number): string[] {
  // Same line selection as sdp-transform, so m-section indexes agree with its media array.
  const lines = sdp.split(/\r\n|\r|\n/).filter((l) => /^[a-z]=/.test(l));
  const out: string[] = [];
  let section = -1;
  for (const l of lines) {
    if (l.startsWith('m=')) { section++; continue; }
    if (section !== index || !l.startsWith('a=crypto:')) continue;
    const value = l.slice('a=crypto:'.length).trim().split(/\s+/).join(' ');
    if (/^\d+ \S+ \S+/.test(value)) out.push(value);
  }
  return out;
}
