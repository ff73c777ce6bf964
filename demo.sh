#!/usr/bin/env bash
# Placeholder until master/slave lands: runs a single goto process on :8080.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/twistd ] || { python3 -m venv .venv && .venv/bin/pip install --quiet . ; }
exec .venv/bin/twistd -n --pidfile= goto --http 8080 --file store.json
