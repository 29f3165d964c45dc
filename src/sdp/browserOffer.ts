import sdpTransform from 'sdp-transform';

/**
 * A first look at a browser's offer, before a call, a port or a peer connection exists for it:
 * what the browser leg needs — an audio section over DTLS-SRTP with ICE credentials, a
 * fingerprint and a codec we bridge (Opus or PCMU). Returns the reason an offer cannot work, or
 * null. werift still parses the offer fully when it answers it.
 */
export function checkBrowserOffer(sdp: string): string | null {
  if (typeof sdp !== 'string' || !/^v=0\r?\n/.test(sdp)) return 'not an SDP offer (it must start with v=0)';
  let parsed: sdpTransform.SessionDescription;
  try {
    parsed = sdpTransform.parse(sdp);
  } catch (err) {
    return `unparseable SDP: ${(err as Error).message}`;
  }
  const audio = (parsed.media ?? []).find((m) => m.type === 'audio' && m.port !== 0);
  if (!audio) return 'no active audio section (m=audio)';
  // werift gives each section outside one BUNDLE group a transport of its own, with sockets the
  // ICE socket guard (which covers our audio's) never sees: a stranger could use them as a
  // reflector or nominate on them. Browsers bundle everything; a call has one audio stream.
  const active = (parsed.media ?? []).filter((m) => m.port !== 0);
  if (active.length > 1) {
    const bundled = new Set(String((parsed.groups ?? []).find((g) => g.type === 'BUNDLE')?.mids ?? '').split(' ').filter(Boolean));
    if (!active.every((m) => m.mid !== undefined && bundled.has(String(m.mid)))) return 'more than one media section, not all in one BUNDLE group: the gateway takes one transport';
  }
  if (!/SAVPF?$/.test(audio.protocol ?? '')) return `audio must be DTLS-SRTP (UDP/TLS/RTP/SAVPF), got ${String(audio.protocol).slice(0, 40)}`;
  if (!(audio.iceUfrag ?? parsed.iceUfrag) || !(audio.icePwd ?? parsed.icePwd)) return 'no ICE credentials (a=ice-ufrag, a=ice-pwd)';
  if (!(audio.fingerprint ?? parsed.fingerprint)) return 'no DTLS fingerprint (a=fingerprint)';
  // String(): sdp-transform hands an all-digit encoding name ("a=rtpmap:111 123/48000") back as a number.
  const codecs = (audio.rtp ?? []).map((r) => `${String(r.codec).toLowerCase()}/${r.rate}`);
  if (!codecs.includes('opus/48000') && !codecs.includes('pcmu/8000')) return 'no codec in common: the gateway needs Opus or PCMU';
  return null;
}
