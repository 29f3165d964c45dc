#!/usr/bin/env bash
# The project's test command (npm test). It runs on a fresh Debian machine as it is: the real
# peers the tests talk to (Chromium, baresip, Linphone's linphonec, sipp, Kamailio, coturn, sox,
# dnsmasq) are installed first
# when missing, never skipped; so is docker-compose (only its `config` check of docker-compose.yml
# runs: there is no Docker engine here) unless the Docker CLI's compose plugin is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v baresip >/dev/null || need+=(baresip)
command -v linphonec >/dev/null || need+=(linphone-cli)
command -v sipp >/dev/null || need+=(sip-tester)
command -v kamailio >/dev/null || need+=(kamailio)
command -v turnserver >/dev/null || need+=(coturn)
command -v sox >/dev/null || need+=(sox)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
{ docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null; } || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing test peers: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" fonts-liberation >/dev/null
  else
    echo "The tests need real peers that are not installed. Run once:" >&2
    echo "  sudo apt-get install -y --no-install-recommends chromium baresip linphone-cli sip-tester kamailio coturn sox dnsmasq-base docker-compose fonts-liberation" >&2
    exit 1
  fi
fi

# Type check everything and build the browser bundles the end-to-end tests load.
npm run --silent build

if [ $# -gt 0 ]; then files=("$@"); else mapfile -t files < <(find test -name '*.test.ts' | sort); fi
# One test file at a time: the end-to-end files start real peers on fixed loopback ports.
exec node --import tsx --test --test-concurrency=1 --test-timeout=180000 --test-reporter=spec "${files[@]}"
