#!/usr/bin/env bash
# Try goto from a fresh clone: sets up .venv (pip install -e ., as scripts/test does), starts a master (--rpc, :8081) and a
# slave of it (:8080) on 127.0.0.1, says what to try, and stops both on Enter, Ctrl-C, SIGTERM or
# end of input (so `./demo.sh < /dev/null` starts, prints, then stops both cleanly).
#
# Environment:
#   GOTO_MASTER_PORT, GOTO_SLAVE_PORT  ports (default 8081 and 8080)
#   GOTO_VENV     an existing virtualenv with goto installed: used as is, nothing is installed
#   GOTO_DEMO_DIR where the data file and the logs go (default demo-data/, which git ignores)
#   PYTHON        the interpreter that creates .venv (default python3)
# Relative paths in GOTO_VENV and GOTO_DEMO_DIR are taken from the directory demo.sh is run in.
set -euo pipefail
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
[ -z "${GOTO_VENV:-}" ] || GOTO_VENV="$(absolute "$GOTO_VENV")"
[ -z "${GOTO_DEMO_DIR:-}" ] || GOTO_DEMO_DIR="$(absolute "$GOTO_DEMO_DIR")"
cd "$(dirname "$0")"

MASTER_PORT="${GOTO_MASTER_PORT:-8081}"
SLAVE_PORT="${GOTO_SLAVE_PORT:-8080}"
DEMO_DIR="${GOTO_DEMO_DIR:-demo-data}"
START_TIMEOUT=20 # seconds for both processes to answer
STOP_TIMEOUT=10  # seconds for each to stop on SIGTERM before it is killed

for port in "$MASTER_PORT" "$SLAVE_PORT"; do
    [[ "$port" =~ ^[0-9]{1,5}$ ]] && ((10#$port >= 1 && 10#$port <= 65535)) ||
        { echo "demo.sh: not a port number (1 to 65535): $port" >&2; exit 2; }
done
if ((10#$MASTER_PORT == 10#$SLAVE_PORT)); then
    echo "demo.sh: GOTO_MASTER_PORT and GOTO_SLAVE_PORT are both $MASTER_PORT; give them two ports" >&2
    exit 2
fi

# True when the virtualenv's twistd would find the goto plugin (an import error hides it silently).
has_goto() {
    [ -x "$1/bin/twistd" ] && "$1/bin/python" - <<'EOF' 2>/dev/null
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins

raise SystemExit(0 if any(p.tapname == "goto" for p in getPlugins(IServiceMaker)) else 1)
EOF
}

if [ -n "${GOTO_VENV:-}" ]; then
    VENV="$GOTO_VENV"
    has_goto "$VENV" || { echo "demo.sh: GOTO_VENV=$VENV has no twistd with the goto plugin" >&2; exit 1; }
else
    VENV=.venv
    if ! has_goto "$VENV"; then
        echo "Setting up $VENV (pip install -e .)..."
        [ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
        # Editable, as scripts/test installs it: a change to the code is what the next run starts.
        # A pip new enough for that first (a Python 3.9 venv may come with pip 20).
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e . --config-settings editable_mode=compat
        has_goto "$VENV" || { echo "demo.sh: installed, but twistd does not find the goto plugin" >&2; exit 1; }
    fi
fi
PY="$VENV/bin/python"
TWISTD="$VENV/bin/twistd"

# twistd logs a port it cannot listen on and runs on regardless: check first, and say which variable to set.
"$PY" - "$MASTER_PORT" GOTO_MASTER_PORT "$SLAVE_PORT" GOTO_SLAVE_PORT <<'EOF'
import socket
import sys

for port, variable in zip(sys.argv[1::2], sys.argv[2::2]):
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted does
        try:
            probe.bind(("127.0.0.1", int(port)))
        except OSError as exc:
            sys.exit(f"demo.sh: cannot use port {port} ({exc.strerror}); set {variable} to another one")
EOF

mkdir -p "$DEMO_DIR"
MASTER_PID=""
SLAVE_PID=""

# Stop one child: SIGTERM (twistd writes every accepted record, then exits), SIGKILL if it hangs.
stop_child() {
    local pid="$1" name="$2" waited=0
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((STOP_TIMEOUT * 10)) ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "demo.sh: the $name did not stop on SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    trap - EXIT INT TERM HUP
    # The slave first, so it never logs its master as gone.
    stop_child "$SLAVE_PID" slave
    stop_child "$MASTER_PID" master
    if [ -n "$MASTER_PID" ]; then
        echo "Stopped. The data file and the logs are in $DEMO_DIR/."
    fi
}
trap cleanup EXIT
trap 'echo; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Children listen on loopback only, and the master's /RPC2 wants a secret all the same, as it
# should wherever it runs (README, "Security"): a new one each run, readable by this user only.
SECRET="$DEMO_DIR/rpc-secret"
# A new file each run (a file left from before, or made by someone else, keeps its own mode).
rm -f "$SECRET"
(umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$SECRET")
"$TWISTD" -n --pidfile= goto --rpc --http "tcp:$MASTER_PORT:interface=127.0.0.1" \
    --host "localhost:$MASTER_PORT" --file "$DEMO_DIR/store.json" --rpc-secret-file "$SECRET" \
    >"$DEMO_DIR/master.log" 2>&1 </dev/null &
MASTER_PID=$!
"$TWISTD" -n --pidfile= goto --master "127.0.0.1:$MASTER_PORT" --rpc-secret-file "$SECRET" \
    --http "tcp:$SLAVE_PORT:interface=127.0.0.1" --host "localhost:$SLAVE_PORT" \
    >"$DEMO_DIR/slave.log" 2>&1 </dev/null &
SLAVE_PID=$!

# Wait until both answer GET / (each child is checked to be alive, so a failed start ends this early).
"$PY" - "$START_TIMEOUT" "$MASTER_PID:$MASTER_PORT:$DEMO_DIR/master.log" \
    "$SLAVE_PID:$SLAVE_PORT:$DEMO_DIR/slave.log" <<'EOF'
import os
import sys
import time
import urllib.request

deadline = time.monotonic() + float(sys.argv[1])
for child in sys.argv[2:]:
    pid, port, log = child.split(":", 2)
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        try:
            os.kill(int(pid), 0)  # still running? (it is the shell's child, not ours: no waitpid)
        except ProcessLookupError:
            with open(log, errors="replace") as output:
                sys.exit(f"demo.sh: the process for port {port} exited; {log} ends:\n{output.read()[-2000:]}")
        if time.monotonic() > deadline:
            sys.exit(f"demo.sh: nothing answers on port {port} after {sys.argv[1]} s; see {log}")
        time.sleep(0.1)
EOF

# Add one URL through the slave, to show the answer and a key that redirects.
SHORT_URL="$("$PY" - "$SLAVE_PORT" <<'EOF'
import sys
import urllib.parse
import urllib.request

query = urllib.parse.urlencode({"url": "https://twisted.org/"})
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/add?{query}", timeout=5) as answer:
    print(answer.read().decode().strip())
EOF
)"

cat <<EOF

goto is running (master pid $MASTER_PID, slave pid $SLAVE_PID):
  slave  http://localhost:$SLAVE_PORT/   the front end: open it in a browser to shorten a URL
  master http://localhost:$MASTER_PORT/   holds $DEMO_DIR/store.json, serves the slave at /RPC2

Try:
  curl 'http://localhost:$SLAVE_PORT/add?url=https://example.com/'
  curl -i $SHORT_URL      # 302, Location: https://twisted.org/
Logs: $DEMO_DIR/master.log, $DEMO_DIR/slave.log

EOF
if [ -t 0 ]; then
    echo "Press Enter or Ctrl-C to stop both."
else
    echo "Standard input is not a terminal: stopping both at end of input."
fi
# Returns on a line, at end of input, or (through the traps) on a signal.
read -r _ || true
exit 0
