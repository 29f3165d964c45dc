/**
 * The gateway against a second independent SIP stack: Linphone's console client (linphonec,
 * Debian linphone-cli: belle-sip + mediastreamer2; see test/peers/linphone.ts) as the trunk,
 * answering the gateway's calls and calling in. The browser side is a werift peer connection
 * played by the test (a tab on the gateway's WebSocket), sending a 700 Hz tone in Opus and
 * decoding what it receives; linphonec plays 1 kHz from a WAV and records what it hears, so
 * audio is checked both ways by tone detection, through the gateway's Opus <-> PCMU bridge (or
 * Opus passed through, when linphonec speaks Opus too).
 *
 * Found here and fixed: linphonec's STUN checks on our RTP and RTCP ports (mediastreamer2 sends
 * Binding Requests until the first RTP and RTCP come back) were counted as dropped packets,
 * 10-20 in the CDR of every clean call (`expectEndedOnce` checks the SIP leg dropped nothing).
 *
 * Each test starts its own gateway and linphonec and stops both, whatever happens.
 * Ports (all on 127.0.0.1), 28670-28719 only: HTTP 28670, gateway SIP 28671, linphonec SIP
 * 28680 and its RTP 28682-28689, the gateway's RTP 28690-28699, its WebRTC (ICE) 28700-28709,
 * the tab's ICE 28710-28717, the tab's STUN responder 28719.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type WebSocket from 'ws';
import { MediaStreamTrack, RTCPeerConnection, RTCRtpCodecParameters, RtpHeader, RtpPacket } from 'werift';
import { startLinphone, type Linphone } from '../peers/linphone';
import { heldResources, startGateway } from '../support/gateway';
import { openTab, until, type Msg, type Tab } from '../support/tabs';
import { readWav, rms, toneRatio, writeToneWav } from '../support/audio';
import { cdrLines, cdrOf } from '../support/demoRig';
import { tempDir } from '../support/tempDir';
import { OpusDecoder, OpusEncoder } from '../../src/media/codecs';
import { startStunResponder } from '../../bench/stunResponder';

const BASE = 28670;
const SECRET = 'linphone-trunk-test-secret-0123456789abc';
/** linphonec's own number: the gateway's calls go to it, and its calls come from it. */
const TRUNK_NUMBER = '+15551230000';
/** The number linphonec calls in on: routed to alice (inbound.didMap). */
const DID = '+15550001234';
const LINPHONE_SIP = BASE + 10;
const NOTHING_HELD = JSON.stringify({ legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 });
const TAB_HZ = 700;
const LINPHONE_HZ = 1000;
const work = tempDir('gw-linphone-');
const linphoneWav = join(work, 'linphone-1000hz.wav');

let stun: { port: number; close(): void };
before(async () => {
  writeToneWav(linphoneWav, { hz: LINPHONE_HZ, sampleRate: 8000, seconds: 120 });
  stun = await startStunResponder(BASE + 49);
});
after(() => stun?.close());

type Gw = Awaited<ReturnType<typeof startGateway>>;
type Codec = 'PCMU' | 'PCMA' | 'opus';
interface Rig { gw: Gw; phone: Linphone; sockets: WebSocket[] }
interface RigOptions {
  /** trunk.srtp, and linphonec's media_encryption (none / srtp / srtp mandatory). */
  srtp?: 'off' | 'mandatory';
  /** trunk.srtp when it differs from linphonec's. */
  gatewaySrtp?: 'off' | 'optional' | 'mandatory';
  autoAnswer?: boolean;
  /** trunk.codecs, and what linphonec offers and accepts. */
  codecs?: Codec[];
}

/**
 * Runs `fn` with a gateway whose trunk is a fresh linphonec; both are stopped after it, and a
 * failure carries both sides' SIP traffic and linphonec's output.
 */
async function withRig(o: RigOptions, fn: (rig: Rig) => Promise<void>): Promise<void> {
  const srtp = o.srtp ?? 'off';
  const phone = await startLinphone({ sipPort: LINPHONE_SIP, rtpPorts: [BASE + 12, BASE + 19], playWav: linphoneWav, srtp, autoAnswer: o.autoAnswer ?? true, user: TRUNK_NUMBER, codecs: o.codecs });
  const sockets: WebSocket[] = [];
  let gw: Gw | undefined;
  try {
    gw = await startGateway(BASE, {
      auth: { mode: 'token', hs256Secret: SECRET },
      demo: { enabled: false },
      trunk: { uri: `sip:127.0.0.1:${LINPHONE_SIP}`, codecs: o.codecs ?? ['PCMU'], srtp: o.gatewaySrtp ?? srtp, sourceCidrs: ['127.0.0.1/32'] },
      dialplan: { allow: ['+1555*'] },
      inbound: { didMap: { [DID]: 'alice' } },
      media: { portRange: [BASE + 20, BASE + 29] },
      webrtc: { portRange: [BASE + 30, BASE + 39] },
    }, { captureLogs: true });
    await fn({ gw, phone, sockets });
  } catch (err) {
    const sip = (gw?.logs ?? []).filter((l) => typeof l.sip === 'string').map((l) => `${l.msg}: ${String(l.sip).split('\r\n')[0]}`).join('\n');
    const more = `\n\ngateway SIP:\n${sip.slice(-3000)}\n\n${phone.output()}`;
    if (err instanceof Error) { err.message += more; if (err.stack) err.stack += more; }
    throw err;
  } finally {
    for (const ws of sockets) ws.terminate();
    await phone.stop();
    await gw?.stop();
  }
}

/**
 * A browser tab's media, played by a werift peer connection (Opus only, as a browser that
 * prefers it; ICE on 127.0.0.1 only, its ports in our range): sends a tone once asked to,
 * decodes every packet it receives (48 kHz mono) with the time it came.
 */
class TabMedia {
  readonly pc: RTCPeerConnection;
  readonly track = new MediaStreamTrack({ kind: 'audio' });
  private readonly decoder = new OpusDecoder({ sampleRate: 48000, channels: 1 });
  private readonly encoder = new OpusEncoder({ sampleRate: 48000, channels: 1, application: 'voip' });
  private readonly received: Array<{ at: number; pcm: Int16Array }> = [];
  private timer: NodeJS.Timeout | undefined;
  private seq = 0;
  private phase = 0;
  /** Opus's payload type in the negotiated SDP (the gateway's offer may number it otherwise). */
  private opusPt = 111;

  constructor() {
    this.pc = new RTCPeerConnection({
      iceServers: [{ urls: `stun:127.0.0.1:${stun.port}` }],
      iceUseIpv6: false,
      iceInterfaceAddresses: { udp4: '127.0.0.1' },
      icePortRange: [BASE + 40, BASE + 47],
      codecs: { audio: [new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111 })] },
    });
    this.pc.onTrack.subscribe((t) => t.onReceiveRtp.subscribe((rtp) => {
      if (rtp.header.payloadType !== this.opusPt) return;
      this.received.push({ at: Date.now(), pcm: this.decoder.decode(rtp.payload).slice() });
    }));
  }

  /** Takes Opus's payload type from the SDP the call was negotiated with. */
  negotiated(sdp: string): void {
    const m = /^a=rtpmap:(\d+) opus\/48000/im.exec(sdp);
    assert.ok(m, `Opus in ${sdp}`);
    this.opusPt = Number(m[1]);
  }

  /** Sends a `hz` tone in 20 ms Opus frames, keeping to the wall clock. */
  startTone(hz: number): void {
    const started = Date.now();
    let sent = 0;
    this.timer = setInterval(() => {
      const due = Math.floor((Date.now() - started) / 20) + 1;
      for (; sent < due; sent++) {
        const pcm = new Int16Array(960);
        for (let i = 0; i < pcm.length; i++) { pcm[i] = Math.round(10000 * Math.sin(this.phase)); this.phase += (2 * Math.PI * hz) / 48000; }
        this.phase %= 2 * Math.PI;
        this.track.writeRtp(new RtpPacket(new RtpHeader({ payloadType: this.opusPt, sequenceNumber: this.seq & 0xffff, timestamp: (this.seq * 960) >>> 0, ssrc: 4711, marker: this.seq === 0 }), this.encoder.encode(pcm)));
        this.seq++;
      }
    }, 10);
  }

  /** The audio received since `since` (Date.now()), joined. */
  heardSince(since: number): Int16Array {
    const parts = this.received.filter((r) => r.at >= since).map((r) => r.pcm);
    const out = new Int16Array(parts.reduce((n, p) => n + p.length, 0));
    let off = 0;
    for (const p of parts) { out.set(p, off); off += p.length; }
    return out;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.pc.close().catch(() => undefined);
    this.encoder.delete();
    this.decoder.delete();
  }
}

async function gathered(pc: RTCPeerConnection): Promise<string> {
  await until(() => pc.iceGatheringState === 'complete', 'ICE gathering');
  return pc.localDescription!.sdp;
}

/** The first message of `type` on the tab from index `from` on (an `ended` first fails it). */
async function message(tab: Tab, type: string, from = 0, ms = 10_000): Promise<Msg> {
  await until(() => tab.messages.slice(from).some((m) => m.type === type || m.type === 'ended'), `${type} on the tab`, ms);
  const m = tab.messages.slice(from).find((x) => x.type === type);
  assert.ok(m, `${type} expected, the call ended: ${JSON.stringify(tab.messages.slice(from))}`);
  return m;
}

/** Listens on the tab for `ms`: how much of linphonec's tone it heard. */
async function listen(media: TabMedia, ms = 1500): Promise<{ ratio: number; rms: number; samples: number }> {
  const since = Date.now();
  await new Promise((r) => setTimeout(r, ms));
  const s = media.heardSince(since);
  return { ratio: toneRatio(s, 48000, LINPHONE_HZ), rms: rms(s), samples: s.length };
}

/** A tab's call to linphonec, up to the gateway's `calling` (its answer applied). */
async function dial(rig: Rig, media: TabMedia): Promise<{ tab: Tab; callId: string }> {
  const tab = await openTab(BASE, 'alice', SECRET, rig.sockets);
  media.pc.addTransceiver(media.track, { direction: 'sendrecv' });
  await media.pc.setLocalDescription(await media.pc.createOffer());
  tab.ws.send(JSON.stringify({ type: 'call', to: TRUNK_NUMBER, ref: 'lp', sdp: await gathered(media.pc) }));
  const calling = await message(tab, 'calling');
  await media.pc.setRemoteDescription({ type: 'answer', sdp: String(calling.sdp) });
  media.negotiated(String(calling.sdp));
  return { tab, callId: String(calling.callId) };
}

/** An outbound call to the auto-answering linphonec, answered, with the tab's tone going. */
async function outboundCall(rig: Rig, media: TabMedia): Promise<{ tab: Tab; callId: string }> {
  const { tab, callId } = await dial(rig, media);
  await message(tab, 'answered', 0, 15_000);
  await until(() => media.pc.connectionState === 'connected', 'the tab\'s ICE and DTLS');
  media.startTone(TAB_HZ);
  await rig.phone.waitFor(/Media streams established with /, 5000);
  return { tab, callId };
}

/** linphonec calls the DID; alice's tab rings and answers; the tab's tone going. */
async function inboundCall(rig: Rig, media: TabMedia): Promise<{ tab: Tab; callId: string; incoming: Msg }> {
  const tab = await openTab(BASE, 'alice', SECRET, rig.sockets);
  rig.phone.send(`call sip:${DID}@127.0.0.1:${rig.gw.sipPort}`);
  const incoming = await message(tab, 'incoming');
  await media.pc.setRemoteDescription({ type: 'offer', sdp: String(incoming.sdp) });
  media.negotiated(String(incoming.sdp));
  const transceiver = media.pc.getTransceivers()[0];
  await transceiver.sender.replaceTrack(media.track);
  transceiver.setDirection('sendrecv');
  await media.pc.setLocalDescription(await media.pc.createAnswer());
  tab.ws.send(JSON.stringify({ type: 'accept', callId: incoming.callId, sdp: await gathered(media.pc) }));
  await message(tab, 'answered', 0, 15_000);
  media.startTone(TAB_HZ);
  await rig.phone.waitFor(/Media streams established with /, 5000);
  return { tab, callId: String(incoming.callId), incoming };
}

/** What linphonec recorded of the call: how much of the tab's tone, after the first second. */
function linphoneHeard(path: string): { ratio: number; seconds: number } {
  const { samples, sampleRate } = readWav(path);
  const steady = samples.subarray(Math.min(samples.length, sampleRate));
  return { ratio: toneRatio(steady, sampleRate, TAB_HZ), seconds: steady.length / sampleRate };
}

/** The tab hears linphonec's tone. */
async function expectTabHears(media: TabMedia, what: string, ms = 1500): Promise<void> {
  const heard = await listen(media, ms);
  assert.ok(heard.ratio > 0.5, `${what}: the tab hears linphonec's ${LINPHONE_HZ} Hz: ratio ${heard.ratio.toFixed(2)} over ${heard.samples} samples (rms ${heard.rms.toFixed(0)})`);
}

/** linphonec's recording has the tab's tone. */
function expectLinphoneHeard(path: string): void {
  const lp = linphoneHeard(path);
  assert.ok(lp.seconds > 1, `linphonec recorded ${lp.seconds.toFixed(1)} s`);
  assert.ok(lp.ratio > 0.5, `linphonec hears the tab's ${TAB_HZ} Hz: ratio ${lp.ratio.toFixed(2)} over ${lp.seconds.toFixed(1)} s`);
}

/**
 * The call is over at the gateway: one CDR line with `cause`, no call, nothing held. The SIP
 * leg of an answered call refused nothing linphonec sent (`quality.sip.dropped`): before, its
 * STUN checks were counted there, 10-20 "dropped" packets in every clean call.
 *
 * `srtpReplays`: what SRTP's replay check may refuse of linphonec's in that call, rightly. It
 * sends a digit's final event packet three times at once under one sequence number (seen on
 * the wire; with plain RTP the copies count as `duplicates`): two replays per digit. And after
 * a re-INVITE it starts its SRTCP index at 1 again under the same key (seen: an SR with index
 * 1 from its SSRC after each re-INVITE), which RFC 3711 forbids: those reports are replays too.
 */
async function expectEndedOnce(gw: Gw, callId: string, cause: string, srtpReplays = 0): Promise<Record<string, any>> {
  const cdr = await cdrOf(gw, callId);
  assert.equal(cdr.cause, cause, JSON.stringify(cdr));
  if (cdr.answerTime) assert.ok(cdr.quality.sip.dropped <= srtpReplays, `nothing from linphonec refused (but up to ${srtpReplays} SRTP replays): ${JSON.stringify(cdr.quality.sip)}`);
  await until(() => gw.gateway.activeCalls === 0, 'no call left on the gateway');
  await until(() => JSON.stringify(heldResources(gw.gateway)) === NOTHING_HELD, `nothing held: ${JSON.stringify(heldResources(gw.gateway))}`);
  // Still one line a moment later (no second end of the same call).
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(cdrLines(gw).filter((l) => l.callId === callId).length, 1);
  return cdr;
}

/** A digit each way: the tab's `dtmf` reaches linphonec, linphonec's reaches the tab once. */
async function expectDtmfBothWays(rig: Rig, tab: Tab, callId: string, toPhone: string, toTab: string): Promise<void> {
  const at = rig.phone.mark();
  tab.ws.send(JSON.stringify({ type: 'dtmf', callId, digits: toPhone }));
  await rig.phone.waitFor(new RegExp([...toPhone].map((d) => `Receiving tone ${d.replace(/[*#]/, '\\$&')} from `).join('[^]*')), 5000, at);
  const from = tab.messages.length;
  rig.phone.send(toTab);
  assert.equal((await message(tab, 'dtmf', from)).digit, toTab);
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(tab.messages.slice(from).filter((m) => m.type === 'dtmf').map((m) => m.digit), [toTab], 'one digit, once');
}

/** The SIP messages linphonec received whose start line begins with `start`. */
const received = (phone: Linphone, start: string) => phone.sipMessages().filter((m) => m.direction === 'received' && m.startLine.startsWith(start));

describe('linphonec as the trunk (outbound)', () => {
  for (const srtp of ['off', 'mandatory'] as const) {
    test(`${srtp === 'off' ? 'plain RTP' : 'mandatory SDES-SRTP'} PCMU: audio both ways, BYE from the tab; one CDR line, nothing held`, { timeout: 60_000 }, async () => {
      await withRig({ srtp }, async (rig) => {
        const rec = join(rig.phone.dir, 'heard.wav');
        await rig.phone.recordTo(rec);
        const media = new TabMedia();
        try {
          const { tab, callId } = await outboundCall(rig, media);
          const [invite] = received(rig.phone, 'INVITE ');
          assert.ok(invite, 'linphonec got the INVITE');
          if (srtp === 'mandatory') {
            assert.match(invite.text, /^m=audio \d+ RTP\/SAVP 0 /m);
            assert.match(invite.text, /^a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:/m);
          } else {
            assert.match(invite.text, /^m=audio \d+ RTP\/AVP 0 /m);
          }
          await expectTabHears(media, 'answered', 2000);
          await new Promise((r) => setTimeout(r, 500));
          const at = rig.phone.mark();
          tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
          await rig.phone.waitFor(/Call \d+ with [^\n]* ended \(No error\)\./, 5000, at);
          assert.equal((await message(tab, 'ended')).cause, 'local-hangup');
          expectLinphoneHeard(rec);
          await expectEndedOnce(rig.gw, callId, 'local-hangup');
        } finally {
          await media.close();
        }
      });
    });
  }

  test('trunk.srtp optional toward a linphonec taking SRTP only: it refuses our RTP/AVP offer with SDES keys (488), the INVITE goes again as RTP/SAVP, and the call has SRTP audio both ways', { timeout: 60_000 }, async () => {
    await withRig({ srtp: 'mandatory', gatewaySrtp: 'optional' }, async (rig) => {
      const rec = join(rig.phone.dir, 'heard.wav');
      await rig.phone.recordTo(rec);
      const media = new TabMedia();
      try {
        const { tab, callId } = await outboundCall(rig, media);
        const invites = received(rig.phone, 'INVITE ');
        assert.equal(invites.length, 2, 'two INVITEs');
        assert.match(invites[0].text, /^m=audio \d+ RTP\/AVP 0 /m);
        assert.match(invites[0].text, /^a=crypto:/m, 'the first: best-effort SRTP');
        assert.match(invites[1].text, /^m=audio \d+ RTP\/SAVP 0 /m, 'the second: SRTP only');
        await expectTabHears(media, 'answered', 2000);
        await new Promise((r) => setTimeout(r, 500));
        const at = rig.phone.mark();
        tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
        await rig.phone.waitFor(/Call \d+ with [^\n]* ended \(No error\)\./, 5000, at); // its recording is complete then
        assert.equal((await message(tab, 'ended')).cause, 'local-hangup');
        expectLinphoneHeard(rec);
        const cdr = await expectEndedOnce(rig.gw, callId, 'local-hangup');
        assert.ok(cdr.quality.sip.packetsReceived > 0, 'audio from linphonec');
      } finally {
        await media.close();
      }
    });
  });

  test('BYE from linphonec: the tab gets ended remote-hangup; one CDR line, nothing held', { timeout: 60_000 }, async () => {
    await withRig({}, async (rig) => {
      const media = new TabMedia();
      try {
        const { tab, callId } = await outboundCall(rig, media);
        await expectTabHears(media, 'before the BYE');
        rig.phone.send('terminate');
        assert.equal((await message(tab, 'ended')).cause, 'remote-hangup');
        await expectEndedOnce(rig.gw, callId, 'remote-hangup');
      } finally {
        await media.close();
      }
    });
  });

  test('DTMF (RFC 4733) both ways: the tab\'s digits reach linphonec, linphonec\'s reach the tab', { timeout: 60_000 }, async () => {
    await withRig({}, async (rig) => {
      const media = new TabMedia();
      try {
        const { tab, callId } = await outboundCall(rig, media);
        await expectDtmfBothWays(rig, tab, callId, '5#', '7');
        tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
        await expectEndedOnce(rig.gw, callId, 'local-hangup');
      } finally {
        await media.close();
      }
    });
  });

  for (const srtp of ['off', 'mandatory'] as const) {
    test(`hold from the tab (re-INVITE sendonly) and resume${srtp === 'off' ? '' : ', SRTP'}: linphonec goes quiet while held, its audio and digits flow again after`, { timeout: 60_000 }, async () => {
      await withRig({ srtp }, async (rig) => {
        const media = new TabMedia();
        try {
          const { tab, callId } = await outboundCall(rig, media);
          await expectTabHears(media, 'before the hold');
          let at = rig.phone.mark();
          let from = tab.messages.length;
          tab.ws.send(JSON.stringify({ type: 'hold', callId }));
          assert.equal((await message(tab, 'held', from)).by, 'local');
          await rig.phone.waitFor(/Call \d+ has been paused by /, 5000, at);
          const hold = received(rig.phone, 'INVITE ').at(-1)!;
          assert.match(hold.text, /^a=sendonly$/m, 'the hold offer is sendonly');
          await new Promise((r) => setTimeout(r, 300));
          const held = await listen(media);
          assert.ok(held.ratio < 0.1, `linphonec's tone stops while held: ratio ${held.ratio.toFixed(2)}, rms ${held.rms.toFixed(0)}`);
          at = rig.phone.mark();
          from = tab.messages.length;
          tab.ws.send(JSON.stringify({ type: 'unhold', callId }));
          assert.equal((await message(tab, 'resumed', from)).by, 'local');
          await rig.phone.waitFor(/Media streams established with /, 5000, at);
          assert.match(received(rig.phone, 'INVITE ').at(-1)!.text, /^a=sendrecv$/m);
          await new Promise((r) => setTimeout(r, 300));
          await expectTabHears(media, 'after the resume');
          await expectDtmfBothWays(rig, tab, callId, '1', '3');
          tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
          // With SRTP: one digit of linphonec's (2), its SRTCP after each of two re-INVITEs (2).
          await expectEndedOnce(rig.gw, callId, 'local-hangup', srtp === 'off' ? 0 : 4);
        } finally {
          await media.close();
        }
      });
    });
  }

  for (const srtp of ['off', 'mandatory'] as const) {
    test(`linphonec holds (pause) and resumes${srtp === 'off' ? '' : ', SRTP'}: the tab gets held/resumed by remote; audio and digits after, on the telephone-event number linphonec's re-INVITE changed`, { timeout: 60_000 }, async () => {
      await withRig({ srtp }, async (rig) => {
        const media = new TabMedia();
        try {
          const { tab, callId } = await outboundCall(rig, media);
          let from = tab.messages.length;
          let at = rig.phone.mark();
          rig.phone.send('pause');
          assert.equal((await message(tab, 'held', from)).by, 'remote');
          await rig.phone.waitFor(/Call \d+ with [^\n]* is now paused\./, 5000, at);
          from = tab.messages.length;
          at = rig.phone.mark();
          rig.phone.send('resume');
          assert.equal((await message(tab, 'resumed', from)).by, 'remote');
          await rig.phone.waitFor(/Media streams established with /, 5000, at);
          // linphonec's own offers number telephone-event 96, where it answered ours with our 101.
          const reinvites = rig.phone.sipMessages().filter((m) => m.direction === 'sent' && m.startLine.startsWith('INVITE '));
          assert.equal(reinvites.length, 2, 'a re-INVITE to hold, one to resume');
          assert.match(reinvites[0].text, /^a=sendonly$/m);
          assert.match(reinvites[1].text, /^a=rtpmap:96 telephone-event\/8000$/m);
          await new Promise((r) => setTimeout(r, 300));
          await expectTabHears(media, 'after linphonec resumed');
          await expectDtmfBothWays(rig, tab, callId, '9', '2');
          tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
          // With SRTP: one digit of linphonec's (2), its SRTCP after each of two re-INVITEs (2).
          await expectEndedOnce(rig.gw, callId, 'local-hangup', srtp === 'off' ? 0 : 4);
        } finally {
          await media.close();
        }
      });
    });
  }

  test('the tab hangs up while linphonec rings: CANCEL, the call ends at both, one CDR line', { timeout: 60_000 }, async () => {
    await withRig({ autoAnswer: false }, async (rig) => {
      const media = new TabMedia();
      try {
        const { tab, callId } = await dial(rig, media);
        await rig.phone.waitFor(/Receiving new incoming call from /, 5000);
        assert.equal((await message(tab, 'progress')).status, 180);
        tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
        await rig.phone.waitFor(/Call \d+ with [^\n]* ended/, 5000);
        assert.equal(received(rig.phone, 'CANCEL ').length, 1);
        assert.equal((await message(tab, 'ended')).cause, 'local-hangup');
        await expectEndedOnce(rig.gw, callId, 'local-hangup');
      } finally {
        await media.close();
      }
    });
  });

  test('linphonec declines the ringing call (603): the tab gets ended rejected', { timeout: 60_000 }, async () => {
    await withRig({ autoAnswer: false }, async (rig) => {
      const media = new TabMedia();
      try {
        const { tab, callId } = await dial(rig, media);
        await rig.phone.waitFor(/Receiving new incoming call from /, 5000);
        rig.phone.send('terminate');
        const ended = await message(tab, 'ended');
        assert.deepEqual({ cause: ended.cause, sipStatus: ended.sipStatus }, { cause: 'rejected', sipStatus: 603 });
        await expectEndedOnce(rig.gw, callId, 'rejected');
      } finally {
        await media.close();
      }
    });
  });

  test('a transfer (REFER) from linphonec is refused with 405 and the call goes on', { timeout: 60_000 }, async () => {
    await withRig({}, async (rig) => {
      const media = new TabMedia();
      try {
        const { tab, callId } = await outboundCall(rig, media);
        rig.phone.send(`transfer 1 sip:+15559990000@127.0.0.1:${rig.gw.sipPort}`);
        await until(() => received(rig.phone, 'SIP/2.0 405').length === 1, 'the REFER refused');
        assert.match(received(rig.phone, 'SIP/2.0 405')[0].text, /^CSeq: \d+ REFER$/m);
        await expectTabHears(media, 'after the REFER');
        assert.ok(!tab.messages.some((m) => m.type === 'ended'));
        tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
        await expectEndedOnce(rig.gw, callId, 'local-hangup');
      } finally {
        await media.close();
      }
    });
  });
});

describe('linphonec calling in (inbound)', () => {
  test('linphonec calls the DID routed to alice: her tab rings, answers, audio both ways; BYE from linphonec', { timeout: 60_000 }, async () => {
    await withRig({ autoAnswer: false }, async (rig) => {
      const rec = join(rig.phone.dir, 'heard.wav');
      await rig.phone.recordTo(rec);
      const media = new TabMedia();
      try {
        const { tab, callId, incoming } = await inboundCall(rig, media);
        assert.match(String(incoming.from), /\+15551230000/, `the caller: ${incoming.from}`);
        await expectTabHears(media, 'answered', 2000);
        await new Promise((r) => setTimeout(r, 500));
        rig.phone.send('terminate');
        assert.equal((await message(tab, 'ended')).cause, 'remote-hangup');
        expectLinphoneHeard(rec);
        await expectEndedOnce(rig.gw, callId, 'remote-hangup');
      } finally {
        await media.close();
      }
    });
  });

  test('linphonec calls in with mandatory SRTP (RTP/SAVP, four crypto suites): AES_CM_128_HMAC_SHA1_80 taken, audio both ways; BYE from the tab reaches its Contact', { timeout: 60_000 }, async () => {
    await withRig({ autoAnswer: false, srtp: 'mandatory' }, async (rig) => {
      const rec = join(rig.phone.dir, 'heard.wav');
      await rig.phone.recordTo(rec);
      const media = new TabMedia();
      try {
        const { tab, callId } = await inboundCall(rig, media);
        const ok = received(rig.phone, 'SIP/2.0 200').find((m) => /^CSeq: \d+ INVITE$/m.test(m.text))!;
        assert.match(ok.text, /^m=audio \d+ RTP\/SAVP 0 /m);
        assert.match(ok.text, /^a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:/m);
        await expectTabHears(media, 'answered', 2000);
        await new Promise((r) => setTimeout(r, 500));
        const at = rig.phone.mark();
        tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
        await rig.phone.waitFor(/Call \d+ with [^\n]* ended \(No error\)\./, 5000, at);
        expectLinphoneHeard(rec);
        await expectEndedOnce(rig.gw, callId, 'local-hangup');
      } finally {
        await media.close();
      }
    });
  });
});

describe('linphonec speaking Opus', () => {
  for (const direction of ['outbound', 'inbound'] as const) {
    test(`${direction}: Opus on the trunk too (passed through, telephone-event/48000 offered), audio and DTMF both ways`, { timeout: 60_000 }, async () => {
      await withRig({ codecs: ['opus', 'PCMU'], autoAnswer: direction === 'outbound' }, async (rig) => {
        const rec = join(rig.phone.dir, 'heard.wav');
        await rig.phone.recordTo(rec);
        const media = new TabMedia();
        try {
          const { tab, callId } = direction === 'outbound' ? await outboundCall(rig, media) : await inboundCall(rig, media);
          const answer = direction === 'outbound'
            ? received(rig.phone, 'INVITE ')[0].text
            : rig.phone.sipMessages().find((m) => m.direction === 'received' && m.startLine.startsWith('SIP/2.0 200') && /^CSeq: \d+ INVITE$/m.test(m.text))!.text;
          assert.match(answer, /^a=rtpmap:\d+ telephone-event\/48000$/m);
          await expectTabHears(media, 'answered', 2000);
          await expectDtmfBothWays(rig, tab, callId, '8', '4');
          const at = rig.phone.mark();
          tab.ws.send(JSON.stringify({ type: 'hangup', callId }));
          await rig.phone.waitFor(/Call \d+ with [^\n]* ended \(No error\)\./, 5000, at);
          expectLinphoneHeard(rec);
          const cdr = await expectEndedOnce(rig.gw, callId, 'local-hangup');
          assert.equal(cdr.quality.mode, 'passthrough', 'Opus both sides: no transcoding');
        } finally {
          await media.close();
        }
      });
    });
  }
});
