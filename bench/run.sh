#!/usr/bin/env bash
# `npm run bench`. Some figures need tools of the machine: tcpdump (a packet's time through the
# gateway, timed on the wire), sipp (SIP call set-ups) and Chromium (browser set-up). As root
# they are installed when missing, as the test command does; otherwise those figures are
# reported as not measured, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v sipp >/dev/null || need+=(sip-tester)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  echo "installing benchmark tools: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

npm run --silent build
exec node --expose-gc dist/bench/run.js "$@"
