#!/usr/bin/env bash
# Reliability report: runs the fault tests (tests/tests/tunnel_faults.rs: kills and restarts
# under load) and the packet-loss tests (tests/tests/tunnel_loss.rs: 1% and 5% UDP loss between
# connector and edge) in one go, and turns the lines they print that start with `[` into a
# Markdown table in bench/results/reliability.md.
#
#   bench/reliability.sh [--out FILE]
#
# Last line: reliability faults=<tests run> failed_tests=<tests failed>
# Exit status: 0 when every test passed.
set -uo pipefail

OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$ROOT/bench/results/reliability.md}"
mkdir -p "$(dirname "$OUT")"
LOG="$(mktemp /tmp/ringway-reliability.XXXXXX)"
trap 'rm -f "$LOG"' EXIT

CMD="cargo test -p ringway-tests --test tunnel_faults --test tunnel_loss -- --nocapture --test-threads 1"
STARTED="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
T0="$(date +%s)"
(cd "$ROOT" && $CMD) 2>&1 | tee "$LOG"
RC=${PIPESTATUS[0]}
SECS=$(( $(date +%s) - T0 ))

# Tests run and failed, from libtest's `test result: ... N passed; M failed; ...` lines (one per
# test binary).
read -r PASSED FAILED < <(awk '
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i + 1) ~ /^passed;?$/) p += $i
      if ($(i + 1) ~ /^failed;?$/) f += $i
    }
  }
  END { print p + 0, f + 0 }' "$LOG")
RUN=$((PASSED + FAILED))
if [ "$RC" -ne 0 ] && [ "$FAILED" -eq 0 ]; then
  # Nonzero exit without a failed test: the build (or a test binary) broke.
  FAILED=1
fi
# libtest lists the failed tests, indented, under the last `failures:` of each binary.
FAILED_NAMES="$(awk '
  /^failures:$/ { inlist = 1; next }
  /^test result:/ { inlist = 0 }
  inlist && /^    [A-Za-z0-9_:]+$/ { print $1 }' "$LOG" | sort -u | tr '\n' ' ' | sed 's/ $//')"
CPU="$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -n 1)"

{
  echo "# Reliability: faults under load and packet loss"
  echo
  echo "- Date: $STARTED (took ${SECS}s)"
  echo "- Machine: $(nproc) cores${CPU:+, $CPU}, $(uname -sm)"
  echo "- Command: \`$CMD\`"
  echo "- Tests: $RUN run, $FAILED failed${FAILED_NAMES:+ ($FAILED_NAMES)}"
  echo
  echo "Each row is one line a test printed (\`[name] ...\`): \`sent\` is \`sent=\` or"
  echo "\`requests=\`; everything else on the line (recovery times, throughput, drop counts) is in"
  echo "the last column."
  echo
  echo "| fault | sent | ok | failed | recovery / notes |"
  echo "|---|---|---|---|---|"
  awk '
    # With --nocapture the first line a test prints follows `test NAME ... ` on the same line.
    { line = $0; sub(/^test [^ ]+ \.\.\. /, "", line) }
    line ~ /^\[[^]]*\]/ {
      i = index(line, "]")
      fault = substr(line, 2, i - 2)
      n = split(substr(line, i + 1), w, " ")
      sent = ""; ok = ""; failed = ""; notes = ""
      for (k = 1; k <= n; k++) {
        if (w[k] ~ /^(sent|requests)=/ && sent == "") sent = substr(w[k], index(w[k], "=") + 1)
        else if (w[k] ~ /^ok=/ && ok == "") ok = substr(w[k], 4)
        else if (w[k] ~ /^failed=/ && failed == "") failed = substr(w[k], 8)
        else notes = notes (notes == "" ? "" : " ") w[k]
      }
      if (length(notes) > 200) notes = substr(notes, 1, 200) "..."
      gsub(/\|/, "\\|", notes)
      gsub(/\|/, "\\|", fault)
      printf "| %s | %s | %s | %s | %s |\n", fault, sent, ok, failed, notes
    }' "$LOG"
} > "$OUT"

echo "wrote $OUT"
echo "reliability faults=$RUN failed_tests=$FAILED"
[ "$RC" -eq 0 ] && [ "$FAILED" -eq 0 ]
