"""Start keepalived holding a cluster's floating address (the keepalived image's command).

It runs in the node's own network (a Swarm service on the `host` network, NET_ADMIN and
NET_RAW) and takes the address only while the node's load balancer accepts connections on the
published port. Everything comes from the environment:
  LAYERKIT_VIP         the floating address with its prefix, e.g. 172.26.255.245/16
  LAYERKIT_VRID        the VRRP router id (1-255), one per cluster on a network
  LAYERKIT_CHECK_PORT  the load balancer's port on this node
  LAYERKIT_ADVERT      seconds between VRRP adverts (default 0.2)
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Mapping
from pathlib import Path

CONFIG_PATH = Path("/run/keepalived/keepalived.conf")
SIOCGIFADDR, SIOCGIFNETMASK = 0x8915, 0x891B
CONFIG = """\
global_defs {{
    vrrp_version 3
    enable_script_security
    script_user root
    vrrp_garp_master_delay 1
    vrrp_garp_master_repeat 3
}}
vrrp_script lb_up {{
    script "{python} -m layerkit.agent.vip --check {port}"
    interval 1
    timeout 1
    fall 1
    rise 1
}}
vrrp_instance layerkit {{
    state BACKUP
    nopreempt
    interface {interface}
    virtual_router_id {vrid}
    priority 100
    advert_int {advert}
    virtual_ipaddress {{
        {vip} dev {interface}
    }}
    track_script {{
        lb_up
    }}
}}
"""


def interfaces() -> dict[str, ipaddress.IPv4Interface]:
    """IPv4 address and prefix of each interface that has one (ioctl, no iproute2 needed)."""
    found: dict[str, ipaddress.IPv4Interface] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                addr = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)[20:24]
                mask = fcntl.ioctl(sock.fileno(), SIOCGIFNETMASK, request)[20:24]
            except OSError:
                continue
            found[name] = ipaddress.IPv4Interface(
                f"{socket.inet_ntoa(addr)}/{socket.inet_ntoa(mask)}")
    return found


def render(env: Mapping[str, str], nics: Mapping[str, ipaddress.IPv4Interface]) -> str:
    """keepalived's config; ValueError on a value that is not what it must be."""
    vip = ipaddress.IPv4Interface(env["LAYERKIT_VIP"])
    vrid, port = int(env["LAYERKIT_VRID"]), int(env["LAYERKIT_CHECK_PORT"])
    advert = float(env.get("LAYERKIT_ADVERT", "0.2"))
    if not (1 <= vrid <= 255 and 0 < port < 65536 and 0.01 <= advert <= 255):
        raise ValueError("LAYERKIT_VRID, LAYERKIT_CHECK_PORT or LAYERKIT_ADVERT out of range")
    nic = next((n for n, a in sorted(nics.items()) if vip.ip in a.network), None)
    if nic is None:
        raise ValueError(f"no interface of this node is on the network of {vip}")
    return CONFIG.format(python=sys.executable, port=port, interface=nic, vrid=vrid,
                         advert=f"{advert:g}", vip=vip.with_prefixlen)


def check(port: int) -> int:
    """0 when the node's load balancer accepts a connection on `port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return 0
    except OSError:
        return 1


def main() -> None:
    if sys.argv[1:2] == ["--check"] and len(sys.argv) == 3:
        sys.exit(check(int(sys.argv[2])))
    try:
        text = render(os.environ, interfaces())
    except (KeyError, ValueError) as exc:
        print(f"vip: {exc}; not starting", file=sys.stderr, flush=True)
        sys.exit(2)
    CONFIG_PATH.parent.mkdir(parents=True, exist_ok=True)
    CONFIG_PATH.write_text(text)
    sys.stdout.flush()
    # foreground, log to the console (the task's log, which `layerkit status` reads)
    os.execvp("keepalived", ["keepalived", "--dont-fork", "--log-console", "--log-detail",
                             "--vrrp", "-f", str(CONFIG_PATH),
                             "-p", "/run/keepalived/keepalived.pid",
                             "-r", "/run/keepalived/vrrp.pid"])


if __name__ == "__main__":
    main()
