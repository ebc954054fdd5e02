# Sourced by the session-3 measurement scripts: run from the repo root, output dir in $R, and the
# helpers every run uses (a load-average log line per phase, waiting for a server to answer).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
G=.venv/bin/grokd
R=${1:?out dir}
mkdir -p "$R"
load() { echo "$(date -u +%T) $1 $(cut -d' ' -f1-3 /proc/loadavg)" >> "$R/loadavg.log"; }
wait_up() { for _ in $(seq 1 480); do curl -sf "$1" >/dev/null && return 0; sleep 0.5; done; return 1; }
