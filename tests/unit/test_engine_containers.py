"""The engine's container and network documents become the frozen dataclasses the cluster uses."""

from __future__ import annotations

from layerkit.engine.containers import PortBinding, container_info, network_info

INSPECT = {
    "Id": "abc123", "Name": "/layerkit-demo-lb", "Created": "2026-12-02T11:00:00.123Z",
    "RestartCount": 2, "State": {"Status": "running"},
    "Config": {"Hostname": "demo-lb", "Labels": {"org.layerkit.role": "lb"},
               "Env": ["LAYERKIT_JOIN=web", "PATH=/usr/bin"]},
    "NetworkSettings": {
        "Networks": {"layerkit-demo": {"IPAddress": "172.19.0.2"}},
        "Ports": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "3000/tcp": None}},
}


def test_container_info_from_an_inspect_document() -> None:
    info = container_info(INSPECT)
    assert (info.id, info.name, info.status, info.restarts) == (
        "abc123", "layerkit-demo-lb", "running", 2)
    assert info.running
    assert info.labels == {"org.layerkit.role": "lb"}
    assert info.addresses == {"layerkit-demo": "172.19.0.2"}
    assert info.ports == {"80/tcp": (PortBinding("127.0.0.1", "8080"),)}
    assert "LAYERKIT_JOIN=web" in info.env
    assert info.hostname == "demo-lb"


def test_a_created_container_has_no_addresses_or_ports() -> None:
    info = container_info({"Id": "x", "Name": "/n", "State": {"Status": "created"},
                           "Config": {}, "NetworkSettings": {}})
    assert not info.running
    assert info.addresses == {}
    assert info.ports == {}


def test_network_info_keeps_subnets_and_gateways() -> None:
    info = network_info({"Id": "n1", "Name": "layerkit-demo", "Labels": {"a": "b"},
                         "IPAM": {"Config": [{"Subnet": "172.19.0.0/16",
                                              "Gateway": "172.19.0.1"}]}})
    assert (info.name, info.subnets, info.gateways) == (
        "layerkit-demo", ("172.19.0.0/16",), ("172.19.0.1",))
    assert info.labels == {"a": "b"}
