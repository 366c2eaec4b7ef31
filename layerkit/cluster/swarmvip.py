"""The floating address of a Swarm cluster: its interface, the nodes it may live on, and the
VRRP router id its keepalived instances share (one per cluster on a network)."""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Collection

from layerkit.cluster.options import PROJECT_LABEL, ROLE_LABEL
from layerkit.engine.client import DockerClient
from layerkit.engine.swarm import SwarmNode, labelled_services
from layerkit.errors import UsageError

VRID_LABEL = "org.layerkit.vrid"
DEFAULT_PREFIX = 24  # assumed for a --vip given without one


def vip_interface(vip: str) -> ipaddress.IPv4Interface:
    """The floating address with its prefix (DEFAULT_PREFIX when none is given)."""
    text = vip if "/" in vip else f"{vip}/{DEFAULT_PREFIX}"
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        raise UsageError(f"--vip {vip!r} is not an IPv4 address[/prefix]") from None
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise UsageError(f"--vip {vip}: not a host address of {iface.network}")
    return iface


def check_vip_on_nodes(vip: str, nodes: tuple[SwarmNode, ...]) -> None:
    """Every node must be on the floating address's network, and none may hold it already."""
    iface = vip_interface(vip)
    outside = [n.hostname for n in nodes if ipaddress.ip_address(n.address) not in iface.network]
    if outside:
        raise UsageError(f"--vip {vip} is outside the nodes' network: {', '.join(outside)} "
                         f"not in {iface.network}", hint="give --vip ADDRESS/PREFIX")
    if any(n.address == str(iface.ip) for n in nodes):
        raise UsageError(f"--vip {vip} is a node's own address")


def vrid(name: str) -> int:
    """A VRRP router id per cluster name (1-255), where a cluster's search for one starts."""
    return zlib.crc32(name.encode()) % 255 + 1


def free_vrid(name: str, taken: Collection[int]) -> int:
    """The first router id from the name's own that no other cluster holds: two clusters on
    one network with the same id would take each other's floating address."""
    start = vrid(name)
    for step in range(255):
        candidate = (start - 1 + step) % 255 + 1
        if candidate not in taken:
            return candidate
    raise UsageError("every VRRP router id (1-255) is held by a layerkit cluster on this swarm",
                     hint="`layerkit down` one that has a floating address")


def taken_vrids(client: DockerClient) -> set[int]:
    """The router ids of the swarm's other floating addresses (the name's own for a cluster
    made before ids were kept in a label)."""
    held = set()
    for service in labelled_services(client, {ROLE_LABEL: "vip"}):
        raw = service.labels.get(VRID_LABEL, "")
        held.add(int(raw) if raw.isdigit() else vrid(service.labels.get(PROJECT_LABEL, "")))
    return held
