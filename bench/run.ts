/**
 * `npm run bench`: prints the gateway's performance figures, all measured in this one run on
 * this machine (ratios are between figures of the same run). Nothing here is pass/fail.
 */
import os from 'node:os';
import { micro } from './micro';
import { mediaLoad } from './mediaLoad';
import { sipLoad, sippAvailable } from './sipLoad';

const fmt = (n: number, d = 1) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  console.log(`# webrtc-sip-gateway benchmarks — ${new Date().toISOString()}`);
  console.log(`# ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, Node ${process.version}, ${os.platform()} ${os.release()}\n`);

  console.log('## Per operation (this process, one core)\n');
  console.log('| operation | µs/op | ops/s | note |\n|---|---:|---:|---|');
  for (const r of await micro()) console.log(`| ${r.name} | ${fmt(r.usPerOp, 2)} | ${fmt(r.opsPerSec, 0)} | ${r.note ?? ''} |`);

  console.log('\n## Media plane: N concurrent calls, real UDP on loopback, 5 s each\n');
  console.log('| mode | calls | CPU ms per call-second | share of one core | to SIP delivered | to browser delivered | event-loop delay p99 |\n|---|---:|---:|---:|---:|---:|---:|');
  const perCall: Record<string, number> = {};
  for (const calls of quick ? [1, 20] : [1, 50, 100]) {
    for (const mode of ['transcode', 'passthrough'] as const) {
      const r = await mediaLoad(calls, mode, quick ? 2 : 5);
      perCall[`${mode}-${calls}`] = r.cpuMsPerCallSecond;
      console.log(`| ${mode} | ${calls} | ${fmt(r.cpuMsPerCallSecond, 2)} | ${fmt(r.coreShare * 100)} % | ${fmt(r.toSipDelivered * 100)} % | ${fmt(r.toBrowserDelivered * 100)} % | ${fmt(r.loopDelayP99Ms)} ms |`);
    }
  }
  const n = quick ? 20 : 50;
  const ratio = perCall[`transcode-${n}`] / perCall[`passthrough-${n}`];
  console.log(`\nAt ${n} calls, transcoding costs ${fmt(ratio)}x the CPU of PCMU pass-through; one core carries about ${fmt(1000 / perCall[`transcode-${n}`], 0)} transcoded calls (browser-side DTLS-SRTP in werift not included).`);

  console.log('\n## SIP call setups (sipp UAC -> our user agent, INVITE/200/ACK/BYE)\n');
  if (!sippAvailable()) {
    console.log('skipped: sipp (Debian package sip-tester) is not installed');
  } else {
    console.log('| target calls/s | calls | succeeded | failed | achieved calls/s | our CPU µs per call |\n|---:|---:|---:|---:|---:|---:|');
    for (const rate of quick ? [100] : [100, 400, 800]) {
      const r = await sipLoad(rate, quick ? 300 : rate * 5);
      console.log(`| ${r.targetRate} | ${r.calls} | ${r.succeeded} | ${r.failed} | ${fmt(r.achievedCps)} | ${fmt(r.cpuUsPerCall, 0)} |`);
    }
  }
}

main().catch((err) => { console.error(err); process.exitCode = 1; });
