"""The cluster's pure parts: option checks, HAProxy's stat CSV, the status view and renderers."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerkit.agent.lbstatus import parse_stat_csv
from layerkit.cli.app import app
from layerkit.cli.cluster import _fail_unless_ready
from layerkit.cluster import cluster, ports
from layerkit.cluster import render as report
from layerkit.cluster import swarmrender as swarm_report
from layerkit.cluster import view as view_module
from layerkit.cluster.cluster import UpResult
from layerkit.cluster.options import options_from_labels, options_labels
from layerkit.cluster.swarm import SwarmUpResult
from layerkit.cluster.view import (
    ClusterStatus,
    ContainerRow,
    Endpoints,
    parse_view,
    serving_addresses,
    serving_members,
    shown,
)
from layerkit.engine.containers import ContainerInfo
from layerkit.errors import ClusterError, EngineError, NotFound, UsageError

STAT = """# pxname,svname,qcur,status,addr,check_status,stot
web,FRONTEND,,OPEN,,,12
webapps,demo-web-1-aaaaaa,0,UP,172.18.0.3:3000,L7OK,7
webapps,demo-web-2-bbbbbb,0,DOWN,172.18.0.4:3000,L4TOUT,2
webapps,BACKEND,0,UP,,,9
stats,FRONTEND,,OPEN,,,0
"""


def test_stat_csv_gives_the_web_servers_only() -> None:
    servers = parse_stat_csv(STAT)
    assert [(s["name"], s["status"], s["address"], s["check"]) for s in servers] == [
        ("demo-web-1-aaaaaa", "UP", "172.18.0.3:3000", "L7OK"),
        ("demo-web-2-bbbbbb", "DOWN", "172.18.0.4:3000", "L4TOUT")]


def test_view_escapes_what_came_from_the_network() -> None:
    view = parse_view({"members": [{"name": "evil\nname", "address": "1.2.3.4:7946",
                                    "status": "alive", "role": "web"}],
                       "servers": [{"name": "a", "status": "UP", "sessions": "3",
                                    "check": "L7OK"},
                                   {"name": "b", "status": "DOWN", "sessions": "x"}],
                       "haproxy": True})
    assert view.members[0].name == repr("evil\nname")
    assert [s.status for s in view.servers] == ["UP", "DOWN"]
    assert serving_addresses(view) == {""}  # UP, but the network gave it no address
    assert [s.sessions for s in view.servers] == [3, 0]
    assert shown("t1-web-abc-def") == "t1-web-abc-def"
    assert "\x1b" not in shown("\x1b[31mred")


@pytest.mark.parametrize("name", ["", "Demo", "1abc", "a" * 25, "a_b", "a b"])
def test_bad_cluster_names(name: str) -> None:
    with pytest.raises(UsageError):
        cluster.validate_name(name)


@pytest.mark.parametrize("opts", [
    cluster.ClusterOptions(bind="localhost"), cluster.ClusterOptions(port=70000),
    cluster.ClusterOptions(stats_port=-1), cluster.ClusterOptions(forget_after=0),
    cluster.ClusterOptions(forget_after=7 * 86400 + 1),
    cluster.ClusterOptions(port=9000, stats_port=9000), cluster.ClusterOptions(memory="1m"),
    cluster.ClusterOptions(memory="lots"), cluster.ClusterOptions(pids=5),
    cluster.ClusterOptions(log_size="10x"), cluster.ClusterOptions(log_files=0)])
def test_bad_options(opts: cluster.ClusterOptions) -> None:
    with pytest.raises(UsageError):
        cluster.validate_options(opts)


def test_scale_bounds() -> None:
    cluster.validate_scale(0)
    cluster.validate_scale(cluster.MAX_SCALE)
    with pytest.raises(UsageError):
        cluster.validate_scale(-1)


def test_secrets_are_fresh_and_shaped_for_serf() -> None:
    a, b = cluster.new_secrets(), cluster.new_secrets()
    assert a.keyring != b.keyring
    assert a.password != b.password
    (key,) = json.loads(a.keyring)
    assert len(key) == 44  # base64 of 32 bytes


def test_status_json_schema_is_pinned() -> None:
    status = ClusterStatus("demo", Endpoints("http://127.0.0.1:8080/", None),
                           (ContainerRow("layerkit-demo-lb", "lb", "running", "172.18.0.2", 0),),
                           (), (), False)
    doc = json.loads(report.cluster_status_json(status))
    assert doc["schema"] == "layerkit/status/v1"
    assert set(doc) == {"schema", "cluster", "url", "stats_url", "haproxy", "web", "containers",
                        "members", "backends"}
    assert "HAProxy did not answer" in report.cluster_status_table(status)


@pytest.mark.parametrize("args", [
    ["up", "--name", "Bad_Name"], ["up", "--scale", "-1"], ["up", "--bind", "localhost"],
    ["up", "--port", "70000"], ["scale", "3", "--name", "x y"], ["scale", "999"],
    ["status", "--name", ""], ["down", "--name", "UPPER"],
    ["up", "--wait", "-5"], ["up", "--wait", "nan"], ["up", "--wait", "inf"],
    ["scale", "3", "--wait", "-1"], ["scale", "3", "--wait", "nan"],
    ["up", "--port", "9000", "--stats-port", "9000"], ["up", "--memory", "1x"],
    ["up", "--swarm", "--memory", "1x"], ["up", "--swarm", "--pids", "5"],
    ["up", "--web-port", "70000"], ["up", "--health", "healthz"],
    ["up", "--swarm", "--health", "/a b"], ["up", "--swarm", "--web-port", "-1"],
    ["up", "--web-image", "Me/App:1"], ["up", "--web-image", ""],
    ["up", "--swarm", "--web-image", "me/app:1@sha256:12"],
])
def test_cluster_commands_refuse_bad_input_with_exit_2(args: list[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # no engine is needed to refuse: point at one that does not exist
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output


def test_serving_addresses_are_the_up_servers_ips() -> None:
    """Readiness matches HAProxy's UP servers to the running apps by address: a removed app
    still UP until its checks fail must not stand in for its replacement."""
    view = parse_view({"servers": [
        {"name": "a", "address": "172.18.0.3:3000", "status": "UP", "check": "L7OK"},
        {"name": "b", "address": "172.18.0.4:3000", "status": "UP 1/2", "check": "* L7OK"},
        # just added: UP until its first checks fail, so not yet serving
        {"name": "f", "address": "172.18.0.6:3000", "status": "UP 1/2", "check": "INI"},
        {"name": "c", "address": "172.18.0.5:3000", "status": "DOWN"},
        {"name": "d", "address": "[fd00::7]:3000", "status": "UP", "check": "L7OK"},
        {"name": "e", "address": "", "status": "MAINT"}]})
    assert serving_addresses(view) == {"172.18.0.3", "172.18.0.4", "fd00::7"}


def test_an_address_the_host_lacks_is_not_reported_as_a_port_in_use() -> None:
    with pytest.raises(UsageError, match="not an address of this host"):
        ports.require_free("192.0.2.1", 0)  # bind() only: nothing is sent


def test_a_port_in_use_is_reported_as_such() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match="already in use"):
            ports.require_free("127.0.0.1", port)


def test_a_port_left_to_layerkit_is_free_and_below_the_ephemeral_range(tmp_path: Path) -> None:
    """The engine's own pick for port 0 lies where clients take their source ports, so a
    restarted load balancer could find it held: layerkit picks below that range."""
    start = ports.ephemeral_start()
    chosen = {ports.choose_free("127.0.0.1") for _ in range(20)}
    assert all(max(1024, start - ports.CHOICE_SPAN) <= p < start for p in chosen)
    assert len(chosen) > 1  # at random: clusters started side by side rarely collide
    for port in chosen:
        ports.require_free("127.0.0.1", port)
    proc = tmp_path / "ip_local_port_range"
    proc.write_text("40000\t60999\n")
    assert ports.ephemeral_start(proc) == 40000
    assert ports.ephemeral_start(tmp_path / "missing") == 32768


def test_no_free_port_below_the_range_is_one_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "CHOICE_SPAN", 1)  # one candidate: a port that is taken
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ClusterError, match=f"no free port on 127.0.0.1 between {port} "):
            ports.choose_free("127.0.0.1", start=port + 1)


def test_options_kept_in_labels_come_back_and_bad_ones_fall_back() -> None:
    opts = cluster.ClusterOptions(name="demo", bind="127.0.0.2", port=0, forget_after=9,
                                  memory="300m", pids=99, log_size="2m", log_files=5,
                                  web_image="layerkit/webapp:x")
    kept = options_labels(opts)
    assert kept["org.layerkit.serf-forget"] == "9"  # the label older clusters have
    assert options_from_labels("demo", kept) == opts
    kept["org.layerkit.pids"] = "nonsense"
    kept["org.layerkit.memory"] = "1k"
    back = options_from_labels("demo", kept)
    assert (back.pids, back.memory) == (cluster.ClusterOptions.pids,
                                        cluster.ClusterOptions.memory)
    assert back.forget_after == 9
    assert options_from_labels("demo", {}) == cluster.ClusterOptions(name="demo")


def test_readiness_matches_servers_by_name_and_address() -> None:
    """A removed app's server can turn UP again when a new app gets its freed address: it is
    the new app's hostname that has to be served, not just the address."""
    view = parse_view({"servers": [
        {"name": "demo-web-aaaaaa-1b2c3d", "address": "172.18.0.3:3000", "status": "UP",
         "check": "L7OK"},
        {"name": "demo-web-bbbbbb-4e5f6a", "address": "172.18.0.4:3000", "status": "UP",
         "check": "L7OK"}]})
    assert serving_members(view) == {("demo-web-aaaaaa", "172.18.0.3"),
                                     ("demo-web-bbbbbb", "172.18.0.4")}
    replaced = {("demo-web-aaaaaa", "172.18.0.3"), ("demo-web-cccccc", "172.18.0.4")}
    assert serving_members(view) != replaced


def test_scale_minus_one_says_out_of_range_as_up_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    for args in (["scale", "-1"], ["up", "--scale", "-1"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "out of range" in result.output, result.output


def test_down_counts_in_words_that_agree() -> None:
    text = report.down_text(cluster.DownResult("demo", ("a",), ("n",), ()))
    assert text == "cluster demo: removed 1 container, 1 network, 0 volumes"


def test_a_load_balancer_restarting_under_an_exec_gives_no_view_not_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine answers 409 to an exec in a container that began restarting after it was
    inspected (its PID 1 crashed): readiness polling goes on instead of failing."""
    lb = ContainerInfo("c1", "lb", {}, "running", "", 0, "lb", (), {}, {})

    def restarting(*_: object) -> tuple[int, str]:
        raise EngineError("running python3 in c1: engine said 409", status=409)

    monkeypatch.setattr(view_module, "exec_in", restarting)
    assert view_module.lb_view(None, lb) is None  # type: ignore[arg-type]

    def exec_gone(*_: object) -> tuple[int, str]:  # created, then lost with the restart
        raise NotFound("running python3 in c1: not found (No such exec instance: e1)")

    monkeypatch.setattr(view_module, "exec_in", exec_gone)
    assert view_module.lb_view(None, lb) is None  # type: ignore[arg-type]

    def broken(*_: object) -> tuple[int, str]:
        raise EngineError("running python3 in c1: engine said 500", status=500)

    monkeypatch.setattr(view_module, "exec_in", broken)
    with pytest.raises(EngineError):
        view_module.lb_view(None, lb)  # type: ignore[arg-type]


def test_one_web_app_is_not_web_apps() -> None:
    one = report.up_text(UpResult("c1", Endpoints("http://127.0.0.1:1/", None), 1, True, 1.0))
    assert one.startswith("cluster c1: 1 web app behind ")
    swarm = swarm_report.up_text(SwarmUpResult("c1", (), 1, 1, None, True, 1.0))
    assert swarm.startswith("cluster c1 (swarm): 1 web app, 1 load balancer behind ")
    three = report.up_text(UpResult("c1", Endpoints("http://127.0.0.1:1/", None), 3, True, 1.0))
    assert "3 web apps behind" in three


def test_not_ready_says_how_a_loopback_only_app_shows() -> None:
    with pytest.raises(ClusterError) as info:
        _fail_unless_ready(False, 15, "c1", 2)
    assert "layerkit status --name c1" in (info.value.hint or "")
    assert "0.0.0.0" in (info.value.hint or "")
    _fail_unless_ready(False, 0, "c1", 2)  # --wait 0: not waited for, not a failure
