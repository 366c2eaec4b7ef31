"""Start the Serf agent of a layerkit container (the `serf` s6 service execs into this).

Everything comes from the environment the container was started with:
  LAYERKIT_ROLE      the member's role tag (lb, web, ...)
  LAYERKIT_JOIN      comma-separated names or addresses to (re)join, in any start order
  LAYERKIT_CLUSTER   the cluster's name, kept as a tag
  LAYERKIT_SERF_KEYRING  path of the cluster's gossip keyring file (handed in at start, not baked)
  LAYERKIT_SERF_HANDLER  event handler command line (the load balancer sets it)
  LAYERKIT_SERF_FORGET   seconds after which failed and left members are forgotten (default 120)
  LAYERKIT_SERF_ADVERTISE_NET  a subnet (Swarm's overlay): advertise this container's address
                     in it, not the one Serf would pick (a Swarm task has several interfaces)

Serf's RPC port (127.0.0.1:7373) answers any local process, the web app's unprivileged user
included, and lets it list, install or rotate the gossip keys. So each start makes a fresh RPC
token, readable by root only (RPC_TOKEN_PATH); local clients pass it in the environment
(SERF_RPC_AUTH, never on a command line that `ps` shows): `python3 -m layerkit.agent.serfagent
--rpc members` runs `serf members` so.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import json
import os
import re
import secrets
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

CONFIG_PATH = Path("/run/layerkit/serf.json")
RPC_TOKEN_PATH = Path("/run/layerkit/serf-rpc-token")
SERF_EVENTS = "member-join,member-leave,member-failed,member-update,member-reap"
KEY_BYTES = 32  # Debian's serf 0.9.4 takes AES-256 keys only
FORGET_SECONDS = 120             # the default; `layerkit up --forget-after` sets another
MAX_FORGET_SECONDS = 7 * 86400   # a week: `cluster.validate_options` refuses more, too


class KeyringError(ValueError):
    """The keyring file named by LAYERKIT_SERF_KEYRING is missing or malformed."""


def node_name(hostname: str) -> str:
    """Unique per start: Serf refuses a known name coming back from a new address for a while.

    Kept to one DNS label so the load balancer's handler accepts it as a server name.
    """
    label = re.sub(r"[^a-z0-9-]+", "-", hostname.lower()).strip("-")[:48] or "node"
    return f"{label}-{secrets.token_hex(3)}"


def check_keyring(path: Path) -> None:
    """A JSON list of base64 keys of KEY_BYTES: an agent must never start unencrypted by mistake."""
    try:
        keys = json.loads(path.read_text())
    except OSError as exc:
        raise KeyringError(f"cannot read the keyring {path}: {exc.strerror}") from None
    except ValueError:
        raise KeyringError(f"keyring {path} is not JSON") from None
    if not isinstance(keys, list) or not keys:
        raise KeyringError(f"keyring {path} is not a non-empty list of keys")
    for key in keys:
        try:
            raw = base64.b64decode(key, validate=True) if isinstance(key, str) else b""
        except binascii.Error:
            raw = b""
        if len(raw) != KEY_BYTES:
            raise KeyringError(f"keyring {path} holds a key that is not {KEY_BYTES} bytes base64")


def agent_config(env: Mapping[str, str], hostname: str, rpc_token: str = ""
                 ) -> dict[str, object]:
    role = env.get("LAYERKIT_ROLE", "none")
    forget = env.get("LAYERKIT_SERF_FORGET", "").strip() or str(FORGET_SECONDS)
    if not (forget.isascii() and forget.isdigit() and 0 < int(forget) <= MAX_FORGET_SECONDS):
        raise ValueError("LAYERKIT_SERF_FORGET must be whole seconds, "
                         f"1 to {MAX_FORGET_SECONDS}: {forget!r}")
    tags = {"role": role}
    if env.get("LAYERKIT_CLUSTER"):
        tags["cluster"] = env["LAYERKIT_CLUSTER"]
    if role == "web" and env.get("WEBAPP_PORT"):
        tags["port"] = env["WEBAPP_PORT"]
    config: dict[str, object] = {
        "node_name": node_name(hostname),
        "bind": "0.0.0.0:7946",
        "rpc_addr": "127.0.0.1:7373",
        **({"rpc_auth": rpc_token} if rpc_token else {}),
        "tags": tags,
        "log_level": env.get("LAYERKIT_SERF_LOG_LEVEL", "warn"),
        # A stopped container leaves instead of failing; gone members are forgotten in minutes
        # (Serf reaps every 15 s: a member goes up to that long after its time is up).
        "leave_on_terminate": True,
        "skip_leave_on_interrupt": False,
        "reconnect_timeout": f"{forget}s",
        "tombstone_timeout": f"{forget}s",
        "retry_interval": "1s",
    }
    joins = [h.strip() for h in env.get("LAYERKIT_JOIN", "").split(",") if h.strip()]
    if joins:
        config["retry_join"] = joins
    keyring = env.get("LAYERKIT_SERF_KEYRING")
    if keyring:
        config["keyring_file"] = keyring
    handler = env.get("LAYERKIT_SERF_HANDLER")
    if handler:
        config["event_handlers"] = [f"{SERF_EVENTS}={handler}"]
    return config


def address_in(subnet: str) -> str:
    """This container's own address on `subnet`: the source the kernel picks for a route into
    it. A UDP connect only chooses the route; nothing is sent."""
    network = ipaddress.ip_network(subnet, strict=False)
    probe = network.network_address + 1
    with socket.socket(socket.AF_INET6 if network.version == 6 else socket.AF_INET,
                       socket.SOCK_DGRAM) as sock:
        sock.connect((str(probe), 7946))
        address = str(sock.getsockname()[0])
    if ipaddress.ip_address(address) not in network:
        raise ValueError(f"no interface of this container is on {subnet}")
    return address


def write_keyring(path: Path) -> None:
    """A new keyring file (mode 0600) for a cluster started without `layerkit up` (compose)."""
    key = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps([key]) + "\n")


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by its owner (root) only, in a private directory."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def rpc_env(environ: Mapping[str, str], token_path: Path = RPC_TOKEN_PATH) -> dict[str, str]:
    """`environ` plus the agent's RPC token, for a local serf client (root only can read it)."""
    env = dict(environ)
    # no token yet (no agent started): the client fails to connect, as it would anyway
    with contextlib.suppress(OSError):
        env["SERF_RPC_AUTH"] = token_path.read_text().strip()
    return env


def main() -> None:
    if sys.argv[1:2] == ["--keygen"] and len(sys.argv) == 3:
        write_keyring(Path(sys.argv[2]))
        return
    if sys.argv[1:2] == ["--rpc"]:
        os.execvpe("serf", ["serf", *sys.argv[2:]], rpc_env(os.environ))
    keyring = os.environ.get("LAYERKIT_SERF_KEYRING")
    if keyring:
        try:
            check_keyring(Path(keyring))
        except KeyringError as exc:
            # s6 restarts the service a second later: the key may still be on its way
            print(f"serfagent: {exc}; not starting without it", file=sys.stderr, flush=True)
            sys.exit(1)
    token = secrets.token_urlsafe(24)
    try:
        config = agent_config(os.environ, socket.gethostname(), token)
    except ValueError as exc:
        print(f"serfagent: {exc}; not starting", file=sys.stderr, flush=True)
        sys.exit(1)
    subnet = os.environ.get("LAYERKIT_SERF_ADVERTISE_NET", "").strip()
    if subnet:
        try:
            config["advertise"] = f"{address_in(subnet)}:7946"
        except (OSError, ValueError) as exc:
            # s6 restarts the service a second later: the interface may still be coming up
            print(f"serfagent: {exc}; not starting", file=sys.stderr, flush=True)
            sys.exit(1)
    write_private(RPC_TOKEN_PATH, token + "\n")
    write_private(CONFIG_PATH, json.dumps(config, indent=2))
    sys.stdout.flush()
    os.execvp("serf", ["serf", "agent", f"-config-file={CONFIG_PATH}"])


if __name__ == "__main__":
    main()
