"""`python3 -m layerkit.agent.lbstatus` in the load balancer: Serf's and HAProxy's views as JSON.

`layerkit status` runs it through the engine (exec), so it needs neither the stats password nor
a route to the container. Names are passed through as data; the host decides how to show them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from typing import Any

from .lbsystem import ADMIN_SOCKET, TIMEOUT, admin_command
from .serfagent import rpc_env

BACKEND = "webapps"


def parse_stat_csv(text: str, backend: str = BACKEND) -> list[dict[str, str]]:
    """The servers of `backend` from HAProxy's `show stat` CSV: name, address, status, check."""
    lines = text.lstrip("# ").splitlines()
    rows = csv.DictReader(io.StringIO("\n".join(ln for ln in lines if ln.strip())))
    servers = []
    for row in rows:
        if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        servers.append({"name": row.get("svname", ""), "address": row.get("addr", ""),
                        "status": row.get("status", ""), "check": row.get("check_status", ""),
                        "sessions": row.get("stot", "")})
    return servers


def serf_members() -> list[dict[str, Any]]:
    try:
        done = subprocess.run(("serf", "members", "-format", "json"), capture_output=True,
                              text=True, timeout=TIMEOUT, check=False, env=rpc_env(os.environ))
    except subprocess.TimeoutExpired:
        return []
    if done.returncode != 0:
        return []
    try:
        members = json.loads(done.stdout).get("members") or []
    except (ValueError, AttributeError):
        return []
    return [{"name": m.get("name"), "address": m.get("addr"), "status": m.get("status"),
             "role": (m.get("tags") or {}).get("role")} for m in members if isinstance(m, dict)]


def main() -> int:
    try:
        servers = parse_stat_csv(admin_command(ADMIN_SOCKET, "show stat"))
        haproxy_ok = True
    except OSError:
        servers, haproxy_ok = [], False
    json.dump({"members": serf_members(), "servers": servers, "haproxy": haproxy_ok},
              sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
