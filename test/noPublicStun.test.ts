/**
 * No werift peer of ours may ask a public STUN server: werift, given no STUN server (no
 * iceServers, or an empty list), silently falls back to stun.l.google.com — a DNS lookup and
 * STUN traffic off this machine for every peer connection (../shared/peers/README.md). ICE-lite
 * peers (the gateway's own legs) gather no server-reflexive candidates and are exempt. A static
 * check over every werift `new RTCPeerConnection(` in src/, test/ and bench/: each names a STUN
 * server (`iceServers: [{ urls: … }]`) or is ICE-lite.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === 'node_modules' || name === 'fixtures' ? [] : tsFiles(path);
    return /\.ts$/.test(name) ? [path] : [];
  });
}

test('every werift peer connection in src/, test/ and bench/ names a STUN server or is ICE-lite (werift would ask stun.l.google.com)', () => {
  const offenders: string[] = [];
  let checked = 0;
  for (const file of ['src', 'test', 'bench'].flatMap(tsFiles)) {
    const text = readFileSync(file, 'utf8');
    if (!/from 'werift'/.test(text)) continue; // Chromium pages' RTCPeerConnection (page.evaluate) have no such fallback
    for (const m of text.matchAll(/new RTCPeerConnection\(/g)) {
      checked++;
      // The options object: up to its closing `})` (constructors here span a few lines).
      const options = text.slice(m.index!, text.indexOf('})', m.index!) + 2);
      if (/iceServers:\s*\[\s*\{/.test(options) || /iceLite:\s*true/.test(options)) continue;
      offenders.push(`${file}:${text.slice(0, m.index!).split('\n').length}`);
    }
  }
  assert.ok(checked >= 10, `found the peer connections (${checked})`);
  assert.deepEqual(offenders, [], 'werift peers without a STUN server of ours');
});
