/**
 * Helpers for tests that drive a gateway through its WebSocket signaling: browser tabs played by
 * ws clients, and browser offers made by werift peer connections.
 */
import { after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { MediaStreamTrack, RTCPeerConnection, RTCRtpCodecParameters } from 'werift';
import { mintToken } from '../../src/edge';
import { startStunResponder } from '../../bench/stunResponder';

export type Msg = Record<string, any>;
export interface Tab { ws: WebSocket; messages: Msg[] }

/** Polls `cond` (which may be async) every 20 ms; throws naming `what` after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A tab signed in as `user` on the gateway at http://127.0.0.1:`base` (token auth with `secret`):
 * hello answered with welcome, every message kept in order. The socket goes into `sockets` for
 * the caller to close.
 */
export async function openTab(base: number, user: string, secret: string, sockets: WebSocket[]): Promise<Tab> {
  const ws = new WebSocket(`ws://127.0.0.1:${base}/ws`, { headers: { Origin: `http://127.0.0.1:${base}` } });
  sockets.push(ws);
  const messages: Msg[] = [];
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  ws.send(JSON.stringify({ type: 'hello', version: 1, token: await mintToken({ sub: user }, { hs256Secret: secret }, { ttlSec: 300 }) }));
  await until(() => messages.some((m) => m.type === 'welcome' || m.type === 'error'), `welcome for ${user}`);
  assert.ok(messages.some((m) => m.type === 'welcome'), `hello accepted: ${JSON.stringify(messages)}`);
  return { ws, messages };
}

/**
 * A werift peer connection as a browser's (STUN on loopback at `stunPort`, never a public server),
 * with Opus or (a browser that offers only that) PCMU. It goes into `peers` for the caller to close.
 */
export function newBrowserPeer(stunPort: number, peers: RTCPeerConnection[], codec: 'opus' | 'pcmu' = 'opus'): RTCPeerConnection {
  const pc = new RTCPeerConnection({
    iceServers: [{ urls: `stun:127.0.0.1:${stunPort}` }],
    iceUseIpv6: false,
    iceInterfaceAddresses: { udp4: '127.0.0.1' },
    codecs: { audio: [codec === 'opus'
      ? new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111 })
      : new RTCRtpCodecParameters({ mimeType: 'audio/PCMU', clockRate: 8000, channels: 1, payloadType: 0 })] },
  });
  peers.push(pc);
  return pc;
}

/** The local description of `pc` once its candidates are all gathered. */
export async function gatheredSdp(pc: RTCPeerConnection): Promise<string> {
  await new Promise<void>((r) => { if (pc.iceGatheringState === 'complete') r(); else pc.iceGatheringStateChange.subscribe((s) => { if (s === 'complete') r(); }); });
  return pc.localDescription!.sdp;
}

/** A browser peer's offer (newBrowserPeer), sending audio, with its candidates. */
export async function browserOffer(stunPort: number, peers: RTCPeerConnection[], codec: 'opus' | 'pcmu' = 'opus'): Promise<string> {
  const pc = newBrowserPeer(stunPort, peers, codec);
  pc.addTransceiver(new MediaStreamTrack({ kind: 'audio' }), { direction: 'sendrecv' });
  await pc.setLocalDescription(await pc.createOffer());
  return gatheredSdp(pc);
}

/**
 * A test file's browser stand-ins: werift offers (browserOffer) pointed at a loopback STUN
 * responder of the file's own. The peer connections (those made here and those handed to
 * `keep`) and the responder are closed when the file's tests are done.
 */
export function browserPeers(): { offer(codec?: 'opus' | 'pcmu'): Promise<string>; stunPort(): Promise<number>; keep(pc: RTCPeerConnection): void } {
  const stun = startStunResponder();
  const peers: RTCPeerConnection[] = [];
  after(async () => {
    await Promise.all(peers.map((pc) => pc.close().catch(() => undefined)));
    (await stun).close();
  });
  return {
    offer: async (codec = 'opus') => browserOffer((await stun).port, peers, codec),
    stunPort: async () => (await stun).port,
    keep: (pc) => { peers.push(pc); },
  };
}
