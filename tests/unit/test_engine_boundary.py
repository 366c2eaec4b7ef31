"""The engine boundary: SDK errors become layerkit's by type and status, and the build code
loads squash only when asked to squash."""

from __future__ import annotations

import subprocess
import sys

import docker.errors
import pytest
import requests

from layerkit.engine.client import DEFAULT_HOST, DEFAULT_SOCKET, engine_errors
from layerkit.engine.images import parse_build_chunk
from layerkit.errors import EngineError, EngineUnavailable, NotFound, no_such_image
from tests.conftest import ROOT


def _api_error(status: int) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("boom", response=response, explanation="conflict here")


def test_api_error_carries_the_http_status() -> None:
    with pytest.raises(EngineError) as info, engine_errors("tagging x"):
        raise _api_error(409)
    assert info.value.status == 409
    assert not isinstance(info.value, EngineUnavailable)
    assert "engine said 409: conflict here" in info.value.message


def test_an_sdk_refusal_is_not_engine_unavailable() -> None:
    with pytest.raises(EngineError) as info, engine_errors("building x"):
        raise docker.errors.InvalidArgument("bad build argument")
    assert not isinstance(info.value, EngineUnavailable)
    assert info.value.status is None


def test_a_connection_failure_is_engine_unavailable() -> None:
    with pytest.raises(EngineUnavailable), engine_errors("pinging"):
        raise requests.exceptions.ConnectionError("refused")


def test_not_found_is_bad_input() -> None:
    response = requests.Response()
    response.status_code = 404
    with pytest.raises(NotFound), engine_errors("inspecting x"):
        raise docker.errors.ImageNotFound("gone", response=response)


def test_one_default_socket() -> None:
    assert DEFAULT_HOST.removeprefix("unix://") == DEFAULT_SOCKET


def test_build_chunks_are_parsed() -> None:
    assert parse_build_chunk({"aux": {"ID": "sha256:1"}}).image_id == "sha256:1"
    assert parse_build_chunk({"error": "x", "errorDetail": {"message": "y"}}).error == "y"
    assert parse_build_chunk({"stream": "Step 1/2 : FROM a\n"}).text == "Step 1/2 : FROM a\n"
    assert parse_build_chunk({"status": "pulling"}).text == ""


def test_build_loads_squash_only_when_asked() -> None:
    code = ("import sys, layerkit.build.build, layerkit.cli.build; "
            "print('layerkit.squash.squash' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_a_missing_image_is_said_once() -> None:
    assert no_such_image("inspecting image a:1", "no such image: a:1: No such image: a:1") == (
        "inspecting image a:1: no such image: a:1")
    assert no_such_image("saving image a:1", "reference does not exist") == (
        "saving image a:1: no such image (reference does not exist)")
    assert no_such_image("w", "No such image: x:1") == "w: No such image: x:1"
