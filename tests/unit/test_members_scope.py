"""Which addresses a member may have, HAProxy's server table, and the handler's host side
(timeouts, the event log's size)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from layerkit.agent import lbsystem
from layerkit.agent.handler import append_event
from layerkit.agent.members import Scope, select_backends
from layerkit.agent.runtime import parse_servers_state
from tests.unit.test_handler import member

SCOPE = Scope((ipaddress.ip_network("172.18.0.0/16"),), frozenset({"172.18.0.1"}),
              frozenset({"172.18.0.2"}))


@pytest.mark.parametrize(("addr", "reason"), [
    ("127.0.0.1:7946", "loopback"), ("169.254.3.4:7946", "link-local"),
    ("10.99.0.5:7946", "outside the cluster's network"), ("172.18.0.1:7946", "gateway"),
    ("172.18.0.2:7946", "load balancer's own"), ("172.18.255.255:7946", "broadcast"),
    ("[fd00::5]:7946", "outside the cluster's network"),
])
def test_forbidden_addresses_are_rejected_with_the_reason(addr: str, reason: str) -> None:
    result = select_backends([member("web-ok", "172.18.0.5:7946"), member("web-x", addr)],
                             scope=SCOPE)
    assert [b.name for b in result.backends] == ["web-ok"]
    (rejected,) = result.rejected
    assert rejected.name == "'web-x'"
    assert reason in rejected.reason


def test_an_address_two_members_claim_stays_with_the_one_served() -> None:
    members = [member("web-a", "172.18.0.5:7946"), member("web-copy", "172.18.0.5:7946")]
    result = select_backends(members, scope=SCOPE, incumbents={"web-a": "172.18.0.5"})
    assert [b.name for b in result.backends] == ["web-a"]
    assert [r.name for r in result.rejected] == ["'web-copy'"]
    # neither served yet: neither gets it
    assert select_backends(members, scope=SCOPE).backends == ()


def test_a_web_member_claiming_another_roles_address_is_rejected() -> None:
    members = [member("lb-1", "172.18.0.3:7946", role="lb"), member("web-a", "172.18.0.3:7946")]
    result = select_backends(members, scope=SCOPE)
    assert result.backends == ()
    assert "another member's" in result.rejected[0].reason


def test_known_web_members_count_every_state() -> None:
    result = select_backends([member("web-a", status="left"), member("lb", role="lb")])
    assert (result.backends, result.known_web) == ((), 1)


def test_servers_state_is_read_by_its_header() -> None:
    text = ("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state "
            "srv_port\n3 webapps 1 web-a 172.18.0.5 2 0 3000\n3 webapps 2 web-b 172.18.0.6 0 1 "
            "3000\n4 stats 1 other 10.0.0.1 2 0 80\n")
    servers = parse_servers_state(text)
    assert sorted(servers) == ["web-a", "web-b"]
    assert (servers["web-b"].address, servers["web-b"].port, servers["web-b"].admin) == (
        "172.18.0.6", 3000, 1)


def test_gateways_come_from_the_routing_table(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text("Iface\tDestination\tGateway \tFlags\n"
                     "eth0\t00000000\t010012AC\t0003\neth0\t000012AC\t00000000\t0001\n")
    assert lbsystem._gateways(route) == {"172.18.0.1"}


def _timeout(*args: Any, **kwargs: Any) -> None:
    raise subprocess.TimeoutExpired("serf", 10)


def test_commands_that_hang_become_reasons_not_tracebacks(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setattr(lbsystem.subprocess, "run", _timeout)
    system = lbsystem.LbSystem(tmp_path / "password")
    with pytest.raises(OSError, match="no answer"):
        system.members()
    assert "no answer" in (system.check(tmp_path / "cfg") or "")
    monkeypatch.setattr(lbsystem, "save_server_state", lambda *_: None)
    assert "no answer" in (system.reload() or "")


def test_the_event_log_is_rotated_by_size(tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    for i in range(50):
        append_event(log, {"i": i, "pad": "x" * 100}, max_bytes=1000)
    assert log.stat().st_size < 1200
    assert (tmp_path / "events.log.1").exists()
    assert json.loads(log.read_text().splitlines()[-1])["i"] == 49


def test_haproxy_reads_its_settings_from_the_environment(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("abcdefghijklmnop\n")
    env = lbsystem.haproxy_env(password, {"LAYERKIT_CLUSTER": "demo",
                                          "LAYERKIT_STATS_FROM": "10.0.0.1"})
    assert (env["LAYERKIT_STATS_PASSWORD"], env["LAYERKIT_STATS_FROM"],
            env["LAYERKIT_COOKIE_KEY"]) == ("abcdefghijklmnop", "10.0.0.1", "demo")
    route = tmp_path / "route"
    route.write_text("Iface\tDestination\tGateway \tFlags\n"
                     "eth0\t000012AC\t00000000\t0001\neth0\t00000000\t010012AC\t0003\n")
    assert lbsystem.default_gateway(route) == "172.18.0.1"
