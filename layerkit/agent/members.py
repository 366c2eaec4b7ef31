"""Serf members into backends, validated strictly.

Member names, addresses and tags come from the network: any agent that holds the cluster's key
can call itself anything and advertise any address. Only a member whose name is a plain hostname
label, whose address is an IP address inside the cluster's own network (not its gateway, not the
load balancer's own, not another member's) and whose tags are all plain tokens becomes a
backend; everything else is rejected with a reason, so nothing unchecked ever reaches HAProxy.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PORT = 3000
DEFAULT_HEALTH = "/healthz"
WEB_ROLE = "web"

# One DNS label (RFC 1123): letters, digits, inner hyphens; also a valid HAProxy server name.
_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Tag keys and values: short plain tokens, nothing a config or a log line could be bent with.
_TAG_RE = re.compile(r"[A-Za-z0-9._-]{0,63}")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_BRACKETED_RE = re.compile(r"\[([0-9A-Fa-f:.]+)\]:[0-9]{1,5}")
# The web apps' health-check path, written into `option httpchk`: a URL path and query made of
# characters that need no quoting in HAProxy's config (no space, quote, backslash or '#').
_HEALTH_RE = re.compile(r"/[A-Za-z0-9._~%/?&=+,:@!*-]{0,200}")


@dataclass(frozen=True)
class Backend:
    name: str
    address: str  # normalised by `ipaddress`
    port: int

    @property
    def address_port(self) -> tuple[str, int]:
        return self.address, self.port

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
    known_web: int = 0  # members with the role in any state: 0 while the agent has not joined


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Scope:
    """Where a backend may be: inside one of `networks` (the load balancer's own), and none of
    the gateways or the load balancer's own addresses. No networks: no check (unit tests)."""

    networks: tuple[IPNetwork, ...] = ()
    gateways: frozenset[str] = field(default_factory=frozenset)
    own: frozenset[str] = field(default_factory=frozenset)

    def problem(self, address: str) -> str | None:
        ip = ipaddress.ip_address(address)
        if ip.is_loopback:
            return "address is a loopback address"
        if ip.is_link_local:
            return "address is link-local"
        if not self.networks:
            return None
        inside = [n for n in self.networks if ip.version == n.version and ip in n]
        if not inside:
            return "address is outside the cluster's network"
        if any(ip in (n.network_address, n.broadcast_address) for n in inside):
            return "address is the network's own or its broadcast address"
        if address in self.gateways:
            return "address is the network's gateway"
        if address in self.own:
            return "address is the load balancer's own"
        return None


def health_problem(path: str) -> str | None:
    """Why `path` cannot be the web apps' health-check path (None when it can)."""
    if _HEALTH_RE.fullmatch(path):
        return None
    return ("must start with '/' and hold at most 200 of A-Z a-z 0-9 and . _ ~ % / ? & = + , "
            ": @ ! * -")


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
                    default_port: int = DEFAULT_PORT, scope: Scope = Scope(),
                    incumbents: Mapping[str, str] = {}) -> Membership:
    """Alive members with `role`, validated; sorted by name so a render is deterministic.

    `incumbents` (server name -> address, what HAProxy serves now) settles an address that
    two members claim: the one already served keeps it; with none, neither gets it.
    """
    members = list(members)
    backends: dict[str, Backend] = {}
    rejected: list[Rejected] = []
    for member in members:
        if member.get("status") not in (None, "alive") or not _has_role(member, role):
            continue
        result = check_member(member, default_port)
        if isinstance(result, Backend):
            problem = scope.problem(result.address)
            result = Rejected(repr(result.name), problem) if problem else result
        if isinstance(result, Rejected):
            rejected.append(result)
        elif result.name in backends:
            rejected.append(Rejected(repr(result.name), "duplicate name"))
        else:
            backends[result.name] = result
    others = {parse_address(m.get("addr")) for m in members
              if m.get("status") in (None, "alive") and not _has_role(m, role)}
    kept, clashes = _unique_addresses(backends, others, incumbents)
    known = sum(1 for m in members if _has_role(m, role))
    return Membership(tuple(kept[n] for n in sorted(kept)), (*rejected, *clashes), known)


def _has_role(member: dict[str, Any], role: str) -> bool:
    tags = member.get("tags")
    return isinstance(tags, dict) and tags.get("role") == role


def _unique_addresses(backends: dict[str, Backend], others: set[str | None],
                      incumbents: Mapping[str, str]
                      ) -> tuple[dict[str, Backend], list[Rejected]]:
    """Drop backends whose address another member claims (see select_backends)."""
    by_address: dict[str, list[Backend]] = {}
    for backend in backends.values():
        by_address.setdefault(backend.address, []).append(backend)
    kept: dict[str, Backend] = {}
    rejected: list[Rejected] = []
    for address, claimants in by_address.items():
        if address in others:
            rejected += [Rejected(repr(b.name), "address is another member's") for b in claimants]
            continue
        if len(claimants) == 1:
            kept[claimants[0].name] = claimants[0]
            continue
        holder = next((b for b in claimants if incumbents.get(b.name) == address), None)
        if holder is not None:
            kept[holder.name] = holder
        rejected += [Rejected(repr(b.name), "address is another member's")
                     for b in claimants if b is not holder]
    return kept, rejected
