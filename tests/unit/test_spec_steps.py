"""Specs for real apps: custom steps placed by the layer rules, build arguments, build stages;
errors per spec, "did you mean", TOML types named."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from typer.testing import CliRunner

from layerkit.build.dockerfile import generate
from layerkit.build.specs import build_order, load, load_set
from layerkit.cli.app import app
from layerkit.errors import SpecError, UsageError
from tests.conftest import IMAGES, PACKAGE_DIR
from tests.unit.test_specs import write_spec

runner = CliRunner(env={"COLUMNS": "120", "TERM": "dumb"})
APP = """parent = "base"
[args]
PIP_VERSION = "24.0"

[[steps]]
phase = "app"
run = "python3 -m compileall /opt/app"

[[steps]]
run = "pip install pip==$PIP_VERSION -r /opt/app/requirements.txt"
inputs = { "requirements.txt" = "/opt/app/requirements.txt" }

[[files]]
src = "app.py"
dest = "/opt/app/app.py"
changes = "often"

[[stages]]
name = "builder"
inputs = { "hello.c" = "/src/hello.c" }
run = ["mkdir -p /out", "cc -o /out/hello /src/hello.c"]

[[artifacts]]
stage = "builder"
src = "/out/hello"
dest = "/usr/local/bin/hello"
"""


def app_spec(tmp_path: Path, text: str = APP) -> Path:
    path = write_spec(tmp_path, text, name="app")
    (path.parent / "requirements.txt").write_text("jinja2\n")
    (path.parent / "hello.c").write_text("int main(void){return 0;}\n")
    return path


def kinds(text: str) -> list[str]:
    parser = DockerfileParser(fileobj=io.BytesIO())
    parser.content = text
    return [f"{i['instruction']} {i['value']}" for i in parser.structure
            if i["instruction"] != "COMMENT"]


def test_steps_are_placed_by_the_layer_rules(tmp_path: Path) -> None:
    spec = load(app_spec(tmp_path), PACKAGE_DIR)
    lines = kinds(generate(spec, "layerkit/base:1", "1").text)
    main = lines[lines.index("FROM layerkit/base:1"):]
    deps = main.index("RUN pip install pip==$PIP_VERSION -r /opt/app/requirements.txt")
    source = main.index("COPY often-root/ /")
    compile_ = main.index("RUN python3 -m compileall /opt/app")
    # the deps step (after its own input) comes before the source, the app step after it
    assert main[deps - 1] == "COPY step-1/ /"
    assert deps < main.index("COPY --from=builder /out/hello /usr/local/bin/hello") < source
    assert source < compile_
    assert main[1] == 'ARG PIP_VERSION="24.0"'


def test_build_args_come_after_packages_and_user(tmp_path: Path) -> None:
    """A new --build-arg value reruns the steps, not the apt installs or the user's RUN."""
    text = APP.replace('parent = "base"\n', 'parent = "base"\n[[packages]]\ninstall = ["curl"]\n'
                       '[user]\nname = "app"\n').replace(
        '[[stages]]\nname = "builder"\n', '[[stages]]\nname = "builder"\ninstall = ["gcc"]\n')
    spec = load(app_spec(tmp_path, text), PACKAGE_DIR)
    lines = kinds(generate(spec, "layerkit/base:1", "1").text)
    main = lines.index("FROM layerkit/base:1")
    runs = [i for i, line in enumerate(lines) if line.startswith("RUN ")]
    stage_apt, main_apt, useradd = runs[0], runs[3], runs[4]
    assert "apt-get install" in lines[stage_apt]
    assert "apt-get install" in lines[main_apt]
    assert "useradd" in lines[useradd]
    args = [i for i, line in enumerate(lines) if line.startswith("ARG PIP_VERSION")]
    assert len(args) == 2
    assert stage_apt < args[0] < main < useradd < args[1]


def test_a_stage_builds_apart_and_only_its_artefact_ships(tmp_path: Path) -> None:
    spec = load(app_spec(tmp_path), PACKAGE_DIR)
    generated = generate(spec, "layerkit/base:1", "1")
    lines = kinds(generated.text)
    assert lines[0] == "FROM layerkit/base:1 AS builder"
    assert lines.count("RUN cc -o /out/hello /src/hello.c") == 1
    stage_end = lines.index("FROM layerkit/base:1")
    assert "COPY stage-builder/ /" in lines[:stage_end]
    arcs = {f.arcname for f in generated.files}
    assert {"stage-builder/src/hello.c", "step-1/opt/app/requirements.txt",
            "often-root/opt/app/app.py"} <= arcs


def test_stage_parent_that_is_a_spec_is_built_first(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_spec(images, 'parent = "debian:bookworm-slim"\n', name="tools")
    write_spec(images, 'parent = "debian:bookworm-slim"\n[[stages]]\nname = "b"\n'
                       'parent = "tools"\nrun = ["true"]\n', name="app")
    found = load_set(images, PACKAGE_DIR)
    assert [s.name for s in build_order(found.specs, ["app"])] == ["tools", "app"]


@pytest.mark.parametrize(("text", "key", "fragment"), [
    ('parent = "x"\n[[steps]]\nrun = "true"\nphase = "later"\n', "steps[0].phase", '"deps"'),
    ('parent = "x"\n[[steps]]\nrn = "true"\n', "steps[0].rn", "did you mean 'run'"),
    ('parent = "x"\n[[artifacts]]\nstage = "buidler"\nsrc = "/a"\ndest = "/b"\n'
     '[[stages]]\nname = "builder"\n', "artifacts[0].stage", "did you mean 'builder'"),
    ('parent = "x"\n[args]\nN = 1\n', "args.N", "not an integer"),
    ('parent = "x"\n[[stages]]\nname = "b"\n[[artifacts]]\nstage = "b"\nsrc = "/a"\n'
     'dest = "/b"\nmode = "0755"\n', "artifacts[0].mode", "chmod in the stage's run"),
    ('parent = "x"\npackges = []\n', "packges", "did you mean 'packages'"),
    ('parent = "x"\n[[files]]\nsrc = "app.py"\ndest = "/a"\nmode = 0o755\n', "files[0].mode",
     'not an integer (write "0755")'),
    ('parent = "x"\ndescription = 3\n', "description", "not an integer"),
    ('parent = "x"\ncmd = "run"\n', "cmd", "not a string"),
])
def test_errors_name_types_and_suggest_keys(tmp_path: Path, text: str, key: str,
                                            fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        load(write_spec(tmp_path, text), PACKAGE_DIR)
    assert info.value.key == key
    assert fragment in info.value.message


def test_misspelt_parent_suggests_the_spec(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_spec(images, 'parent = "debian:bookworm-slim"\n', name="base")
    write_spec(images, 'parent = "bsae"\n', name="app")
    found = load_set(images, PACKAGE_DIR)
    assert "did you mean 'base'?" in found.broken["app"].message
    assert set(found.specs) == {"base"}


def test_misspelt_stage_parent_suggests_the_spec(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_spec(images, 'parent = "debian:bookworm-slim"\n', name="base")
    write_spec(images, 'parent = "base"\n[[stages]]\nname = "builder"\nparent = "bsae"\n'
                       'run = ["true"]\n', name="app")
    found = load_set(images, PACKAGE_DIR)
    assert found.broken["app"].key == "stages[0].parent"
    assert found.broken["app"].line == 4
    assert "did you mean 'base'?" in found.broken["app"].message


def test_one_broken_spec_fails_only_itself_and_its_dependents(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_spec(images, 'parent = "debian:bookworm-slim"\n', name="base")
    write_spec(images, 'parent = "base"\nbogus = 1\n', name="broken")
    write_spec(images, 'parent = "broken"\n', name="child")
    write_spec(images, 'parent = "base"\n', name="fine")
    found = load_set(images, PACKAGE_DIR)
    assert set(found.specs) == {"base", "fine"}
    assert set(found.broken) == {"broken", "child"}
    assert "broken" in found.broken["child"].message
    assert [s.name for s in build_order(found.specs, ["fine"])] == ["base", "fine"]


def test_build_of_a_healthy_spec_is_not_blocked_by_a_broken_one(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_spec(images, 'parent = "debian:bookworm-slim"\n', name="base")
    write_spec(images, 'parent = "base"\nbogus = 1\n', name="broken")
    result = runner.invoke(app, ["build", "--images", str(images), "--print", "base"])
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(app, ["build", "--images", str(images), "broken"])
    assert result.exit_code == 2
    assert "bogus: unknown key" in result.stderr


def test_unknown_image_name_suggests_one() -> None:
    found = load_set(IMAGES, PACKAGE_DIR)
    with pytest.raises(UsageError, match="did you mean 'webapp'"):
        build_order(found.specs, ["webap"])


@pytest.mark.parametrize(("args", "fragment"), [
    (["--no-cache-deps"], "--no-cache-deps goes with --no-cache"),
    (["--build-arg", "NOPE=1", "webapp"], "no spec being built declares it"),
    (["--build-arg", "novalue", "webapp"], "expected NAME=VALUE"),
])
def test_build_options_checked_before_the_engine(args: list[str], fragment: str) -> None:
    env = {"DOCKER_HOST": "tcp://127.0.0.1:9"}  # never reached
    result = runner.invoke(app, ["build", "--images", str(IMAGES), *args], env=env)
    assert result.exit_code == 2, result.stderr
    assert fragment in result.stderr


def test_verbose_after_the_subcommand() -> None:
    result = runner.invoke(app, ["build", "--images", str(IMAGES), "--print", "base",
                                 "--verbose"])
    assert result.exit_code == 0, result.stderr
    assert "setting images" in result.stderr


def test_build_away_from_the_specs_says_where_they_are_looked_for(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", "--images", str(tmp_path / "images"), "--print", "x"])
    assert result.exit_code == 2
    assert "no such directory of image specs" in result.stderr
    assert "--images DIR" in result.stderr
