"""The Serf agent's configuration from the container's environment."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from layerkit.agent.members import valid_name
from layerkit.agent.serfagent import (
    KeyringError,
    agent_config,
    check_keyring,
    node_name,
    write_keyring,
)


@pytest.mark.parametrize("hostname", ["lk-demo-web-1a2b3c", "UPPER_case.host", "x" * 80, "---"])
def test_node_names_are_unique_plain_labels(hostname: str) -> None:
    names = {node_name(hostname) for _ in range(20)}
    assert len(names) > 15
    assert all(valid_name(n) for n in names)


def test_web_config_joins_retries_and_forgets_fast() -> None:
    env = {"LAYERKIT_ROLE": "web", "LAYERKIT_JOIN": "lb, web", "LAYERKIT_CLUSTER": "demo",
           "LAYERKIT_SERF_KEYRING": "/etc/layerkit/serf-keyring.json", "WEBAPP_PORT": "3000"}
    config = agent_config(env, "web-1")
    assert config["tags"] == {"role": "web", "cluster": "demo", "port": "3000"}
    assert config["retry_join"] == ["lb", "web"]
    assert config["keyring_file"] == "/etc/layerkit/serf-keyring.json"
    assert config["leave_on_terminate"] is True
    assert config["reconnect_timeout"] == config["tombstone_timeout"] == "120s"
    assert "event_handlers" not in config


def test_how_soon_gone_members_are_forgotten_is_whole_seconds_only() -> None:
    config = agent_config({"LAYERKIT_SERF_FORGET": "5"}, "web-1")
    assert config["reconnect_timeout"] == config["tombstone_timeout"] == "5s"
    for bad in ("0", "-5", "5s", "1e3", "\u0665", "604801", "5\n\"evil\": 1"):
        with pytest.raises(ValueError, match="LAYERKIT_SERF_FORGET"):
            agent_config({"LAYERKIT_SERF_FORGET": bad}, "web-1")


def test_lb_config_has_the_handler() -> None:
    config = agent_config({"LAYERKIT_ROLE": "lb",
                           "LAYERKIT_SERF_HANDLER": "python3 -m layerkit.agent.handler"}, "lb")
    (handler,) = config["event_handlers"]  # type: ignore[misc]
    assert handler.startswith("member-join,member-leave,member-failed,member-update,member-reap=")


def test_keyring_must_hold_32_byte_keys(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps([base64.b64encode(bytes(32)).decode()]))
    check_keyring(path)
    for bad in ("[]", "{}", "nope", json.dumps(["c2hvcnQ="]), json.dumps([1])):
        path.write_text(bad)
        with pytest.raises(KeyringError):
            check_keyring(path)
    with pytest.raises(KeyringError):
        check_keyring(tmp_path / "missing.json")


def test_keygen_writes_a_private_valid_keyring_once(tmp_path: Path) -> None:
    path = tmp_path / "serf-keyring.json"
    write_keyring(path)
    check_keyring(path)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        write_keyring(path)
