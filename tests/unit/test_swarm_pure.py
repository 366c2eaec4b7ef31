"""The pure parts of the Swarm mode: keepalived's config, the advertised address, VRRP router
ids, floating-address checks and the parsing of service logs (no engine)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket

import pytest

from layerkit.agent.serfagent import address_in
from layerkit.agent.vip import check, render
from layerkit.cluster import render as cluster_render
from layerkit.cluster import swarmrender
from layerkit.cluster.logs import _lines, order_key, parse_since
from layerkit.cluster.swarmview import BalancerView, SwarmStatus, TaskRow, parse_logs
from layerkit.cluster.swarmvip import check_vip_on_nodes, free_vrid, vip_interface, vrid
from layerkit.cluster.view import LbView, MemberRow, ServerRow
from layerkit.engine.swarm import SwarmNode
from layerkit.errors import UsageError

NICS = {"lo": ipaddress.IPv4Interface("127.0.0.1/8"),
        "eth0": ipaddress.IPv4Interface("172.26.0.3/16")}
ENV = {"LAYERKIT_VIP": "172.26.255.245/16", "LAYERKIT_VRID": "42",
       "LAYERKIT_CHECK_PORT": "8080"}


def test_keepalived_config_takes_the_interface_on_the_address_network() -> None:
    text = render(ENV, NICS)
    assert "interface eth0" in text
    assert "172.26.255.245/16 dev eth0" in text
    assert "virtual_router_id 42" in text
    assert "advert_int 0.2" in text
    assert "vrrp_version 3" in text
    assert "--check 8080" in text


@pytest.mark.parametrize(("change", "words"), [
    ({"LAYERKIT_VIP": "10.1.2.3/24"}, "no interface"),
    ({"LAYERKIT_VRID": "0"}, "out of range"),
    ({"LAYERKIT_CHECK_PORT": "70000"}, "out of range"),
])
def test_keepalived_config_refuses_what_cannot_work(change: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        render({**ENV, **change}, NICS)


def test_the_check_fails_on_a_port_nobody_listens_on() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert check(port) == 1  # bound, not listening
        sock.listen()
        assert check(port) == 0


def test_advertised_address_is_this_host_s_own_on_the_subnet() -> None:
    assert address_in("127.0.0.0/8") == "127.0.0.1"
    with pytest.raises((ValueError, OSError)):
        address_in("198.51.100.0/24")  # no interface there; a UDP connect sends nothing


def test_router_ids_are_in_range_and_stable() -> None:
    ids = {vrid(f"c{i}") for i in range(200)}
    assert all(1 <= i <= 255 for i in ids)
    assert vrid("demo") == vrid("demo")
    assert len(ids) > 100


def test_a_router_id_held_by_another_cluster_is_passed_over() -> None:
    own = vrid("demo")
    assert free_vrid("demo", set()) == own
    assert free_vrid("demo", {own}) == own % 255 + 1
    assert free_vrid("demo", {own, own % 255 + 1}) == (own + 1) % 255 + 1
    assert free_vrid("demo", set(range(1, 256)) - {7}) == 7   # wraps round past 255
    with pytest.raises(UsageError, match="every VRRP router id"):
        free_vrid("demo", range(1, 256))


def node(address: str) -> SwarmNode:
    return SwarmNode("id", f"n-{address}", address, "manager", "ready", "active")


def test_vip_must_be_on_every_node_s_network_and_nobody_s_own() -> None:
    nodes = (node("172.26.0.2"), node("172.26.0.3"))
    check_vip_on_nodes("172.26.255.245/16", nodes)
    assert vip_interface("10.0.0.5").network.prefixlen == 24
    with pytest.raises(UsageError, match="outside"):
        check_vip_on_nodes("172.27.0.9/16", nodes)
    with pytest.raises(UsageError, match="own address"):
        check_vip_on_nodes("172.26.0.3/16", nodes)
    with pytest.raises(UsageError, match="not a host address"):
        vip_interface("172.26.0.0/16")


def test_service_log_lines_name_their_node() -> None:
    raw = (b"2026-12-02T12:00:00.1Z com.docker.swarm.node.id=abc123,com.docker.swarm.service.id"
           b"=s1,com.docker.swarm.task.id=t1 (layerkit) Entering MASTER STATE\n"
           b"2026-12-02T12:00:01.2Z no details here\n")
    lines = parse_logs([raw], {"abc123": "node-1"})
    assert lines[0].source == "node-1"
    assert lines[0].text == "(layerkit) Entering MASTER STATE"
    assert lines[1].source == "?"
    assert lines[1].text == "no details here"


def test_since_takes_durations_and_iso_times() -> None:
    now = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
    assert parse_since("10m", now) == int(now.timestamp()) - 600
    assert parse_since("2h", now) == int(now.timestamp()) - 7200
    assert parse_since("2026-12-02T11:00:00", now) == int(now.timestamp()) - 3600
    with pytest.raises(UsageError):
        parse_since("yesterday", now)


def test_timestamps_order_whatever_their_fraction_length() -> None:
    stamps = ["2026-12-02T12:00:00.5Z", "2026-12-02T12:00:00.123456789Z",
              "2026-12-02T12:00:00.45Z"]
    assert sorted(stamps, key=order_key) == [stamps[1], stamps[2], stamps[0]]


def test_lines_are_whole_across_chunks() -> None:
    assert list(_lines([b"a\nb", b"c\n", b"d"])) == ["a", "bc", "d"]


def test_swarm_status_shows_the_views_of_the_load_balancers_on_this_engine() -> None:
    """Shown as on one engine (the same table and JSON keys); one on another node said plainly."""
    view = LbView((MemberRow("web-1-ab12", "10.0.1.5:7946", "alive", "web"),),
                  (ServerRow("web-1-ab12", "10.0.1.5:8000", "UP", "L7OK", 3),), True)
    status = SwarmStatus("demo", ("http://10.0.0.9:8080/",), (TaskRow(
        "layerkit-demo-lb.1", "lb", "n1", "running", "running", "10.0.1.2", "started"),),
        {"lb": 2}, None, None, (BalancerView("layerkit-demo-lb.1", "n1", True, view),
                                BalancerView("layerkit-demo-lb.2", "n2", False, None)))
    table = swarmrender.status_table(status)
    shown = cluster_render.lb_view_table(view)
    assert f"load balancer layerkit-demo-lb.1 on n1:\n\n{shown}" in table
    assert "load balancer layerkit-demo-lb.2 on n2: runs on another node" in table
    here, other = json.loads(swarmrender.status_json(status))["load_balancers"]
    assert here == {"task": "layerkit-demo-lb.1", "node": "n1", "here": True,
                    **cluster_render.lb_view_json(view)}
    assert here["members"][0]["status"] == "alive"
    assert here["backends"][0] == {"name": "web-1-ab12", "address": "10.0.1.5:8000",
                                   "status": "UP", "check": "L7OK", "sessions": 3}
    assert other == {"task": "layerkit-demo-lb.2", "node": "n2", "here": False}
