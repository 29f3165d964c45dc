/**
 * The packaging and deployment files: Kamailio and coturn accept their configs (checked by the
 * real programs, run on loopback), the gateway's own validation accepts config.example.yaml and
 * deploy/gateway/config.yaml, the compose file mounts what exists, and certs/make-self-signed.sh
 * makes a usable localhost pair.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import pino from 'pino';
import { parse as parseYaml } from 'yaml';
import { ConfigSchema, loadConfig, validateConfig, type GatewayConfig } from '../../src/config';
import { SipUserAgent, type ServerInvite } from '../../src/sip';
import type { SipResponse } from '../../src/sip/message';

const ROOT = join(__dirname, '..', '..');
const DEPLOY = join(ROOT, 'deploy');
const KAMAILIO_CFG = join(DEPLOY, 'kamailio', 'kamailio.cfg');
const TURN_CONF = join(DEPLOY, 'coturn', 'turnserver.conf');
const GATEWAY_YAML = join(DEPLOY, 'gateway', 'config.yaml');
const EXAMPLE_YAML = join(ROOT, 'config.example.yaml');
const work = mkdtempSync(join(tmpdir(), 'gw-deploy-test-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** What docker-compose.yml gives the gateway from .env. */
const COMPOSE_SECRETS = { GATEWAY_TRUNK__PASSWORD: 'trunk-pw-for-test', GATEWAY_WEBRTC__TURNSERVERS__0__CREDENTIAL: 'turn-pw-for-test' };

function ok(r: ReturnType<typeof loadConfig>): GatewayConfig {
  if (!r.ok) assert.fail(r.errors.join('\n'));
  return r.config;
}

/** A port free for both UDP and TCP on 127.0.0.1. */
async function freePort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const udp = dgram.createSocket('udp4');
    const port = await new Promise<number>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(0, '127.0.0.1', () => resolve(udp.address().port));
    });
    const tcpFree = await new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    await new Promise<void>((r) => udp.close(() => r()));
    if (tcpFree) return port;
  }
  throw new Error('no free port');
}

/** A child process whose output is kept, stopped with SIGTERM (SIGKILL after 3 s). */
function startProcess(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  // A process group of its own: kamailio forks workers that inherit our pipes, and a main process
  // killed before it could stop them (SIGKILL under load) left them running, holding the pipes
  // open and this test file from ever exiting. stop() ends the whole group.
  const proc: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env, detached: true });
  let output = '';
  const keep = (d: Buffer) => { output = (output + d.toString()).slice(-50000); };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return {
    proc,
    get output() { return output; },
    async stop(): Promise<void> {
      const group = (signal: NodeJS.Signals) => { try { process.kill(-proc.pid!, signal); } catch { /* already gone */ } };
      if (proc.exitCode === null && proc.signalCode === null) {
        group('SIGTERM');
        const t = setTimeout(() => group('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
      group('SIGKILL'); // workers the main process left behind
      proc.stdout?.destroy();
      proc.stderr?.destroy();
    },
  };
}

async function waitFor(what: string, check: () => boolean, timeoutMs: number, onTimeout: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: timed out\n${onTimeout()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---- the gateway's own validation --------------------------------------------------------------

describe('gateway configuration files', () => {
  test('deploy/gateway/config.yaml passes loadConfig with the secrets docker-compose.yml passes', () => {
    const r = loadConfig(['--config', GATEWAY_YAML], COMPOSE_SECRETS);
    const c = ok(r);
    assert.deepEqual(r.ok && r.warnings, [], 'everything on loopback, the trunk (Kamailio) too: nothing to warn about');
    assert.equal(c.trunk?.password, COMPOSE_SECRETS.GATEWAY_TRUNK__PASSWORD);
    assert.equal(c.webrtc.turnServers[0]?.credential, COMPOSE_SECRETS.GATEWAY_WEBRTC__TURNSERVERS__0__CREDENTIAL);
    assert.equal(c.auth.mode, 'demo');
    assert.equal(c.http.host, '127.0.0.1');
    // The file itself holds no secrets.
    const raw = parseYaml(readFileSync(GATEWAY_YAML, 'utf8')) as GatewayConfig;
    assert.equal(raw.trunk?.password, undefined);
    assert.equal(raw.webrtc.turnServers[0]?.credential, undefined);
  });

  test('config.example.yaml passes loadConfig with its secrets from the environment, and not without', () => {
    const env = { GATEWAY_TRUNK__PASSWORD: 'x', GATEWAY_AUTH__HS256SECRET: 'an-hs256-secret-of-at-least-32-characters' };
    const loaded = loadConfig(['--config', EXAMPLE_YAML], env);
    const c = ok(loaded);
    assert.deepEqual(loaded.ok && loaded.warnings, [], 'the example advertises reachable addresses');
    // Bound to every address, it advertises a real one (never 0.0.0.0 in Via/Contact or c=).
    assert.equal(c.sip.host, '0.0.0.0');
    assert.equal(c.sip.advertisedHost, '203.0.113.10');
    assert.equal(c.media.host, '0.0.0.0');
    assert.equal(c.media.advertisedHost, '203.0.113.10');
    assert.equal(c.trunk?.srtp, 'mandatory', 'the example trunk uses SDES-SRTP');
    assert.ok(c.trunk?.username && c.trunk.password, 'the example trunk uses digest auth');
    assert.equal(c.trunk?.register, true);
    assert.equal(c.auth.mode, 'token');
    const r = loadConfig(['--config', EXAMPLE_YAML], {});
    assert.equal(r.ok, false);
    const raw = parseYaml(readFileSync(EXAMPLE_YAML, 'utf8')) as GatewayConfig;
    assert.equal(raw.trunk?.password, undefined);
    assert.equal(raw.auth.hs256Secret, undefined);
  });

  test('README\'s trunk example (gateway.yaml) passes loadConfig with its secrets from the environment, and warns of nothing', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const block = /```yaml\n(# gateway\.yaml\n[\s\S]*?)```/.exec(readme)?.[1];
    assert.ok(block, 'the ```yaml block starting "# gateway.yaml" in README.md');
    // Its certificate paths are /etc/gateway/*.pem: point them at a pair made here.
    const dir = join(work, 'readme-certs');
    assert.equal(spawnSync('bash', [join(ROOT, 'certs', 'make-self-signed.sh'), dir], { encoding: 'utf8' }).status, 0);
    const text = block.replaceAll('/etc/gateway/cert.pem', join(dir, 'server.cert.pem')).replaceAll('/etc/gateway/key.pem', join(dir, 'server.key.pem'));
    assert.notEqual(text, block, 'the example names its certificate files');
    const file = join(work, 'readme-gateway.yaml');
    writeFileSync(file, text);
    const r = loadConfig(['--config', file], { GATEWAY_TRUNK__PASSWORD: 'x', GATEWAY_AUTH__HS256SECRET: 'an-hs256-secret-of-at-least-32-characters' });
    const c = ok(r);
    assert.deepEqual(r.ok && r.warnings, []);
    assert.equal(c.sip.advertisedHost, '203.0.113.10');
    assert.equal(c.media.advertisedHost, '203.0.113.10');
  });

  test('config.example.yaml documents every key of the schema', () => {
    const text = readFileSync(EXAMPLE_YAML, 'utf8');
    const raw = parseYaml(text) as Record<string, unknown>;
    const missing: string[] = [];
    const walk = (schema: unknown, path: string[]) => {
      let s = schema as { def: { type: string; innerType?: unknown; element?: unknown }; shape?: Record<string, unknown> };
      while (['optional', 'default', 'prefault'].includes(s.def.type)) s = s.def.innerType as typeof s;
      if (s.def.type === 'array' && (s.def.element as typeof s).def.type === 'object') s = s.def.element as typeof s;
      if (s.def.type !== 'object' || !s.shape) {
        // A leaf: set in the file, or shown commented out ("# key:").
        let v: unknown = raw;
        for (const k of path) v = Array.isArray(v) ? (v[0] as Record<string, unknown>)?.[k] : (v as Record<string, unknown> | undefined)?.[k];
        const key = path[path.length - 1];
        if (v === undefined && !new RegExp(`^\\s*#\\s*${key}:`, 'm').test(text)) missing.push(path.join('.'));
        return;
      }
      for (const [k, v] of Object.entries(s.shape)) walk(v, [...path, k]);
    };
    walk(ConfigSchema, []);
    assert.deepEqual(missing, []);
  });

  test('--check-config accepts both files (spawned like the container does)', () => {
    const clean: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('GATEWAY_') && k !== 'PORT' && k !== 'SIP_PORT') clean[k] = v;
    for (const [file, env] of [[GATEWAY_YAML, COMPOSE_SECRETS], [EXAMPLE_YAML, { GATEWAY_TRUNK__PASSWORD: 'example-trunk-pw', GATEWAY_AUTH__HS256SECRET: 'an-hs256-secret-of-at-least-32-characters' }]] as const) {
      const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', '--config', file, '--check-config'], { cwd: ROOT, env: { ...clean, ...env }, encoding: 'utf8', timeout: 60000 });
      assert.equal(r.status, 0, `${file}: ${r.stderr}`);
      assert.match(r.stdout, /^configuration is valid\n/);
      for (const secret of Object.values(env)) assert.ok(!r.stdout.includes(secret), `${file}: secret printed`);
    }
  });

  test('the files agree: dispatcher -> gateway SIP address, gateway trunk -> Kamailio, phone -> Kamailio, TURN', () => {
    const c = ok(loadConfig(['--config', GATEWAY_YAML], COMPOSE_SECRETS));
    const kam = readFileSync(KAMAILIO_CFG, 'utf8');
    const def = (name: string) => new RegExp(`^#!trydef ${name} "?([^"\\n]+)"?$`, 'm').exec(kam)?.[1];
    const kamailioAt = `${def('SIP_ADDR')}:${def('SIP_PORT')}`;
    assert.equal(c.trunk?.uri, `sip:${kamailioAt}`);
    const list = readFileSync(join(DEPLOY, 'kamailio', 'dispatcher.list'), 'utf8');
    assert.match(list, new RegExp(`^1 sip:${c.sip.host}:${c.sip.port}$`, 'm'), 'dispatcher set 1 is the gateway');
    assert.match(kam, new RegExp(`\\$sht\\(users=>${c.trunk?.username}\\) = \\$env\\(GATEWAY_TRUNK_PASSWORD\\)`), 'Kamailio knows the trunk user');
    const accounts = readFileSync(join(DEPLOY, 'baresip', 'accounts'), 'utf8');
    const phone = /^<sip:(\w+)@([^>]+)>.*auth_pass=([^;\s]+)/m.exec(accounts);
    assert.ok(phone, 'baresip account line');
    assert.equal(phone[2], kamailioAt);
    assert.match(kam, new RegExp(`\\$sht\\(users=>${phone[1]}\\) = "${phone[3]}"`), 'Kamailio knows the phone with the same password');
    assert.ok(c.dialplan.allow.some((p) => new RegExp(`^${p.replace(/\?/g, '.').replace(/\*/g, '.*')}$`).test(phone[1])), 'the gateway may call the phone');
    const turn = readFileSync(TURN_CONF, 'utf8');
    const port = /^listening-port=(\d+)$/m.exec(turn)?.[1];
    const ip = /^listening-ip=(\S+)$/m.exec(turn)?.[1];
    assert.deepEqual(c.webrtc.stunServers, [`stun:${ip}:${port}`]);
    assert.ok([c.webrtc.turnServers[0].urls].flat().every((u) => u.startsWith(`turn:${ip}:${port}`)));
  });
});

// ---- Kamailio --------------------------------------------------------------------------------

describe('Kamailio with deploy/kamailio/kamailio.cfg', () => {
  test('kamailio -c accepts the file as it is', () => {
    const r = spawnSync('kamailio', ['-c', '-f', KAMAILIO_CFG], { encoding: 'utf8', timeout: 30000 });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout + r.stderr, /config file ok/);
    assert.match(r.stdout + r.stderr, /udp: 127\.0\.0\.1 \[127\.0\.0\.1\]:5060/);
  });

  describe('running on a loopback test port', () => {
    const TRUNK_PW = 'trunk-pw-for-kamailio-test';
    const logger = pino({ level: 'silent' });
    const gwConfig = ok(loadConfig(['--config', GATEWAY_YAML], { GATEWAY_TRUNK__PASSWORD: TRUNK_PW }));
    const accounts = readFileSync(join(DEPLOY, 'baresip', 'accounts'), 'utf8');
    const [, phoneUser, phonePassword] = /^<sip:(\w+)@[^>]+>.*auth_pass=([^;\s]+)/m.exec(accounts)!;
    let kamailio: ReturnType<typeof startProcess>;
    let port = 0;
    /** Stands in for the gateway (the dispatcher's destination). */
    const gateway = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger });
    /** Stands in for the baresip phone. */
    const phone = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger });
    const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';

    before(async () => {
      await gateway.start();
      await phone.start();
      port = await freePort();
      // The real file; only the port, the dispatcher list (this test's gateway) and the control
      // socket are set from the command line, the way the file says it can be.
      const list = join(work, 'dispatcher.list');
      writeFileSync(list, `1 sip:127.0.0.1:${gateway.boundAddresses[0].port}\n`);
      const ctl = `unix:${join(work, 'kamailio_ctl')}`;
      kamailio = startProcess('kamailio', ['-f', KAMAILIO_CFG, '-DD', '-E', '-Y', work, '-w', work, '-A', `SIP_PORT=${port}`, '-A', `DS_LIST="${list}"`, '-A', `CTL_SOCKET="${ctl}"`], { ...process.env, GATEWAY_TRUNK_PASSWORD: TRUNK_PW });
      await waitFor('kamailio start', () => {
        if (kamailio.proc.exitCode !== null) throw new Error(`kamailio exited:\n${kamailio.output.slice(-3000)}`);
        try { execFileSync('kamcmd', ['-s', ctl, 'core.uptime'], { stdio: 'pipe' }); return true; } catch { return false; }
      }, 15000, () => kamailio.output.slice(-3000));
    });

    after(async () => {
      await kamailio?.stop();
      await gateway.stop();
      await phone.stop();
    });

    function invite(from: SipUserAgent, user: string, credentials?: { username: string; password: string }): Promise<SipResponse> {
      return new Promise((resolve, reject) => {
        const inv = from.invite({ requestUri: `sip:${user}@127.0.0.1:${port}`, from: { uri: `sip:caller@127.0.0.1:${port}` }, sdp: SDP, credentials });
        inv.once('rejected', (res: SipResponse) => resolve(res));
        inv.once('accepted', () => reject(new Error('unexpected 2xx')));
        inv.once('failed', (err: Error) => reject(err));
      });
    }

    function nextInvite(ua: SipUserAgent): Promise<ServerInvite> {
      return new Promise((resolve) => ua.once('invite', resolve));
    }

    async function register(user: string, password: string): Promise<{ state: string; status: number; stop(): Promise<void> }> {
      const reg = phone.register({ registrar: `sip:127.0.0.1:${port}`, aor: `sip:${user}@127.0.0.1:${port}`, credentials: { username: user, password }, expires: 120 });
      const settled = new Promise<void>((r) => reg.on('state', (s) => { if (s === 'registered' || s === 'failed') r(); }));
      reg.start();
      await settled;
      return { state: reg.state, status: reg.lastStatus, stop: () => reg.stop() };
    }

    test('REGISTER needs the phone\'s digest credentials (deploy/baresip/accounts)', async () => {
      const wrong = await register(phoneUser, 'not-the-password');
      assert.equal(wrong.state, 'failed');
      assert.equal(wrong.status, 401);
      await wrong.stop();
      const reg = await register(phoneUser, phonePassword);
      assert.equal(reg.state, 'registered', `status ${reg.status}\n${kamailio.output.slice(-2000)}`);
      // Stays registered for the next tests.
    });

    test('an INVITE without credentials is challenged with 407 (realm gateway.lab)', async () => {
      const res = await invite(gateway, phoneUser);
      assert.equal(res.status, 407);
      assert.match(res.header('proxy-authenticate') ?? '', /realm="gateway\.lab"/);
    });

    test('gateway -> phone: the trunk credentials from the gateway config pass and the call reaches the registered phone', async () => {
      const ringing = nextInvite(phone);
      const result = invite(gateway, phoneUser, { username: gwConfig.trunk!.username!, password: gwConfig.trunk!.password! });
      const inbound = await ringing;
      assert.equal(inbound.request.uri.startsWith(`sip:${phoneUser}@127.0.0.1:`), true, inbound.request.uri);
      assert.ok(inbound.request.headers('record-route').length > 0, 'record-routed');
      inbound.reject(486, 'Busy Here');
      assert.equal((await result).status, 486);
      const wrong = await invite(gateway, phoneUser, { username: gwConfig.trunk!.username!, password: 'wrong' });
      assert.equal(wrong.status, 407);
    });

    test('phone -> gateway: a user that is not registered goes to the dispatcher set; gateway -> unknown user is 404, not a loop', async () => {
      const arriving = nextInvite(gateway);
      const result = invite(phone, 'alice', { username: phoneUser, password: phonePassword });
      const atGateway = await arriving;
      assert.match(atGateway.request.uri, /^sip:alice@127\.0\.0\.1/);
      atGateway.reject(480, 'Temporarily Unavailable');
      assert.equal((await result).status, 480);
      const res = await invite(gateway, 'alice', { username: gwConfig.trunk!.username!, password: gwConfig.trunk!.password! });
      assert.equal(res.status, 404);
    });
  });
});

// ---- coturn ----------------------------------------------------------------------------------

function stunRequest(type: number, attrs: Buffer = Buffer.alloc(0)): { msg: Buffer; txid: Buffer } {
  const txid = randomBytes(12);
  const header = Buffer.alloc(20);
  header.writeUInt16BE(type, 0);
  header.writeUInt16BE(attrs.length, 2);
  header.writeUInt32BE(0x2112a442, 4);
  txid.copy(header, 8);
  return { msg: Buffer.concat([header, attrs]), txid };
}

function stunAttrs(msg: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let off = 20;
  while (off + 4 <= msg.length) {
    const t = msg.readUInt16BE(off);
    const len = msg.readUInt16BE(off + 2);
    out.set(t, msg.subarray(off + 4, off + 4 + len));
    off += 4 + len + ((4 - (len % 4)) % 4);
  }
  return out;
}

async function stunExchange(port: number, msg: Buffer, txid: Buffer): Promise<{ reply: Buffer; localPort: number }> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  try {
    return await new Promise((resolve, reject) => {
      const timer = setInterval(() => sock.send(msg, port, '127.0.0.1'), 250);
      const giveUp = setTimeout(() => { clearInterval(timer); reject(new Error('no STUN reply')); }, 5000);
      sock.on('message', (reply) => {
        if (reply.length >= 20 && reply.subarray(8, 20).equals(txid)) {
          clearInterval(timer);
          clearTimeout(giveUp);
          resolve({ reply, localPort: sock.address().port });
        }
      });
      sock.send(msg, port, '127.0.0.1');
    });
  } finally {
    sock.close();
  }
}

describe('coturn with deploy/coturn/turnserver.conf', () => {
  let turn: ReturnType<typeof startProcess>;
  let port = 0;

  before(async () => {
    port = await freePort();
    // The file as it is; the port, relay range, pid file and user db moved for the test, and the
    // TURN user given on the command line as docker-compose.yml does.
    turn = startProcess('turnserver', ['-c', TURN_CONF, `--listening-port=${port}`, `--min-port=${port + 1}`, `--max-port=${port + 20}`, `--pidfile=${join(work, 'turnserver.pid')}`, `--userdb=${join(work, 'turndb')}`, '--user=lab:turn-pw-for-test']);
    await waitFor('turnserver start', () => {
      if (turn.proc.exitCode !== null) throw new Error(`turnserver exited:\n${turn.output.slice(-3000)}`);
      return /Total General servers/.test(turn.output);
    }, 15000, () => turn.output.slice(-3000));
  });

  after(async () => {
    await turn?.stop();
  });

  test('the file is read without complaints and its addresses are used', () => {
    assert.match(turn.output, /Default realm: gateway\.lab/, 'realm from the file');
    assert.doesNotMatch(turn.output, /Bad configuration format|CONFIG ERROR|ERROR: /);
    assert.match(turn.output, /Listener address to use: 127\.0\.0\.1/);
    assert.match(turn.output, /Relay address to use: 127\.0\.0\.1/);
  });

  test('answers a STUN binding request on 127.0.0.1 with our address', async () => {
    const { msg, txid } = stunRequest(0x0001);
    const { reply, localPort } = await stunExchange(port, msg, txid);
    assert.equal(reply.readUInt16BE(0), 0x0101, 'Binding success response');
    const xma = stunAttrs(reply).get(0x0020);
    assert.ok(xma, 'XOR-MAPPED-ADDRESS');
    assert.equal(xma.readUInt16BE(2) ^ 0x2112, localPort);
    assert.equal([...xma.subarray(4, 8)].map((b, i) => b ^ [0x21, 0x12, 0xa4, 0x42][i]).join('.'), '127.0.0.1');
  });

  test('TURN needs long-term credentials in realm gateway.lab (an unauthenticated Allocate gets 401)', async () => {
    const requestedTransport = Buffer.from([0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
    const { msg, txid } = stunRequest(0x0003, requestedTransport);
    const { reply } = await stunExchange(port, msg, txid);
    assert.equal(reply.readUInt16BE(0), 0x0113, 'Allocate error response');
    const attrs = stunAttrs(reply);
    const err = attrs.get(0x0009)!;
    assert.equal(err[2] * 100 + err[3], 401);
    assert.equal(attrs.get(0x0014)?.toString(), 'gateway.lab');
    assert.ok(attrs.get(0x0015)?.length, 'NONCE');
  });
});

// ---- docker-compose.yml and Dockerfile ---------------------------------------------------------

describe('docker-compose.yml and Dockerfile', () => {
  const compose = parseYaml(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')) as { services: Record<string, { volumes?: string[]; command?: string[] | string; environment?: Record<string, string>; build?: unknown; network_mode?: string }> };

  test('services gateway, coturn, kamailio, baresip mount their configuration from deploy/, which exists', () => {
    assert.deepEqual(Object.keys(compose.services).sort(), ['baresip', 'coturn', 'gateway', 'kamailio']);
    const wanted: Record<string, string[]> = {
      gateway: ['./deploy/gateway/config.yaml'],
      kamailio: ['./deploy/kamailio/kamailio.cfg', './deploy/kamailio/dispatcher.list'],
      coturn: ['./deploy/coturn/turnserver.conf'],
      baresip: ['./deploy/baresip/config', './deploy/baresip/accounts'],
    };
    for (const [name, files] of Object.entries(wanted)) {
      const mounts = (compose.services[name].volumes ?? []).map((v) => v.split(':')[0]);
      for (const f of files) assert.ok(mounts.includes(f), `${name} mounts ${f}`);
      for (const m of mounts.filter((x) => x.startsWith('.'))) assert.ok(existsSync(join(ROOT, m)), `${name}: ${m} exists`);
    }
    assert.equal(compose.services.kamailio.volumes?.find((v) => v.startsWith('./deploy/kamailio/dispatcher.list'))?.split(':')[1], /^#!trydef DS_LIST "([^"]+)"$/m.exec(readFileSync(KAMAILIO_CFG, 'utf8'))?.[1], 'the dispatcher list is mounted where the cfg reads it');
  });

  test('the gateway runs like the Dockerfile says, with its secrets from the environment', () => {
    const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    assert.match(dockerfile, /^FROM node:20-bookworm-slim/m);
    assert.match(dockerfile, /npm ci/);
    assert.match(dockerfile, /npm run build/);
    assert.match(dockerfile, /^CMD \["node", "dist\/src\/main\.js", "--config", "\/etc\/gateway\/config\.yaml"\]$/m);
    const gw = compose.services.gateway;
    assert.deepEqual(gw.command, ['node', 'dist/src/main.js', '--config', '/etc/gateway/config.yaml']);
    assert.ok(gw.volumes?.includes('./deploy/gateway/config.yaml:/etc/gateway/config.yaml:ro'));
    // Every variable compose sets is a real setting.
    const env = Object.fromEntries(Object.keys(gw.environment ?? {}).map((k) => [k, 'x']));
    const r = loadConfig(['--config', GATEWAY_YAML], env);
    assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
    assert.deepEqual(Object.keys(env).sort(), Object.keys(COMPOSE_SECRETS).sort());
    assert.ok(Object.keys(compose.services.kamailio.environment ?? {}).every((k) => readFileSync(KAMAILIO_CFG, 'utf8').includes(`$env(${k})`)));
  });

  /**
   * `docker compose` (the CLI plugin) where it is installed, else Debian's docker-compose 1.29,
   * which test/run.sh installs: both validate a file against the compose schema without an
   * engine (`config`).
   */
  const composeCli = (): string[] => (spawnSync('docker', ['compose', 'version']).status === 0 ? ['docker', 'compose'] : ['docker-compose']);
  const composeConfig = (file: string, env: NodeJS.ProcessEnv) => {
    const [cmd, ...args] = composeCli();
    const r = spawnSync(cmd, [...args, '-f', file, 'config', '--quiet'], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, TRUNK_PASSWORD: '', TURN_PASSWORD: '', ...env } });
    assert.ok(!r.error, `${cmd} cannot run (test/run.sh installs docker-compose): ${r.error?.message}`);
    return r;
  };

  test('docker compose config accepts the file with the two secrets .env gives, and refuses it without them', () => {
    const r = composeConfig(join(ROOT, 'docker-compose.yml'), { TRUNK_PASSWORD: 'x', TURN_PASSWORD: 'y' });
    assert.equal(r.status, 0, r.stderr);
    const bare = composeConfig(join(ROOT, 'docker-compose.yml'), { TRUNK_PASSWORD: '', TURN_PASSWORD: 'y' });
    assert.notEqual(bare.status, 0);
    assert.match(bare.stderr, /set TRUNK_PASSWORD in \.env/);
  });

  test('docker compose config refuses a file with an unknown option (the check is real)', () => {
    const bad = join(work, 'compose-bad.yml');
    writeFileSync(bad, readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8').replace(/^services:\n/m, 'services:\n  bogus:\n    imagez: nothing\n'));
    const r = composeConfig(bad, { TRUNK_PASSWORD: 'x', TURN_PASSWORD: 'y' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /imagez/);
  });
});

// ---- certs/make-self-signed.sh -----------------------------------------------------------------

describe('certs/make-self-signed.sh', () => {
  const script = join(ROOT, 'certs', 'make-self-signed.sh');
  const dir = join(work, 'certs');
  const run = (env: NodeJS.ProcessEnv = {}) => {
    const r = spawnSync('bash', [script, dir], { encoding: 'utf8', env: { ...process.env, ...env } });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };

  test('makes a key and a certificate for localhost, 127.0.0.1 and ::1; a second run keeps them', () => {
    assert.match(run(), /wrote/);
    const key = join(dir, 'server.key.pem');
    const cert = join(dir, 'server.cert.pem');
    const x = new X509Certificate(readFileSync(cert));
    assert.match(x.subjectAltName ?? '', /DNS:localhost/);
    assert.match(x.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
    assert.ok(x.checkHost('localhost'));
    assert.ok(x.checkIP('127.0.0.1'));
    assert.equal(statSync(key).mode & 0o077, 0, 'the key is private');
    const before = [readFileSync(key, 'utf8'), readFileSync(cert, 'utf8'), statSync(cert).mtimeMs];
    assert.match(run(), /keeping/);
    assert.deepEqual([readFileSync(key, 'utf8'), readFileSync(cert, 'utf8'), statSync(cert).mtimeMs], before);
    assert.match(run({ FORCE: '1' }), /wrote/);
    assert.notEqual(readFileSync(key, 'utf8'), before[0]);
  });

  test('the pair passes the gateway\'s validation as http.tls and serves TLS to a client that trusts it', async () => {
    const certFile = join(dir, 'server.cert.pem');
    const keyFile = join(dir, 'server.key.pem');
    if (!existsSync(certFile)) run();
    const r = validateConfig({ http: { tls: { certFile, keyFile } } });
    assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
    // A key from another pair is caught before the server starts.
    const otherDir = join(work, 'other-certs');
    assert.equal(spawnSync('bash', [script, otherDir], { encoding: 'utf8' }).status, 0);
    const mismatch = validateConfig({ http: { tls: { certFile, keyFile: join(otherDir, 'server.key.pem') } } });
    assert.deepEqual(mismatch.ok ? [] : mismatch.errors, [`config error: http.tls.keyFile: ${join(otherDir, 'server.key.pem')} is not the private key of http.tls.certFile ${certFile}`]);
    const server = tls.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (s) => s.end('hello'));
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
    const port = (server.address() as net.AddressInfo).port;
    try {
      for (const servername of ['localhost', undefined]) {
        const text = await new Promise<string>((resolve, reject) => {
          const s = tls.connect({ host: '127.0.0.1', port, servername, ca: readFileSync(certFile), checkServerIdentity: (_h, c) => tls.checkServerIdentity(servername ?? '127.0.0.1', c) }, () => undefined);
          let got = '';
          s.on('data', (d) => { got += d.toString(); });
          s.on('end', () => resolve(got));
          s.on('error', reject);
        });
        assert.equal(text, 'hello');
      }
    } finally {
      server.close();
    }
  });
});
