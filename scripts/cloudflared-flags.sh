#!/usr/bin/env bash
# Regenerates docs/cloudflared-flags.txt from a cloudflared binary's help output.
#
#   scripts/cloudflared-flags.sh PATH/TO/cloudflared [OUT]
#
# `cloudflared tunnel --help` lists the tunnel-level flags (the same list is accepted before
# `tunnel`, at the global level); `cloudflared tunnel run --help` lists run's. Flags cloudflared
# hides from its help cannot be read from it: the lines marked `hidden` in the current file are
# kept as they are.
set -euo pipefail
bin=${1:?usage: $0 PATH/TO/cloudflared [OUT]}
out=${2:-$(dirname "$0")/../docs/cloudflared-flags.txt}

# One "NAME ALIAS..." line per flag in urfave/cli's help: `--name value, --alias value  text`.
# `tunnel run --help` also lists its parent's flags (under "TUNNEL COMMAND OPTIONS"), which
# `run` itself refuses: only its "SUBCOMMAND OPTIONS" section is read.
flags_of() {
  "$bin" "$@" --help 2>&1 | own_section | sed -n 's/^ *\(--*[a-zA-Z0-9][^ ,]*\( value\)\?\(, --*[a-zA-Z0-9][^ ,]*\( value\)\?\)*\) .*/\1/p' |
    sed 's/ value//g; s/,//g; s/\(^\| \)--*/\1/g' | grep -v '^help\b' | grep -v '^version\b' || true
}

own_section() {
  awk '/^TUNNEL COMMAND OPTIONS:/ { skip = 1; next } /^[A-Z ]+:$/ { skip = 0 } !skip'
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
  flags_of tunnel | sed 's/^/global /'
  flags_of tunnel | sed 's/^/tunnel /'
  flags_of tunnel run | sed 's/^/run /'
  grep ' hidden$' "$out" || true
} | sort -u -k1,1 -k2,2 > "$tmp"

{
  sed -n '1,/^# flags cloudflared hides/p' "$out"
  for level in global tunnel run; do grep "^$level " "$tmp" | sort -k2,2; done
} > "$out.new"
mv "$out.new" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") lines) from $("$bin" --version 2>&1 | head -1)"
