"""The rules behind `up --web-image/--web-port/--health`: which port an image's web app is on,
which health paths may reach HAProxy's config, and what the load balancer is rendered with."""

from __future__ import annotations

import pytest

from layerkit.agent.handler import Settings, render, settings_from
from layerkit.agent.members import DEFAULT_HEALTH, health_problem
from layerkit.cluster.launch import lb_spec, web_spec
from layerkit.cluster.options import (
    ClusterOptions,
    options_from_labels,
    options_labels,
    validate_options,
)
from layerkit.cluster.swarm import SwarmOptions
from layerkit.cluster.swarm import validate_options as validate_swarm
from layerkit.cluster.webcheck import web_port_of
from layerkit.engine.images import ImageInfo
from layerkit.errors import UsageError
from tests.conftest import IMAGES


def image(env: tuple[str, ...] = (), exposed: tuple[str, ...] = ()) -> ImageInfo:
    return ImageInfo("sha256:x", (), 0, (), "", env=env, exposed=exposed)


@pytest.mark.parametrize(("info", "given", "port"), [
    (image(("WEBAPP_PORT=3000",), ("3000/tcp",)), 0, 3000),   # the lab's web app
    (image((), ("8000/tcp",)), 0, 8000),                       # one EXPOSE
    (image(("WEBAPP_PORT=5000",), ("8000/tcp", "9000/tcp")), 0, 5000),
    (image((), ("8000/tcp", "53/udp")), 0, 8000),              # only TCP counts
    (image((), ("8000/tcp", "9000/tcp")), 7000, 7000),          # --web-port wins
    (image(("WEBAPP_PORT=0",), ("8000/tcp",)), 0, 8000),       # not a port: ignored
])
def test_the_web_port_is_given_or_declared(info: ImageInfo, given: int, port: int) -> None:
    assert web_port_of(info, "app", given) == port


@pytest.mark.parametrize(("info", "said"), [
    (image(), "app declares no port"),
    (image((), ("8000/tcp", "9000/tcp")), "app exposes 8000, 9000"),
])
def test_an_image_without_one_port_needs_web_port(info: ImageInfo, said: str) -> None:
    with pytest.raises(UsageError, match=said) as refused:
        web_port_of(info, "app", 0)
    assert refused.value.hint == "give it with --web-port"


@pytest.mark.parametrize("path", ["/healthz", "/", "/ping?deep=1&x=y", "/a/b-c_d.e~f%20",
                                  "/" + "a" * 200])
def test_health_paths_that_may_reach_the_config(path: str) -> None:
    assert health_problem(path) is None


@pytest.mark.parametrize("path", ["", "healthz", "/a b", "/a#b", '/a"b', "/a'b", "/a\\b",
                                  "/a\nb", "/a;b", "/" + "a" * 201, "/${HOME}", "/a\tb"])
def test_health_paths_that_never_reach_the_config(path: str) -> None:
    assert health_problem(path) is not None
    with pytest.raises(UsageError, match=r"^--health "):
        validate_options(ClusterOptions(health=path))
    with pytest.raises(UsageError, match=r"^--health "):
        validate_swarm(SwarmOptions(health=path))
    if path:  # in the load balancer's environment an empty value means the default
        with pytest.raises(ValueError, match=r"^LAYERKIT_HEALTH_PATH "):
            settings_from({"LAYERKIT_HEALTH_PATH": path})


@pytest.mark.parametrize("port", [-1, 65536])
def test_web_port_out_of_range_is_refused(port: int) -> None:
    with pytest.raises(UsageError, match=rf"^--web-port {port} is not a port number"):
        validate_options(ClusterOptions(web_port=port))


def test_the_load_balancer_is_rendered_with_its_health_path() -> None:
    assert settings_from({}) == Settings(health=DEFAULT_HEALTH)
    assert settings_from({"LAYERKIT_HEALTH_PATH": ""}).health == DEFAULT_HEALTH
    template = (IMAGES / "haproxy" / "haproxy.cfg.j2").read_text()
    text = render(template, (), settings_from({"LAYERKIT_HEALTH_PATH": "/ping?x=1"}))
    assert [line.strip() for line in text.splitlines() if "httpchk" in line] == [
        "option httpchk GET /ping?x=1"]


def test_web_port_and_health_are_kept_for_scale() -> None:
    opts = ClusterOptions(name="c1", web_image="me/app:1", web_port=8000, health="/ping")
    kept = options_labels(opts)
    assert kept["org.layerkit.web-port"] == "8000"
    assert kept["org.layerkit.health"] == "/ping"
    assert options_from_labels("c1", kept) == opts
    # a label changed behind layerkit's back never reaches a container: the default instead
    bad = options_from_labels("c1", {**kept, "org.layerkit.health": "/a b"})
    assert (bad.health, bad.web_port) == (DEFAULT_HEALTH, 8000)


def test_the_containers_carry_the_role_port_and_health_path() -> None:
    opts = ClusterOptions(name="c1", web_image="me/app:1", web_port=8000, health="/ping")
    web = web_spec(opts)
    assert (web.image, web.env["LAYERKIT_ROLE"], web.env["WEBAPP_PORT"]) == (
        "me/app:1", "web", "8000")
    assert lb_spec(opts).env["LAYERKIT_HEALTH_PATH"] == "/ping"
    # a port not settled (0) is never advertised: the image's own WEBAPP_PORT stands
    assert "WEBAPP_PORT" not in web_spec(ClusterOptions(name="c1")).env
