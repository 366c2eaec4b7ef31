"""What a cluster is asked to be: options, their checks, labels, names and its secrets.

`up` keeps the options `scale` needs in the network's labels (bind, port, forget time, images,
limits), so a later `scale` or a recreated load balancer is made the way `up` made the rest.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields

from layerkit import __version__
from layerkit.agent.members import DEFAULT_HEALTH, health_problem
from layerkit.agent.serfagent import FORGET_SECONDS, MAX_FORGET_SECONDS
from layerkit.errors import UsageError

PROJECT_LABEL = "org.layerkit.project"
ROLE_LABEL = "org.layerkit.role"
KEYRING_PATH = "/etc/layerkit/serf-keyring.json"
PASSWORD_PATH = "/etc/layerkit/stats-password"  # noqa: S105 - a path, not a password
MAX_SCALE = 64
_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,23}")
_SIZE_RE = re.compile(r"([1-9][0-9]{0,5})([kmg])")
_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MIN_MEMORY = 32 << 20   # below this Serf and Python alone do not fit
MAX_PIDS = 32768


@dataclass(frozen=True)
class ClusterOptions:
    name: str = "demo"
    bind: str = "127.0.0.1"
    port: int = 8080  # 0: the engine picks a free one
    stats_port: int = 0
    lb_image: str = f"layerkit/haproxy:{__version__}"
    web_image: str = f"layerkit/webapp:{__version__}"
    web_port: int = 0  # 0: the image's own (its WEBAPP_PORT, else the one port it exposes)
    health: str = DEFAULT_HEALTH  # the path HAProxy checks on each web app (200 = healthy)
    forget_after: int = FORGET_SECONDS  # until Serf forgets a failed or left member (+ <= 15 s)
    memory: str = "256m"     # per container: its processes are killed by the kernel beyond it
    pids: int = 256          # processes and threads per container
    log_size: str = "10m"    # Docker's json-file log of a container: rotated at this size...
    log_files: int = 3       # ...keeping this many files


# the fields `scale` and a recreated load balancer take from the network's labels
_SAVED = ("bind", "port", "stats_port", "forget_after", "lb_image", "web_image", "web_port",
          "health", "memory", "pids", "log_size", "log_files")
_LABEL = {key: f"org.layerkit.{key.replace('_', '-')}" for key in _SAVED} | {
    "forget_after": "org.layerkit.serf-forget"}


@dataclass(frozen=True)
class Secrets:
    keyring: bytes
    password: str | None


def validate_options(opts: ClusterOptions) -> None:
    validate_name(opts.name)
    try:
        ipaddress.ip_address(opts.bind)
    except ValueError:
        raise UsageError(f"--bind {opts.bind!r} is not an IP address") from None
    for flag, port in (("--port", opts.port), ("--stats-port", opts.stats_port)):
        if not 0 <= port <= 65535:
            raise UsageError(f"{flag} {port} is not a port number (0 = any free port)")
    validate_web(opts.web_port, opts.health)
    if opts.port and opts.port == opts.stats_port:
        raise UsageError(f"--port and --stats-port are both {opts.port}",
                         hint="give them different ports (0 = any free port)")
    if not 0 < opts.forget_after <= MAX_FORGET_SECONDS:
        raise UsageError(f"--forget-after {opts.forget_after} must be 1 to "
                         f"{MAX_FORGET_SECONDS} seconds")
    validate_limits(opts.memory, opts.pids, opts.log_size, opts.log_files)


def validate_web(web_port: int, health: str) -> None:
    """The web apps' port and health-check path, the same for one engine and for Swarm."""
    if not 0 <= web_port <= 65535:
        raise UsageError(f"--web-port {web_port} is not a port number "
                         "(0 = the one the image declares)")
    problem = health_problem(health)
    if problem:
        raise UsageError(f"--health {health[:80]!r} {problem}")


def validate_limits(memory: str, pids: int, log_size: str, log_files: int) -> None:
    """The per-container limits, the same for one engine and for Swarm."""
    if size_bytes(memory) < MIN_MEMORY:
        raise UsageError(f"--memory {memory!r} must be a size like 256m, at least "
                         f"{MIN_MEMORY >> 20}m")
    if size_bytes(log_size) < 1 << 10 or not 1 <= log_files <= 100:
        raise UsageError(f"--log-size {log_size!r} must be a size like 10m and "
                         "--log-files 1 to 100")
    if not 32 <= pids <= MAX_PIDS:
        raise UsageError(f"--pids {pids} must be 32 to {MAX_PIDS}")


def size_bytes(text: str) -> int:
    """`256m`-style sizes (k, m, g) in bytes; 0 when malformed."""
    found = _SIZE_RE.fullmatch(text.strip().lower())
    return int(found.group(1)) * _SIZE_UNITS[found.group(2)] if found else 0


def validate_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise UsageError(f"cluster name {name!r} must be 1-24 of a-z, 0-9, '-', "
                         "starting with a letter")


def validate_scale(n: int) -> None:
    if not 0 <= n <= MAX_SCALE:
        raise UsageError(f"scale {n} is out of range 0..{MAX_SCALE}")


def validate_wait(seconds: float) -> None:
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"--wait {seconds} must be a number of seconds, 0 or more "
                         "(0: do not wait)")


def labels(name: str, role: str) -> dict[str, str]:
    return {PROJECT_LABEL: name, ROLE_LABEL: role}


def network_name(name: str) -> str:
    return f"layerkit-{name}"


def new_secrets() -> Secrets:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    return Secrets(json.dumps([key]).encode(), secrets.token_urlsafe(18))


def options_labels(opts: ClusterOptions) -> dict[str, str]:
    """The network's labels that keep `opts` for later commands."""
    return {_LABEL[key]: str(getattr(opts, key)) for key in _SAVED}


def options_from_labels(name: str, kept: Mapping[str, str]) -> ClusterOptions:
    """The options kept by `options_labels`; the default for any missing or not valid."""
    values: dict[str, object] = {}
    types = {f.name: f.type for f in fields(ClusterOptions)}
    for key in _SAVED:
        raw = kept.get(_LABEL[key], "")
        if types[key] == "int":
            if raw.isascii() and raw.isdigit():
                values[key] = int(raw)
        elif raw:
            values[key] = raw
    opts = ClusterOptions(name=name, **values)  # type: ignore[arg-type]
    try:
        validate_options(opts)
    except UsageError:
        return _defaults_for_invalid(opts)
    return opts


def _defaults_for_invalid(opts: ClusterOptions) -> ClusterOptions:
    """Each kept value that does not pass alone is replaced by its default."""
    default = ClusterOptions(name=opts.name)
    values: dict[str, object] = {}
    for key in _SAVED:
        candidate = ClusterOptions(name=opts.name, **{key: getattr(opts, key)})
        try:
            validate_options(candidate)
            values[key] = getattr(opts, key)
        except UsageError:
            values[key] = getattr(default, key)
    return ClusterOptions(name=opts.name, **values)  # type: ignore[arg-type]
