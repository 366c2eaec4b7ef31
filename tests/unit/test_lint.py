"""lint rules, one Dockerfile per rule (firing and not firing), and the lint command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerkit.analyze.lint import RULES, lint_text
from layerkit.cli.app import app
from tests.conftest import DATA


def rules(text: str) -> list[tuple[int, str]]:
    return [(f.line, f.rule) for f in lint_text(text).findings]


def test_consecutive_runs() -> None:
    assert rules("FROM a\nRUN echo 1\nRUN echo 2\nENV X=1\nRUN echo 3\n") == [(3, "LK001")]


def test_continuation_lines_keep_the_instruction_line() -> None:
    text = "FROM a\nRUN echo 1 \\\n    && echo 2\nRUN echo 3\n"
    assert rules(text) == [(4, "LK001")]


def test_apt_without_cleanup_and_recommends() -> None:
    text = "FROM a\nRUN apt-get update && apt-get install -y curl\n"
    assert rules(text) == [(2, "LK002"), (2, "LK003"), (2, "LK004")]


def test_apt_done_right_has_no_findings() -> None:
    text = ("FROM a\nRUN apt-get update && apt-get install -y --no-install-recommends curl \\\n"
            " && apt-get clean && rm -rf /var/lib/apt/lists/*\n")
    assert rules(text) == []


def test_apt_lists_removed_in_a_later_run_still_counts() -> None:
    text = ("FROM a\nRUN apt-get update && apt-get install -y --no-install-recommends x "
            "&& apt-get clean\nENV A=1\nRUN rm -rf /var/lib/apt/lists/*\n")
    assert rules(text) == [(2, "LK002")]


@pytest.mark.parametrize(("command", "expected"), [
    ("pip install flask", ["LK005"]), ("pip3 install --no-cache-dir flask", []),
    ("python3 -m pip install -U flask", ["LK005"]),
])
def test_pip_cache(command: str, expected: list[str]) -> None:
    assert [r for _, r in rules(f"FROM a\nRUN {command}\n")] == expected


def test_pip_cache_env_disables_the_rule() -> None:
    assert rules("FROM a\nENV PIP_NO_CACHE_DIR=1\nRUN pip install flask\n") == []


def test_file_created_then_removed_or_chmodded_later() -> None:
    text = ("FROM a\nCOPY big.tar.gz /opt/big.tar.gz\nWORKDIR /opt\n"
            "RUN tar xzf /opt/big.tar.gz && rm /opt/big.tar.gz\n"
            "ENV X=1\nRUN curl -o /usr/local/bin/tool https://example.invalid/tool\n"
            "ENV Y=1\nRUN chmod +x /usr/local/bin/tool\n")
    found = lint_text(text).findings
    assert [(f.line, f.rule) for f in found] == [(4, "LK006"), (8, "LK006")]
    assert "line 2" in found[0].message
    assert "line 6" in found[1].message


def test_rm_of_something_not_created_here_is_fine() -> None:
    assert rules("FROM a\nRUN rm -rf /etc/motd\n") == []


def test_source_copied_before_dependencies() -> None:
    text = "FROM a\nWORKDIR /app\nCOPY . /app\nRUN pip install --no-cache-dir -r requirements.txt\n"
    assert rules(text) == [(3, "LK007")]
    ordered = ("FROM a\nWORKDIR /app\nCOPY requirements.txt /app/\n"
               "RUN pip install --no-cache-dir -r requirements.txt\nCOPY . /app\n")
    assert rules(ordered) == []


def test_findings_of_earlier_stages_have_no_step() -> None:
    # the earlier stage ships: the final one is built FROM it
    report = lint_text("FROM a AS build\nRUN pip install x\nFROM build\nCOPY --from=build /x /x\n"
                       "RUN pip install y\n")
    assert [(f.line, f.step) for f in report.findings] == [(2, None), (5, 1)]
    assert [s.instruction for s in report.steps] == ["COPY", "RUN"]


def test_every_rule_has_a_one_line_fix() -> None:
    assert sorted(RULES) == [f"LK00{i}" for i in range(1, 8)]
    assert all("\n" not in fix for _, fix in RULES.values())


def test_lint_command(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM a\nRUN apt-get update\nRUN echo\n")
    runner = CliRunner()
    table = runner.invoke(app, ["lint", str(dockerfile)], terminal_width=200)
    assert table.exit_code == 1
    assert "LK002" in table.stdout
    result = runner.invoke(app, ["lint", str(dockerfile), "--format", "json"])
    body = json.loads(result.stdout)
    assert body["schema"] == "layerkit/lint/v1"
    assert [(f["line"], f["rule"]) for f in body["findings"]] == [(2, "LK002"), (3, "LK001")]
    dockerfile.write_text("FROM a\nCOPY x /x\n")
    assert runner.invoke(app, ["lint", str(dockerfile)]).exit_code == 0
    missing = runner.invoke(app, ["lint", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    directory = runner.invoke(app, ["lint", str(tmp_path)])
    assert directory.exit_code == 2
    assert "is a directory" in directory.stderr
    assert f"layerkit lint {dockerfile}" in directory.stderr


@pytest.mark.parametrize("name", ["base", "haproxy", "webapp"])
def test_layerkits_own_generated_dockerfiles_are_clean(name: str) -> None:
    """The Dockerfiles layerkit generates (golden copies) follow the rules lint checks."""
    text = (DATA / "golden" / f"{name}.Dockerfile").read_text()
    assert lint_text(text).findings == ()
