#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine (run as root):
#   bash setup.sh demo   set everything up, build the images and start a 3-node cluster
#   bash setup.sh test   set everything up and run the whole test suite (lint, types, tests)
# Anything else after the first argument is passed to make as extra variables/targets.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:-demo}
shift || true

need_apt=()
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v git >/dev/null 2>&1 || need_apt+=(git)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup.sh: needs root to install: ${need_apt[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
exec make "$target" "$@"
