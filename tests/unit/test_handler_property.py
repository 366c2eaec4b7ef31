"""Property: whatever members, names, tags and addresses Serf reports, the handler leaves a
config that is the template's frame plus well-formed server lines of in-scope members only,
and HAProxy serving exactly those, or it changes nothing."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerkit.agent.handler import Paths, Settings, frame, reconcile, render
from layerkit.agent.members import Scope
from layerkit.agent.runtime import SERVER_OPTIONS
from tests.conftest import IMAGES
from tests.unit.test_handler import FakeSystem

TEMPLATE = (IMAGES / "haproxy" / "haproxy.cfg.j2").read_text()
NETWORK = ipaddress.ip_network("172.18.0.0/16")
SCOPE = Scope((NETWORK,), frozenset({"172.18.0.1"}), frozenset({"172.18.0.2"}))
SERVER_RE = re.compile(r"    server ([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?) "
                       r"(172\.18\.\d{1,3}\.\d{1,3}):(\d{1,5}) " + re.escape(SERVER_OPTIONS))

names = st.one_of(st.from_regex(r"\A[a-z][a-z0-9-]{0,12}[a-z0-9]\Z"), st.text(max_size=30),
                  st.none(), st.integers())
hosts = st.one_of(st.ip_addresses(network="172.18.0.0/28").map(str),
                  st.sampled_from(["172.18.0.1", "172.18.0.2", "127.0.0.1", "169.254.1.1",
                                   "10.0.0.9", "fd00::5", "0.0.0.0", "172.18.255.255"]),
                  st.text(max_size=20))
addresses = st.one_of(st.builds(lambda h, p: f"{h}:{p}", hosts, st.integers(0, 70000)),
                      hosts, st.none(), st.integers())
tag_text = st.one_of(st.from_regex(r"\A[a-z0-9]{0,6}\Z"), st.text(max_size=12))
tags = st.one_of(
    st.builds(lambda extra, port: {"role": "web", **extra, **port},
              st.dictionaries(tag_text, tag_text, max_size=3),
              st.one_of(st.just({}), st.builds(lambda p: {"port": p}, tag_text),
                        st.builds(lambda p: {"port": str(p)}, st.integers(0, 70000)))),
    st.dictionaries(tag_text, tag_text, max_size=3), st.none(), st.text(max_size=5))
member = st.fixed_dictionaries({"name": names, "addr": addresses, "tags": tags,
                                "status": st.sampled_from(["alive", "alive", "left", "failed",
                                                           "leaving", None])})


def _paths(root: Path) -> Paths:
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "haproxy.cfg.j2").write_text(TEMPLATE)
    (root / "etc" / "haproxy.cfg").write_text(render(TEMPLATE, ()))
    return Paths(config=root / "etc" / "haproxy.cfg", template=root / "etc" / "haproxy.cfg.j2",
                 event_log=root / "log" / "events.log", state_dir=root / "run",
                 password_file=root / "etc" / "stats-password")


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.lists(member, max_size=8), min_size=1, max_size=3))
def test_the_config_is_well_formed_or_unchanged(
        tmp_path_factory: pytest.TempPathFactory, rounds: list[list[dict[str, object]]]) -> None:
    root = tmp_path_factory.mktemp("h")
    paths = _paths(root)
    system = FakeSystem(config=paths.config, network=SCOPE)
    shipped_frame = frame(render(TEMPLATE, ()))
    for members in rounds:
        before = paths.config.read_text()
        system.members_json = json.dumps({"members": members})
        outcome = reconcile(paths, system, Settings())
        text = paths.config.read_text()
        if outcome.action not in ("runtime", "reload", "unchanged"):
            assert text == before, outcome
            continue
        assert frame(text) == shipped_frame
        servers = [ln for ln in text.splitlines() if ln.split()[:1] == ["server"]]
        found = [SERVER_RE.fullmatch(ln) for ln in servers]
        assert all(found), servers
        for match in found:
            assert match is not None
            ip = ipaddress.ip_address(match.group(2))
            assert ip in NETWORK
            assert str(ip) not in ("172.18.0.1", "172.18.0.2", "172.18.0.0", "172.18.255.255")
            assert 0 < int(match.group(3)) < 65536
        assert len({m.group(2) for m in found if m}) == len(found)  # no address twice
        assert {n: (a, p) for n, (a, p, _) in system.haproxy.servers.items()} == {
            m.group(1): (m.group(2), int(m.group(3))) for m in found if m}
