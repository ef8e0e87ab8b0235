"""The command line: validate, schema and plan exit 0 or 3, problems on stderr, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cli import EXIT_INVALID, EXIT_PASS, main

REPO = Path(__file__).resolve().parents[2]
SHIPPED_LAB = REPO / "profiles" / "labs" / "emulated.yaml"
SHIPPED_PROFILE = REPO / "profiles" / "radio_outage.yaml"

BAD_PROFILE = """\
name: p
duraton_s: 10
streams:
  - {id: s, from: a, to: b, rate_pps: -3}
"""
"""Three problems: unknown field (line 2), missing duration_s (line 1), rate (line 4)."""


def write(tmp_path: Path, text: str, name: str = "input.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


def test_validate_shipped_files(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["validate", str(SHIPPED_LAB), str(SHIPPED_PROFILE)], capsys)
    assert code == EXIT_PASS == 0
    assert err == ""
    assert out.splitlines() == [
        f"{SHIPPED_LAB}: valid lab 'emulated-cross-border'",
        f"{SHIPPED_PROFILE}: valid profile 'radio_outage'",
    ]


def test_validate_bad_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, BAD_PROFILE)
    code, out, err = run(["validate", str(path)], capsys)
    assert code == EXIT_INVALID == 3
    assert out == ""
    lines = err.splitlines()
    assert sorted(lines) == sorted(
        [
            f"{path}:1: duration_s: required field is missing",
            f"{path}:2: duraton_s: unknown field (check the spelling; see `testbed schema`)",
            f"{path}:4: streams[0].rate_pps: Input should be greater than 0 (got -3)",
        ]
    )


def test_validate_bad_lab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        "name: lab\nnodes:\n  - {name: a}\n  - {name: a}\n"
        "links:\n  - {name: l, endpoints: [a, z]}\n",
    )
    code, _, err = run(["validate", str(path)], capsys)
    assert code == EXIT_INVALID
    assert err.splitlines() == [
        f"{path}:4: nodes[1].name: duplicate name 'a'",
        f"{path}:6: links[0].endpoints[1].node: no node named 'z' in this lab",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ":1: the file is empty"),
        ("- a\n- b\n", ":1: (document): expected a mapping of fields at the top level"),
        ("name: p\nduration_s: 1: 2\n", ":2: not valid YAML: "),
        ("name: p\nduration_s: .inf\n", ":2: duration_s: numbers must be finite"),
        ("name: p\nname: q\nduration_s: 3\n", ":2: name: duplicate key"),
    ],
    ids=["empty", "list", "syntax", "inf", "duplicate-key"],
)
def test_validate_reports_one_line_per_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    code, out, err = run(["validate", str(path)], capsys)
    assert code == EXIT_INVALID
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"{path}{expected}"), err


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.yaml"
    code, out, err = run(["validate", str(path)], capsys)
    assert code == EXIT_INVALID
    assert (out, err) == ("", f"{path}: no such file\n")


def test_validate_mix_reports_each_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, BAD_PROFILE, "bad.yaml")
    code, out, err = run(
        ["validate", str(SHIPPED_PROFILE), str(bad), str(tmp_path / "gone.yaml"), str(SHIPPED_LAB)],
        capsys,
    )
    assert code == EXIT_INVALID
    assert out.splitlines() == [
        f"{SHIPPED_PROFILE}: valid profile 'radio_outage'",
        f"{SHIPPED_LAB}: valid lab 'emulated-cross-border'",
    ]
    err_lines = err.splitlines()
    assert len(err_lines) == 4
    assert sum(line.startswith(f"{bad}:") for line in err_lines) == 3
    assert err_lines[-1] == f"{tmp_path / 'gone.yaml'}: no such file"


# --------------------------------------------------------------------------------------------
# schema and plan
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["profile", "lab"])
def test_schema_prints_json(capsys: pytest.CaptureFixture[str], which: str) -> None:
    code, out, err = run(["schema", which], capsys)
    assert code == EXIT_PASS
    assert err == ""
    schema = json.loads(out)
    assert schema["title"] == which.capitalize()
    assert "schema_version" in schema["properties"]
    assert "name" in schema["required"]
    if which == "profile":
        assert {"from", "to"} <= set(schema["$defs"]["Stream"]["properties"])
    else:
        assert "nodes" in schema["required"]


def test_plan_of_the_shipped_profile(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)  # the default --lab is relative to the repository
    code, out, err = run(["plan", "profiles/radio_outage.yaml"], capsys)
    assert code == EXIT_PASS
    assert err == ""
    assert out.startswith("profile radio_outage on lab emulated-cross-border: 8 s x 1\n")
    lines = out.splitlines()
    streams = lines[lines.index("streams:") + 1 : lines.index("timeline:")]
    assert [line.split()[0] for line in streams] == ["ue_a1_to_as", "as_to_ue_b1", "ops_to_ue_a2"]
    assert "ue_a1 -> mcptt_as (10.200.0.3:40000) 100 pps x 120 B, DSCP 46, 0-8 s" in streams[0]
    timeline = lines[lines.index("timeline:") + 1 : lines.index("timeline:") + 3]
    assert [line.split()[2] for line in timeline] == ["net.link_down", "net.link_up"]
    assert "captures: ue_a1_radio (ue_a1:eth0), as_backbone (mcptt_as:eth0)" in lines


def test_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["plan", str(SHIPPED_PROFILE), "--lab", str(SHIPPED_LAB), "--json"], capsys)
    assert code == EXIT_PASS
    plan = json.loads(out)
    assert [s["id"] for s in plan["streams"]] == ["ue_a1_to_as", "as_to_ue_b1", "ops_to_ue_a2"]
    assert plan["addresses"]["mcptt_as"] == plan["streams"][0]["dst_address"]


def test_plan_with_unknown_nodes_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "name: p\n"
        "duration_s: 10\n"
        "streams:\n"
        "  - {id: s1, from: ue_a1, to: nobody, rate_pps: 10}\n"
        "  - {id: s2, from: ghost, to: phantom, rate_pps: 10}\n"
        "  - {id: s3, from: ue, to: mcptt_as, rate_pps: 10}\n"
        "captures: [nowhere]\n"
    )
    path = write(tmp_path, text)
    code, out, err = run(["plan", str(path), "--lab", str(SHIPPED_LAB)], capsys)
    assert code == EXIT_INVALID
    assert out == ""
    assert err.splitlines() == [
        f"{path}:4: streams[0].to: no entry named 'nobody' and no entry with that role",
        f"{path}:5: streams[1].from: no entry named 'ghost' and no entry with that role",
        f"{path}:5: streams[1].to: no entry named 'phantom' and no entry with that role",
        f"{path}:6: streams[2].from: role 'ue' is held by several entries "
        "(ue_a1, ue_a2, ue_b1, ue_b2); use a name",
        f"{path}:7: captures[0]: no capture point 'nowhere' in the lab",
    ]


def test_plan_reports_problems_of_both_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = write(tmp_path, BAD_PROFILE, "profile.yaml")
    lab = write(tmp_path, "name: lab\nnodes: []\n", "lab.yaml")
    code, _, err = run(["plan", str(profile), "--lab", str(lab)], capsys)
    assert code == EXIT_INVALID
    lines = err.splitlines()
    assert sum(line.startswith(f"{profile}:") for line in lines) == 3
    assert [line for line in lines if line.startswith(f"{lab}:")] == [
        f"{lab}:2: nodes: Tuple should have at least 1 item after validation, not 0 (got [])"
    ]


def test_console_script_exits_3_without_traceback(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "testbed"
    if not script.exists():
        pytest.skip(f"console script not installed at {script}")
    path = write(tmp_path, BAD_PROFILE)
    done = subprocess.run(
        [str(script), "validate", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 3
    assert all(line.startswith(f"{path}:") for line in done.stderr.splitlines())


def test_validate_unknown_tag_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "name: p\nduration_s: !!python/name:os.system 10\n")
    code, _, err = run(["validate", str(path)], capsys)
    assert code == EXIT_INVALID
    assert err.startswith(f"{path}:2: ")
