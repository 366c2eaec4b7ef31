"""Spec validation: every error names the file, the key and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerkit.build.specs import build_order, load, load_all, locate
from layerkit.errors import SpecError, UsageError
from tests.conftest import IMAGES, PACKAGE_DIR


def write_spec(tmp_path: Path, text: str, name: str = "img") -> Path:
    d = tmp_path / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "app.py").write_text("print('hi')\n")
    svc = d / "services" / "web"
    svc.mkdir(parents=True, exist_ok=True)
    (svc / "run").write_text("#!/bin/sh\nexec true\n")
    path = d / "image.toml"
    path.write_text(text)
    return path


def test_project_specs_load_and_order() -> None:
    specs = load_all(IMAGES, PACKAGE_DIR)
    assert set(specs) == {"base", "haproxy", "keepalived", "webapp"}
    order = [s.name for s in build_order(specs, ["webapp"])]
    assert order == ["base", "webapp"]
    assert build_order(specs)[0].name == "base"
    assert specs["base"].bootstrap
    assert specs["webapp"].user is not None
    assert specs["webapp"].user.name == "app"


@pytest.mark.parametrize(("text", "key", "line", "fragment"), [
    ('parent = "x"\nbogus = 1\n', "bogus", 2, "unknown key"),
    ('description = "d"\n', "parent", None, "is required"),
    ('parent = "x"\n[[packages]]\ninstall = ["Bad Name"]\n', "packages[0].install", 3,
     "not a Debian package"),
    ('parent = "x"\n[[packages]]\ninstall = ["ok"]\n[[packages]]\ninstall = []\n',
     "packages[1].install", 5, "at least one"),
    ('parent = "x"\n[[files]]\nsrc = "app.py"\ndest = "relative"\n', "files[0].dest", 4,
     "absolute"),
    ('parent = "x"\n[[files]]\nsrc = "missing.py"\ndest = "/a"\n', "files[0].src", 3,
     "does not exist"),
    ('parent = "x"\n[[files]]\nsrc = "../../etc/passwd"\ndest = "/a"\n', "files[0].src", 3,
     "relative path"),
    ('parent = "x"\n[[files]]\nsrc = "app.py"\ndest = "/a"\nmode = "999"\n', "files[0].mode", 5,
     "octal"),
    ('parent = "x"\n[[files]]\nsrc = "app.py"\ndest = "/a"\nowner = "bob"\n', "files[0].owner",
     5, "root"),
    ('parent = "x"\n[[files]]\nsrc = "app.py"\ndest = "/a"\nchanges = "daily"\n',
     "files[0].changes", 5, "rarely"),
    ('parent = "x"\nports = [0]\n', "ports", 2, "port"),
    ('parent = "x"\nservices = ["nope"]\n', "services", 2, "no run script"),
    ('parent = "x"\n[user]\nname = "root"\n', "user.name", 3, "non-root"),
    ('parent = "x"\n[user]\nname = "app"\nuid = 5\n', "user.uid", 4, "1000"),
    ('parent = "x"\n[env]\n"1BAD" = "v"\n', "env.1BAD", 3, "not a valid env"),
    ('parent = "Bad Ref!"\n', "parent", 1, "not an image"),
    ('parent = "x"\n[[artifact]]\nstage = "b"\n', "artifact", 2, "did you mean 'artifacts'"),
    ('parent = "x"\n[usr]\nname = "app"\n', "usr", 2, "did you mean 'user'"),
])
def test_validation_names_file_key_and_line(tmp_path: Path, text: str, key: str,
                                            line: int | None, fragment: str) -> None:
    path = write_spec(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load(path, PACKAGE_DIR)
    err = info.value
    assert err.key == key
    assert err.line == line
    assert err.path == str(path)
    assert fragment in err.message
    assert err.exit_code == 2
    assert "\n" not in err.message


def test_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    path = write_spec(tmp_path, 'parent = "x"\nbroken = [\n')
    with pytest.raises(SpecError) as info:
        load(path, PACKAGE_DIR)
    assert "not valid TOML" in info.value.message
    assert str(path) in info.value.message


def test_parent_cycle_detected(tmp_path: Path) -> None:
    write_spec(tmp_path / "images", 'parent = "b"\n', name="a")
    write_spec(tmp_path / "images", 'parent = "a"\n', name="b")
    with pytest.raises(SpecError, match="cycle"):
        load_all(tmp_path / "images", PACKAGE_DIR)


def test_unknown_image_name_is_usage_error() -> None:
    specs = load_all(IMAGES, PACKAGE_DIR)
    with pytest.raises(UsageError, match="no image spec named 'nope'"):
        build_order(specs, ["nope"])


def test_locate_finds_keys_in_array_tables() -> None:
    text = 'a = 1\n[[files]]\nsrc = "x"\n[[files]]\nsrc = "y"\nmode = "0644"\n'
    assert locate(text, "a") == 1
    assert locate(text, "src", table="files", index=0) == 3
    assert locate(text, "src", table="files", index=1) == 5
    assert locate(text, "mode", table="files", index=1) == 6
    assert locate(text, "mode", table="files", index=0) == 2  # missing: points at the table


def test_pkg_sources_resolve_inside_the_package(tmp_path: Path) -> None:
    path = write_spec(tmp_path, 'parent = "x"\n[[files]]\nsrc = "pkg:agent/webapp.py"\n'
                                'dest = "/opt/app.py"\nchanges = "often"\n')
    spec = load(path, PACKAGE_DIR)
    assert spec.files[0].path == PACKAGE_DIR / "agent" / "webapp.py"
    assert spec.files[0].often
