"""Serf members into backends, validated strictly.

Member names, addresses and tags come from the network: any agent that holds the cluster's key
can call itself anything. Only a member whose name is a plain hostname label, whose address is
an IP address and whose tags are all plain tokens becomes a backend; everything else is rejected
with a reason, so nothing unchecked ever reaches haproxy.cfg.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DEFAULT_PORT = 3000
WEB_ROLE = "web"

# One DNS label (RFC 1123): letters, digits, inner hyphens; also a valid HAProxy server name.
_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Tag keys and values: short plain tokens, nothing a config or a log line could be bent with.
_TAG_RE = re.compile(r"[A-Za-z0-9._-]{0,63}")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_BRACKETED_RE = re.compile(r"\[([0-9A-Fa-f:.]+)\]:[0-9]{1,5}")


@dataclass(frozen=True)
class Backend:
    name: str
    address: str  # normalised by `ipaddress`
    port: int

    @property
    def endpoint(self) -> str:
        """`addr:port`, IPv6 in brackets as HAProxy expects."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Rejected:
    name: str    # repr() of what was sent: safe to log on one line
    reason: str


@dataclass(frozen=True)
class Membership:
    backends: tuple[Backend, ...]
    rejected: tuple[Rejected, ...]


class MembersError(ValueError):
    """`serf members` printed something that is not its JSON document."""


def parse_members(text: str) -> list[dict[str, Any]]:
    """The member objects of `serf members -format json` (`"members": null` means none)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise MembersError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MembersError("not a JSON object")
    members = doc.get("members")
    if members is None:
        return []
    if not isinstance(members, list):
        raise MembersError("'members' is not a list")
    return [m for m in members if isinstance(m, dict)]


def valid_name(name: object) -> bool:
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def parse_address(addr: object) -> str | None:
    """The IP address of Serf's `addr` (`ip:port`, `[v6]:port` or a bare IP), else None."""
    if not isinstance(addr, str) or not addr or len(addr) > 64:
        return None
    host = addr
    bracketed = _BRACKETED_RE.fullmatch(addr)
    if bracketed:
        host = bracketed.group(1)
    elif addr.count(":") == 1:
        host, _, port = addr.partition(":")
        if not _PORT_RE.fullmatch(port):
            return None
    if "%" in host:
        return None  # an IPv6 zone id may carry any text, newlines included: never in a config
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.is_unspecified or ip.is_multicast:
        return None
    return str(ip)


def _tags_problem(tags: object) -> str | None:
    if not isinstance(tags, dict):
        return "tags are not an object"
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            return "a tag is not a string"
        if not _TAG_RE.fullmatch(key) or not _TAG_RE.fullmatch(value):
            return f"tag {key!r} is not a plain token"
    return None


def _port(tags: dict[str, str], default: int) -> int | None:
    raw = tags.get("port")
    if raw is None or raw == "":
        return default
    if not _PORT_RE.fullmatch(raw):
        return None
    port = int(raw)
    return port if 0 < port < 65536 else None


def check_member(member: dict[str, Any], default_port: int = DEFAULT_PORT
                 ) -> Backend | Rejected:
    """One member as a backend, or why it is rejected."""
    name = member.get("name")
    shown = repr(name)[:80]
    if not valid_name(name):
        return Rejected(shown, "name is not a plain hostname")
    assert isinstance(name, str)
    address = parse_address(member.get("addr"))
    if address is None:
        return Rejected(shown, "address is not an IP address")
    tags = member.get("tags")
    problem = _tags_problem(tags)
    if problem is not None:
        return Rejected(shown, problem)
    assert isinstance(tags, dict)
    port = _port(tags, default_port)
    if port is None:
        return Rejected(shown, "port tag is not a port number")
    return Backend(name, address, port)


def select_backends(members: Iterable[dict[str, Any]], *, role: str = WEB_ROLE,
                    default_port: int = DEFAULT_PORT) -> Membership:
    """Alive members with `role`, validated; sorted by name so a render is deterministic."""
    backends: dict[str, Backend] = {}
    rejected: list[Rejected] = []
    for member in members:
        if member.get("status") not in (None, "alive"):
            continue
        tags = member.get("tags")
        if not isinstance(tags, dict) or tags.get("role") != role:
            continue
        result = check_member(member, default_port)
        if isinstance(result, Rejected):
            rejected.append(result)
        elif result.name in backends:
            rejected.append(Rejected(repr(result.name), "duplicate name"))
        else:
            backends[result.name] = result
    ordered = tuple(backends[n] for n in sorted(backends))
    return Membership(ordered, tuple(rejected))
