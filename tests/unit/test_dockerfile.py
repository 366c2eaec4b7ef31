"""Dockerfile generation: golden files for the project's images, and each layer rule."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from layerkit.build.build import context_tar, parent_ref
from layerkit.build.dockerfile import generate
from layerkit.build.specs import ImageSpec, load, load_all
from tests.conftest import DATA, IMAGES, PACKAGE_DIR
from tests.unit.test_specs import write_spec

GOLDEN = DATA / "golden"
VERSION = "9.9.9"


def instructions(text: str) -> list[tuple[str, str]]:
    parser = DockerfileParser(fileobj=io.BytesIO())
    parser.content = text
    return [(i["instruction"], i["value"]) for i in parser.structure
            if i["instruction"] != "COMMENT"]


@pytest.mark.parametrize("name", ["base", "haproxy", "webapp"])
def test_golden(name: str) -> None:
    specs = load_all(IMAGES, PACKAGE_DIR)
    spec = specs[name]
    text = generate(spec, parent_ref(spec, specs, VERSION), VERSION).text
    golden = GOLDEN / f"{name}.Dockerfile"
    if os.environ.get("LAYERKIT_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text(), f"regenerate with LAYERKIT_UPDATE_GOLDEN=1 ({golden})"


def spec_with(tmp_path: Path, body: str) -> ImageSpec:
    return load(write_spec(tmp_path, 'parent = "layerkit/base:1"\nservices = ["web"]\n' + body),
                PACKAGE_DIR)


FULL = '''ports = [3000]
cmd = ["s6-svscan", "/etc/services.d"]
[[packages]]
install = ["curl", "ca-certificates"]
[[packages]]
install = ["python3"]
[user]
name = "app"
[[files]]
src = "app.py"
dest = "/opt/app/app.py"
changes = "often"
owner = "app"
[[files]]
src = "app.py"
dest = "/etc/app/config.py"
mode = "0600"
[env]
A = "1"
'''


def test_rule_one_run_per_package_set_with_cleanup(tmp_path: Path) -> None:
    instrs = instructions(generate(spec_with(tmp_path, FULL), "p:1", VERSION).text)
    runs = [v for k, v in instrs if k == "RUN" and "apt-get" in v]
    assert len(runs) == 2
    for run in runs:
        assert run.index("apt-get update") < run.index("apt-get install")
        assert "--no-install-recommends" in run
        assert "rm -rf /var/lib/apt/lists/*" in run
        assert "/var/cache/apt/*" in run
    assert "ca-certificates" in runs[0]
    assert "curl" in runs[0]
    assert "python3" in runs[1]


def test_rule_slow_layers_first_source_last(tmp_path: Path) -> None:
    instrs = instructions(generate(spec_with(tmp_path, FULL), "p:1", VERSION).text)
    kinds = [k for k, _ in instrs]
    layer_kinds = [(k, v) for k, v in instrs if k in ("RUN", "COPY")]
    assert layer_kinds[-1] == ("COPY", "--chown=10001:10001 often-app/ /")
    assert [v for k, v in layer_kinds if k == "COPY"] == [
        "rarely-root/ /", "--chown=10001:10001 often-app/ /"]
    last_layer = max(i for i, k in enumerate(kinds) if k in ("RUN", "COPY"))
    assert all(k in ("ENV", "EXPOSE", "CMD", "LABEL", "STOPSIGNAL") for k in kinds[last_layer + 1:])
    assert kinds.index("RUN") < kinds.index("COPY")


def test_rule_permissions_in_context_not_in_a_second_layer(tmp_path: Path) -> None:
    gen = generate(spec_with(tmp_path, FULL), "p:1", VERSION)
    assert "chmod" not in gen.text
    assert "chown " not in gen.text.replace("--chown", "")
    modes = {f.arcname: f.mode for f in gen.files}
    assert modes["rarely-root/etc/services.d/web/run"] == 0o755
    assert modes["rarely-root/etc/app/config.py"] == 0o600
    assert modes["often-app/opt/app/app.py"] == 0o644
    with tarfile.open(fileobj=context_tar(gen)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["rarely-root/etc/app/config.py"].mode == 0o600
    assert members["rarely-root/etc/services.d/web/run"].mode == 0o755
    assert members["Dockerfile"].isfile()


def test_rule_labels(tmp_path: Path) -> None:
    parser = DockerfileParser(fileobj=io.BytesIO())
    parser.content = generate(spec_with(tmp_path, FULL), "p:1", VERSION).text
    assert parser.labels["org.layerkit.image"] == "img"
    assert parser.labels["org.layerkit.version"] == VERSION
    assert parser.baseimage == "p:1"


def test_context_is_reproducible(tmp_path: Path) -> None:
    gen = generate(spec_with(tmp_path, FULL), "p:1", VERSION)
    assert context_tar(gen).getvalue() == context_tar(gen).getvalue()


def test_no_packages_no_arg_no_run(tmp_path: Path) -> None:
    text = generate(spec_with(tmp_path, ""), "p:1", VERSION).text
    kinds = [k for k, _ in instructions(text)]
    assert "RUN" not in kinds
    assert "ARG" not in kinds
    assert kinds[:2] == ["FROM", "COPY"]


def test_pycache_and_excludes_never_copied(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, '[[files]]\nsrc = "pkg:agent/"\ndest = "/opt/agent/"\n'
                               'exclude = ["webapp.py"]\n')
    names = [f.arcname for f in generate(spec, "p:1", VERSION).files]
    assert "rarely-root/opt/agent/__init__.py" in names
    assert not any("webapp.py" in n or "__pycache__" in n or n.endswith(".pyc") for n in names)
