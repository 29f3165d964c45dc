/**
 * Per-operation costs measured in this process: SIP parse/serialize, SRTP (ours against
 * werift's SrtpSession on the same packets), G.711 and Opus per 20 ms frame, and a
 * libsamplerate-js 48→8 kHz conversion for comparison with decoding Opus straight to 8 kHz.
 */
import { SrtpSession as WeriftSrtp, RtpPacket } from 'werift';
import { create as createResampler, ConverterType } from '@alexanderolsen/libsamplerate-js';
import { parseSipMessage } from '../src/sip';
import { SrtpSession, generateSdesCrypto } from '../src/media/srtp';
import { G711ToOpus, OPUS_DEFAULT_COMPLEXITY, OpusEncoder, OpusToG711, pcmuDecode, pcmuEncode } from '../src/media/codecs';
import { buildRtp } from '../src/media/rtp';
import { DtmfToneDetector } from '../src/media/dtmfDetector';

export interface MicroResult { name: string; usPerOp: number; opsPerSec: number; note?: string }

/** Runs fn repeatedly for ~durationMs after a warm-up; returns µs per call. */
function time(fn: () => void, durationMs = 700): number {
  for (let i = 0; i < 200; i++) fn();
  let n = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < durationMs) {
    for (let i = 0; i < 100; i++) fn();
    n += 100;
    t = performance.now();
  }
  return ((t - t0) * 1000) / n;
}

function result(name: string, us: number, note?: string): MicroResult {
  return { name, usPerOp: us, opsPerSec: 1e6 / us, note };
}

const INVITE = [
  'INVITE sip:+15551230000@trunk.example.com:5060 SIP/2.0',
  'Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds;rport',
  'Max-Forwards: 70',
  'To: <sip:+15551230000@trunk.example.com>',
  'From: "Visitor 42" <sip:+15550001111@gw.example.com>;tag=1928301774',
  'Call-ID: a84b4c76e66710@gw.example.com',
  'CSeq: 314159 INVITE',
  'Contact: <sip:gw@203.0.113.5:5060>',
  'Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE',
  'Supported: timer',
  'Session-Expires: 1800',
  'User-Agent: webrtc-sip-gateway',
  'Content-Type: application/sdp',
  '',
  'v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n',
].join('\r\n').replace('Content-Type: application/sdp', (s) => s);

export async function micro(): Promise<MicroResult[]> {
  const out: MicroResult[] = [];
  const body = INVITE.split('\r\n\r\n')[1];
  const wire = INVITE.replace('Content-Type: application/sdp\r\n', `Content-Type: application/sdp\r\nContent-Length: ${Buffer.byteLength(body)}\r\n`);
  const buf = Buffer.from(wire);
  const parsed = parseSipMessage(buf);
  if (!('method' in parsed)) throw new Error('bench INVITE does not parse');
  out.push(result('SIP parse INVITE+SDP (' + buf.length + ' B)', time(() => { parseSipMessage(buf); })));
  out.push(result('SIP serialize INVITE+SDP', time(() => { parsed.toString(); })));

  // SRTP: one 20 ms PCMU packet (172 B) protected and unprotected, ours vs werift.
  const a = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const b = generateSdesCrypto(1, 'AES_CM_128_HMAC_SHA1_80');
  const sender = new SrtpSession({ local: a, remote: b });
  const receiver = new SrtpSession({ local: b, remote: a });
  let seq = 0;
  const payload = Buffer.alloc(160, 0xd5);
  const ours = time(() => {
    seq = (seq + 1) & 0xffff;
    const p = sender.protectRtp(buildRtp(0, seq, seq * 160, 0x1234, payload));
    if (!receiver.unprotectRtp(p)) throw new Error('srtp round trip failed');
  });
  out.push(result('SRTP protect+unprotect, ours (AES_CM_128_HMAC_SHA1_80)', ours));
  const keys = { localMasterKey: Buffer.from(a.key), localMasterSalt: Buffer.from(a.salt), remoteMasterKey: Buffer.from(a.key), remoteMasterSalt: Buffer.from(a.salt) };
  const wSend = new WeriftSrtp({ keys, profile: 0x0001 });
  const wRecv = new WeriftSrtp({ keys, profile: 0x0001 });
  let wseq = 0;
  const theirs = time(() => {
    wseq = (wseq + 1) & 0xffff;
    const pkt = RtpPacket.deSerialize(buildRtp(0, wseq, wseq * 160, 0x1234, payload));
    const enc = wSend.encrypt(pkt.payload, pkt.header);
    wRecv.decrypt(enc);
  });
  out.push(result('SRTP protect+unprotect, werift SrtpSession', theirs, `ours is ${(theirs / ours).toFixed(1)}x faster`));

  // G.711 and Opus per 20 ms frame.
  const pcm8 = new Int16Array(160).map((_, i) => Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / 8000)));
  const ulaw = pcmuEncode(pcm8);
  out.push(result('PCMU encode 20 ms', time(() => { pcmuEncode(pcm8); })));
  out.push(result('PCMU decode 20 ms', time(() => { pcmuDecode(ulaw); })));
  // Runs only for a G.711 trunk that negotiated no telephone-event (the media bench's trunk, like
  // most, negotiates it, so the media figures do not include it).
  const detector = new DtmfToneDetector(() => {});
  out.push(result('in-band DTMF detection, 20 ms of 8 kHz audio', time(() => { detector.push(pcm8); })));
  const enc48 = new OpusEncoder({ sampleRate: 48000, bitrate: 32000, complexity: 5 });
  const pcm48 = new Int16Array(960).map((_, i) => Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / 48000)));
  const opusPkt = enc48.encode(pcm48);
  enc48.delete();
  // What Chrome sends when our SDP says maxplaybackrate=8000 (G.711 calls): narrowband, at our maxaveragebitrate.
  const enc8 = new OpusEncoder({ sampleRate: 8000, bitrate: 20000, complexity: 5 });
  const opusNb = enc8.encode(pcm8);
  enc8.delete();
  const toSip = new OpusToG711('pcmu');
  const toBrowser = new G711ToOpus('pcmu');
  const decFull = time(() => { toSip.decode(opusPkt); });
  const dec = time(() => { toSip.decode(opusNb); });
  out.push(result('Opus decode 20 ms to 8 kHz, fullband 32 kb/s packet (a browser left unasked)', decFull));
  out.push(result('Opus decode 20 ms to 8 kHz, narrowband 20 kb/s packet (browser -> SIP on G.711 calls)', dec, `${(decFull / dec).toFixed(1)}x cheaper than fullband`));
  out.push(result(`Opus encode 20 ms from 8 kHz, complexity ${OPUS_DEFAULT_COMPLEXITY} (SIP -> browser)`, time(() => { toBrowser.encode(pcm8); })));
  out.push(result('Opus PLC frame (lost browser packet)', time(() => { toSip.decode(null); })));
  toSip.close();
  toBrowser.close();
  const rs = await createResampler(1, 48000, 8000, { converterType: ConverterType.SRC_SINC_FASTEST });
  const f48 = new Float32Array(960).map((_, i) => Math.sin((2 * Math.PI * 440 * i) / 48000) * 0.25);
  const resample = time(() => { rs.full(f48); }, 400);
  rs.destroy();
  out.push(result('libsamplerate-js 48->8 kHz 20 ms (SINC_FASTEST), for comparison', resample, `${(resample / dec).toFixed(1)}x an Opus decode to 8 kHz`));
  return out;
}
