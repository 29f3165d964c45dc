import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../support/tempDir';

export interface Kamailio {
  port: number;
  /** `kamcmd ul.dump` output: the registered AoRs and contacts. */
  registrations(): string;
  stop(): Promise<void>;
}

/**
 * A real Kamailio (Debian package) as registrar/proxy on loopback with digest auth for REGISTER
 * (recipe: ../shared/peers/kamailio). Users live in an htable; INVITEs to a registered user are
 * record-routed to its contact. min_expires is lowered so tests can watch refreshes.
 *
 * With `outboundProxy`, it is also an SBC in front of a trunk: a new request whose Request-URI
 * is not Kamailio itself must carry a pre-loaded loose Route to it (RFC 3261 §8.1.2; 400
 * otherwise); an INVITE is then record-routed, and every such request but REGISTER (which it
 * takes as registrar, as an SBC registering on a trunk's behalf) relayed by its Request-URI.
 */
export async function startKamailio(o: { port: number; users: Record<string, string>; outboundProxy?: boolean }): Promise<Kamailio> {
  const dir = tempDir('kamailio-');
  const run = join(dir, 'run');
  mkdirSync(run);
  const modules = ['/usr/lib/x86_64-linux-gnu/kamailio/modules/', '/usr/lib/kamailio/modules/'].find((p) => existsSync(p)) ?? '/usr/lib/x86_64-linux-gnu/kamailio/modules/';
  const users = Object.entries(o.users).map(([u, p]) => `  $sht(users=>${u}) = "${p}";`).join('\n');
  writeFileSync(join(dir, 'kamailio.cfg'), `#!KAMAILIO
debug=2
log_stderror=yes
children=2
listen=udp:127.0.0.1:${o.port}
auto_aliases=no
alias="127.0.0.1:${o.port}"
mpath="${modules}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "htable.so"
loadmodule "ctl.so"
loadmodule "jsonrpcs.so"
loadmodule "kex.so"
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 1)
modparam("htable", "htable", "users=>size=4;")
modparam("ctl", "binrpc", "unix:${run}/kamailio_ctl")
event_route[htable:mod-init] {
${users}
}
request_route {
  if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
  if (has_totag()) {
    if (loose_route()) { t_relay(); exit; }
    if (is_method("ACK")) { if (t_check_trans()) t_relay(); exit; }
    sl_send_reply("404", "Not here"); exit;
  }
  if (is_method("CANCEL")) { if (t_check_trans()) t_relay(); exit; }
  t_check_trans();
${o.outboundProxy ? `  if (!uri == myself) {
    if (!search("^Route: *<sip:127[.]0[.]0[.]1:${o.port};lr>")) { sl_send_reply("400", "Expected a pre-loaded Route to this proxy"); exit; }
    remove_hf("Route");
    if (!is_method("REGISTER")) {
      if (is_method("INVITE")) record_route();
      t_relay();
      exit;
    }
  }
` : ''}  if (is_method("REGISTER")) {
    $var(pw) = $sht(users=>$fU);
    if ($var(pw) == $null || !pv_auth_check("$fd", "$var(pw)", "0", "1")) {
      auth_challenge("$fd", "0");
      exit;
    }
    consume_credentials();
    if (!save("location")) sl_reply_error();
    exit;
  }
  if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
  record_route();
  t_relay();
}
`);
  // Its own process group: Kamailio forks worker children, and a SIGKILL to the main process
  // alone leaves them running with our stdout/stderr pipes open, so this process never exits
  // (a test file then hangs until the runner's timeout). stop() signals the whole group.
  const proc: ChildProcess = spawn('kamailio', ['-f', join(dir, 'kamailio.cfg'), '-DD', '-E', '-Y', run, '-P', join(run, 'k.pid')], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const signalGroup = (sig: NodeJS.Signals) => { try { process.kill(-proc.pid!, sig); } catch { /* already gone */ } };
  let output = '';
  proc.stdout!.on('data', (d) => { output = (output + d.toString()).slice(-20000); });
  proc.stderr!.on('data', (d) => { output = (output + d.toString()).slice(-20000); });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const ctl = `unix:${run}/kamailio_ctl`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`kamailio exited: ${output.slice(-1500)}`);
    try { execFileSync('kamcmd', ['-s', ctl, 'core.uptime'], { stdio: 'pipe', timeout: 5000 }); break; } catch { /* not up yet */ }
    if (Date.now() > deadline) { signalGroup('SIGKILL'); throw new Error(`kamailio did not start: ${output.slice(-1500)}`); }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port: o.port,
    registrations: () => execFileSync('kamcmd', ['-s', ctl, 'ul.dump'], { encoding: 'utf8', timeout: 5000 }),
    async stop() {
      if (proc.exitCode === null) {
        signalGroup('SIGTERM');
        const t = setTimeout(() => signalGroup('SIGKILL'), 2000);
        await exited;
        clearTimeout(t);
      }
      // Whatever of the group is left goes too, and its pipes are no longer ours.
      signalGroup('SIGKILL');
      proc.stdout?.destroy();
      proc.stderr?.destroy();
    },
  };
}
