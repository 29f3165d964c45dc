import { after, afterEach, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { launchChromium } from '../peers/chromium';
import { runSipp, udpPortBound } from '../peers/sipp';
import { startGateway } from '../support/gateway';
import { writeToneWav } from '../support/audio';
import { openPhone, remotePeakHz, closePages } from '../support/page';
import type { Page } from 'playwright-core';
import { pcmaEncode, pcmuEncode } from '../../src/media/codecs';
import { tempDir } from '../support/tempDir';

/**
 * Early media: the trunk (sipp) answers 183 with SDP and plays an announcement (a 600 Hz tone)
 * before refusing with 486 — the way carriers play "the number you called is busy". The page
 * must hear it while the call is still ringing, then end as busy.
 */
const BASE = 20300;
const work = tempDir('gw-early-');
let gw: Awaited<ReturnType<typeof startGateway>>;
let browser: Awaited<ReturnType<typeof launchChromium>>;

/** 183 with SDP and a tone, then 486; `media` is the answer's m-line and rtpmaps, `pt` the tone's payload type. */
function scenario(toneFile: string, media = 'm=audio [media_port] RTP/AVP 0\na=rtpmap:0 PCMU/8000', pt = 0): string {
  const head = '[last_Via:]\n[last_From:]\n[last_To:];tag=[pid]SIPpTag[call_number]\n[last_Call-ID:]\n[last_CSeq:]\n';
  return `<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="early media then busy">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 183 Session Progress
${head}Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
${media}
a=sendrecv
]]></send>
  <nop><action><exec rtp_stream="${toneFile},-1,${pt}"/></action></nop>
  <pause milliseconds="5000"/>
  <send><![CDATA[
SIP/2.0 486 Busy Here
${head}Content-Length: 0
]]></send>
  <recv request="ACK"/>
</scenario>
`;
}

before(async () => {
  const micWav = join(work, 'mic.wav');
  writeToneWav(micWav, { hz: 700, sampleRate: 48000, seconds: 30 });
  gw = await startGateway(BASE, {
    trunk: { uri: `sip:127.0.0.1:${BASE + 10}`, codecs: ['PCMU', 'PCMA'], sourceCidrs: ['127.0.0.1/32'] },
    demo: { enabled: true, sipPort: BASE + 2 },
    dialplan: { allow: ['+1555*'] },
  });
  browser = await launchChromium({ fakeMicWav: micWav });
});

afterEach(() => closePages(browser));
after(async () => {
  await browser?.close();
  await gw?.stop();
});

/**
 * sipp as the trunk, playing a 600 Hz tone (10 s of raw mu-law, or A-law, for its rtp_stream)
 * with the scenario `xml` makes of the tone file; a page dials through it. sipp is killed after
 * the test.
 */
async function dialSipp(t: TestContext, name: string, xml: (toneFile: string) => string, law: 'PCMU' | 'PCMA' = 'PCMU'): Promise<{ page: Page; sipp: ReturnType<typeof runSipp> }> {
  const pcm = new Int16Array(8000 * 10).map((_, i) => Math.round(9000 * Math.sin((2 * Math.PI * 600 * i) / 8000)));
  const toneFile = join(work, `${name}-tone600.${law === 'PCMU' ? 'ul' : 'al'}`);
  writeFileSync(toneFile, law === 'PCMU' ? pcmuEncode(pcm) : pcmaEncode(pcm));
  const scenarioFile = join(work, `${name}.xml`);
  writeFileSync(scenarioFile, xml(toneFile));
  const sipp = runSipp({ scenario: { file: scenarioFile }, port: BASE + 10, mediaPort: BASE + 20 });
  t.after(() => sipp.kill());
  await udpPortBound(BASE + 10);
  const page = await openPhone(browser, gw.url);
  await page.getByTestId('dial-input').fill('+15551230000');
  await page.getByTestId('call-button').click();
  return { page, sipp };
}

test('183 with SDP: the page hears the announcement while ringing, then the call ends busy', async (t) => {
  const { page, sipp } = await dialSipp(t, 'early', scenario);
  await page.getByTestId('call-status').filter({ hasText: 'ringing' }).waitFor({ timeout: 10000 });
  await new Promise((r) => setTimeout(r, 500));
  const heard = await remotePeakHz(page, 1000);
  assert.ok(Math.abs(heard.peakHz - 600) < 25, `early media heard while ringing: ${heard.peakHz} Hz`);
  assert.match(await page.getByTestId('call-status').textContent() ?? '', /ringing/);
  await page.getByTestId('call-status').filter({ hasText: 'ended (busy 486)' }).waitFor({ timeout: 10000 }).catch(async (e) => {
    throw new Error(`page shows "${await page.getByTestId('call-status').textContent()}": ${e}`);
  });
  const r = await sipp.done;
  assert.equal(r.code, 0, `sipp: ${r.output.slice(-1200)}\n${r.errors}`);
  await page.close();
  assert.equal(gw.gateway.activeCalls, 0);
});

/**
 * An answer may list several formats, and its sender may use any of them (RFC 3264 §6.1): this
 * trunk answers PCMU first and PCMA second, then sends PCMA. The gateway takes PCMU as the
 * call's codec and converts the PCMA it receives, so the page hears the tone.
 */
test('a trunk that answers "PCMU PCMA" and then sends PCMA: the page hears it', async (t) => {
  const both = (toneFile: string) => scenario(toneFile, 'm=audio [media_port] RTP/AVP 0 8\na=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000', 8);
  const { page, sipp } = await dialSipp(t, 'otherlaw', both, 'PCMA');
  await page.getByTestId('call-status').filter({ hasText: 'ringing' }).waitFor({ timeout: 10000 });
  await new Promise((r) => setTimeout(r, 500));
  const heard = await remotePeakHz(page, 1000);
  assert.ok(Math.abs(heard.peakHz - 600) < 25, `the PCMA stream heard while ringing: ${heard.peakHz} Hz`);
  await page.getByTestId('call-status').filter({ hasText: 'ended (busy 486)' }).waitFor({ timeout: 10000 });
  const r = await sipp.done;
  assert.equal(r.code, 0, `sipp: ${r.output.slice(-1200)}\n${r.errors}`);
  await page.close();
});

/**
 * A PBX that sends its 183 reliably (Require: 100rel, as Asterisk does for a UAC that lists
 * 100rel) with SDP and an announcement, holds its 200 until the PRACK, and answers with a 200
 * without SDP (pjsip's way, RFC 6337 §3.1.1): the call must go up on the 183's answer and stay
 * up, the page hearing the far end after the answer, until the PBX hangs up.
 */
function reliableScenario(toneFile: string): string {
  // The INVITE's headers, saved: after the PRACK, sipp's [last_*] would be the PRACK's.
  const head = 'Via:[$via]\nFrom:[$caller]\nTo:[$callee];tag=[pid]SIPpTag[call_number]\n[last_Call-ID:]\nCSeq:[$cseq]\nContact: <sip:[local_ip]:[local_port];transport=[transport]>\n';
  return `<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="reliable 183, 200 without SDP">
  <recv request="INVITE" crlf="true" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" assign_to="via"/>
      <ereg regexp=".*" search_in="hdr" header="CSeq:" assign_to="cseq"/>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="caller"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="callee"/>
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 183 Session Progress
${head}Require: 100rel
RSeq: 1
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv
]]></send>
  <recv request="PRACK">
    <action><ereg regexp="^ *1 [0-9]+ INVITE" search_in="hdr" header="RAck:" check_it="true" assign_to="rack"/></action>
  </recv>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <nop><action><exec rtp_stream="${toneFile},-1,0"/></action></nop>
  <pause milliseconds="1500"/>
  <send><![CDATA[
SIP/2.0 200 OK
${head}Content-Length: 0
]]></send>
  <recv request="ACK"/>
  <pause milliseconds="6000"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From:[$callee];tag=[pid]SIPpTag[call_number]
To:[$caller]
[last_Call-ID:]
CSeq: 1 BYE
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200"/>
  <Reference variables="rack"/>
</scenario>
`;
}

test('reliable 183 with SDP, PRACKed, then a 200 without SDP (Asterisk/pjsip): the call is answered on the 183\'s answer and stays up with audio until the PBX hangs up', async (t) => {
  const { page, sipp } = await dialSipp(t, 'reliable', reliableScenario);
  await page.getByTestId('call-status').filter({ hasText: 'answered' }).waitFor({ timeout: 10000 }).catch(async (e) => {
    const status = await page.getByTestId('call-status').textContent();
    sipp.kill();
    const r = await sipp.done;
    throw new Error(`page shows "${status}": ${e}\nsipp: ${r.output.slice(-1200)}\n${r.errors}`);
  });
  await new Promise((r) => setTimeout(r, 500));
  const heard = await remotePeakHz(page, 1000);
  assert.ok(Math.abs(heard.peakHz - 600) < 25, `the far end heard after the answer: ${heard.peakHz} Hz`);
  assert.match(await page.getByTestId('call-status').textContent() ?? '', /answered/, 'still up');
  await page.getByTestId('call-status').filter({ hasText: 'ended (remote-hangup)' }).waitFor({ timeout: 15000 });
  const r = await sipp.done;
  assert.equal(r.code, 0, `sipp: ${r.output.slice(-1200)}\n${r.errors}`);
  await page.close();
  assert.equal(gw.gateway.activeCalls, 0);
});
