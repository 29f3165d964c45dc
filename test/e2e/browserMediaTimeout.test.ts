/**
 * An answered call whose browser stops sending (its UDP path died; ICE-lite does no consent
 * checks) ends as media-timeout after media.inactivityTimeoutSec, while the SIP side keeps
 * sending (the demo tone, 1001): it is the browser side's silence that ends it. A browser that
 * keeps sending keeps its call.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import type WebSocket from 'ws';
import { MediaStreamTrack, RTCPeerConnection, RTCRtpCodecParameters, RtpHeader, RtpPacket } from 'werift';
import { heldResources, startGateway } from '../support/gateway';
import { browserPeers, openTab, until } from '../support/tabs';
import { dtlsTransportOf } from '../../src/webrtc/weriftInternals';

const BASE = 23620; // 23620-23919: HTTP, SIP, demo; media 23720-23819; WebRTC 23820-23919
const SECRET = 'browser-media-timeout-secret-0123456789';
const browsers = browserPeers();

// The browser's audio on our direct SRTP path (the usual case), and on werift's own path (where
// it stays when the direct path cannot attach): both are watched.
for (const directSrtp of [true, false]) {
  test(`a browser that sends keeps its answered call; once it falls silent for inactivityTimeoutSec the call ends media-timeout, CDR written, nothing held (${directSrtp ? 'our direct SRTP path' : 'werift\'s path'})`, async () => {
    const gw = await startGateway(BASE, {
      auth: { mode: 'token', hs256Secret: SECRET },
      demo: { enabled: true, sipPort: BASE + 2 },
      media: { portRange: [BASE + 100, BASE + 199], inactivityTimeoutSec: 2 },
      webrtc: { portRange: [BASE + 200, BASE + 299] },
    }, { directSrtp });
    const sockets: WebSocket[] = [];
    let sending: NodeJS.Timeout | undefined;
    try {
      const pc = new RTCPeerConnection({
        iceServers: [{ urls: `stun:127.0.0.1:${await browsers.stunPort()}` }],
        iceUseIpv6: false,
        iceInterfaceAddresses: { udp4: '127.0.0.1' },
        codecs: { audio: [new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111 })] },
      });
      browsers.keep(pc);
      const track = new MediaStreamTrack({ kind: 'audio' });
      const transceiver = pc.addTransceiver(track, { direction: 'sendrecv' });
      await pc.setLocalDescription(await pc.createOffer());
      await until(() => pc.iceGatheringState === 'complete', 'gathering');
      const tab = await openTab(BASE, 'quiet', SECRET, sockets);
      tab.ws.send(JSON.stringify({ type: 'call', to: '1001', ref: 'quiet', sdp: pc.localDescription!.sdp }));
      await until(() => tab.messages.some((m) => m.type === 'calling'), 'the gateway\'s answer');
      await pc.setRemoteDescription({ type: 'answer', sdp: String(tab.messages.find((m) => m.type === 'calling')!.sdp) });
      await until(() => pc.connectionState === 'connected', 'ICE and DTLS up');
      await until(() => tab.messages.some((m) => m.type === 'answered'), 'the demo tone answered');
      // Audio from the browser for twice the timeout: the call stays up.
      let seq = 0;
      sending = setInterval(() => { track.writeRtp(new RtpPacket(new RtpHeader({ payloadType: 111, sequenceNumber: seq, timestamp: seq * 960, ssrc: 42 }), Buffer.from([0xf8, 0xff, 0xfe]))); seq++; }, 20);
      await new Promise((r) => setTimeout(r, 4000));
      assert.ok(!tab.messages.some((m) => m.type === 'ended'), `a sending browser keeps its call: ${JSON.stringify(tab.messages.find((m) => m.type === 'ended'))}`);
      // The audio is on the path this run is about.
      const calls = (gw.gateway['manager'] as unknown as { calls: Map<string, { browser: { direct: unknown } | null }> }).calls;
      assert.equal([...calls.values()][0].browser!.direct !== null, directSrtp, 'the browser audio on the path under test');
      // Its UDP path dies: nothing more arrives from it (not even RTCP), and it says nothing.
      clearInterval(sending);
      const socket = dtlsTransportOf(transceiver)!.iceTransport.connection.nominated!.protocol.transport!.socket as unknown as dgram.Socket;
      socket.close();
      const silentAt = Date.now();
      await until(() => tab.messages.some((m) => m.type === 'ended'), 'the call ended', 15000);
      const ended = tab.messages.find((m) => m.type === 'ended')!;
      assert.equal(ended.cause, 'media-timeout');
      const took = Date.now() - silentAt;
      assert.ok(took >= 1500 && took < 8000, `ended ${took} ms after the browser fell silent`);
      // The CDR line follows the release of the call's media.
      const cdrText = () => readFileSync(gw.cdrPath, 'utf8').trim();
      await until(() => cdrText() !== '', 'the CDR line');
      assert.equal(JSON.parse(cdrText().split('\n').pop()!).cause, 'media-timeout');
      await until(() => JSON.stringify(heldResources(gw.gateway)) === JSON.stringify({ legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 }), 'released');
    } finally {
      clearInterval(sending);
      for (const ws of sockets) ws.terminate();
      await gw.stop();
    }
  });
}
