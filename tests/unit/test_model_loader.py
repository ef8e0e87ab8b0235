"""Loading profiles and labs: every bad input is one line naming file, YAML line and field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import ConfigError
from testbed.model import Endpoint, Lab, Profile, load_any, load_lab, load_profile
from testbed.model.loader import parse_yaml

REPO = Path(__file__).resolve().parents[2]
SHIPPED_LAB = REPO / "profiles" / "labs" / "emulated.yaml"
SHIPPED_PROFILE = REPO / "profiles" / "radio_outage.yaml"

Loader = Callable[[Path], Any]


def write(tmp_path: Path, text: str, name: str = "input.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, marker: str) -> int:
    """1-based number of the only line of ``text`` that contains ``marker``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if marker in line]
    assert len(hits) == 1, f"marker {marker!r} must occur on exactly one line, found {hits}"
    return hits[0]


def problems(loader: Loader, path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loader(path)
    assert info.value.problems, "a ConfigError must carry at least one problem"
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def only_problem(loader: Loader, path: Path) -> str:
    found = problems(loader, path)
    assert len(found) == 1, f"expected exactly one problem, got {found}"
    assert "Traceback" not in found[0]
    assert "\n" not in found[0]
    return found[0]


def assert_located(problem: str, path: Path, line: int, field: str, *words: str) -> None:
    prefix = f"{path}:{line}: {field}: "
    assert problem.startswith(prefix), f"{problem!r} does not start with {prefix!r}"
    for word in words:
        assert word in problem[len(prefix) :], f"{word!r} missing from {problem!r}"


def split_problem(problem: str, path: Path) -> tuple[str, int, str]:
    """``FILE:LINE: field: message`` -> (field, line, message)."""
    assert problem.startswith(f"{path}:"), problem
    line, field, message = problem[len(f"{path}:") :].split(": ", 2)
    return field, int(line), message


PROFILE_HEAD = """\
schema_version: 1
name: p
"""

LAB_HEAD = """\
schema_version: 1
name: lab
address_pool: 10.201.0.0/16
"""

LAB_DEVICES = """\
devices:
  - {name: net, kind: network, driver: emulated}
  - {name: traffic, kind: traffic, driver: emulated}
  - {name: capture, kind: capture, driver: dumpcap}
"""


# --------------------------------------------------------------------------------------------
# The shipped files
# --------------------------------------------------------------------------------------------


def test_shipped_lab_loads() -> None:
    lab, source = load_lab(SHIPPED_LAB)
    assert isinstance(lab, Lab)
    assert lab.name == "emulated-cross-border"
    assert lab.schema_version == 1
    names = [n.name for n in lab.nodes]
    assert len(names) == len(set(names)) == 11
    assert {"ue_a1", "ue_b1", "ran_a", "core_b", "mcptt_as", "ops_centre"} <= set(names)
    assert {n.name for n in lab.nodes if n.forwarding} == {
        "ran_a",
        "ran_b",
        "core_a",
        "core_a_sb",
        "core_b",
    }
    backbone = next(x for x in lab.links if x.name == "backbone")
    assert backbone.subnet == "10.200.0.0/24"
    assert [e.node for e in backbone.endpoints] == [
        "core_a",
        "core_b",
        "mcptt_as",
        "ops_centre",
        "core_a_sb",
    ]
    assert {(d.name, d.kind, d.driver) for d in lab.devices} == {
        ("net", "network", "emulated"),
        ("traffic", "traffic", "emulated"),
        ("capture", "capture", "dumpcap"),
        ("radio_channel", "impairment", "emulated"),
        ("mcptt", "mcptt", "emulated"),
        ("atten", "attenuator", "scpi"),
        ("psu", "power_supply", "scpi"),
        *((f"modem_{ue}", "radio", "at") for ue in ("a1", "a2", "b1", "b2")),
        ("swmi", "core", "tetra_emulated"),
        ("core_a", "core", "open5gs"),
        ("core_a_sb", "core", "open5gs"),
        ("core_b", "core", "amarisoft"),
        *((f"tetra_{t}", "radio", "pei") for t in ("dispatch", "fire1", "fire2")),
    }
    assert {x.name for x in lab.links if x.impaired_by == "radio_channel"} == {
        "radio_a1",
        "radio_a2",
        "radio_b1",
        "radio_b2",
        "radio_a1_b",
        "radio_a2_b",
    }
    assert {x.name for x in lab.links if not x.static_routes} == {"radio_a1_b", "radio_a2_b"}
    assert source.path == SHIPPED_LAB
    # the source remembers where things are: the backbone link is on its own line
    text = SHIPPED_LAB.read_text(encoding="utf-8")
    index = [x.name for x in lab.links].index("backbone")
    assert source.line_of(("links", index)) == line_of(text, "name: backbone")


def test_shipped_profile_loads() -> None:
    profile, source = load_profile(SHIPPED_PROFILE)
    assert isinstance(profile, Profile)
    assert profile.name == "radio_outage"
    assert profile.duration_s == 8
    assert [s.id for s in profile.streams] == ["ue_a1_to_as", "as_to_ue_b1", "ops_to_ue_a2"]
    first = profile.streams[0]
    assert (first.from_node, first.to_node, first.rate_pps, first.dscp) == (
        "ue_a1",
        "mcptt_as",
        100,
        46,
    )
    assert [(e.at_s, e.action) for e in profile.timeline] == [(3.0, "link_down"), (5.0, "link_up")]
    assert profile.captures == ("ue_a1_radio", "as_backbone")
    assert len(profile.kpis) == 4
    text = SHIPPED_PROFILE.read_text(encoding="utf-8")
    assert source.line_of(("streams", 1, "rate_pps")) == line_of(text, "id: as_to_ue_b1")


def test_load_any_tells_labs_from_profiles() -> None:
    assert isinstance(load_any(SHIPPED_LAB), Lab)
    assert isinstance(load_any(SHIPPED_PROFILE), Profile)


# --------------------------------------------------------------------------------------------
# One bad input, one clear line
# --------------------------------------------------------------------------------------------


def test_unknown_field_is_named_on_its_line(tmp_path: Path) -> None:
    # a typo of a field that has a default, so the typo is the only problem
    text = PROFILE_HEAD + "duration_s: 10\nrepetiton: 3\n"
    path = write(tmp_path, text)
    problem = only_problem(load_profile, path)
    assert_located(problem, path, line_of(text, "repetiton"), "repetiton", "unknown field")


def test_typo_of_required_field_reports_unknown_and_missing(tmp_path: Path) -> None:
    text = PROFILE_HEAD + "duraton_s: 10\n"
    path = write(tmp_path, text)
    found = problems(load_profile, path)
    assert len(found) == 2, found
    typo = next(p for p in found if "duraton_s" in p)
    missing = next(p for p in found if "duraton_s" not in p)
    assert_located(typo, path, line_of(text, "duraton_s"), "duraton_s", "unknown field")
    assert_located(missing, path, 1, "duration_s", "required field is missing")


def test_nested_unknown_field_has_the_full_path(tmp_path: Path) -> None:
    text = PROFILE_HEAD + (
        "duration_s: 10\n"
        "streams:\n"
        "  - id: s1\n"
        "    from: a\n"
        "    to: b\n"
        "    rate_pps: 10\n"
        "    payload_byte: 100\n"
    )
    path = write(tmp_path, text)
    problem = only_problem(load_profile, path)
    assert_located(
        problem, path, line_of(text, "payload_byte"), "streams[0].payload_byte", "unknown field"
    )


def test_missing_required_field_points_at_its_mapping(tmp_path: Path) -> None:
    text = PROFILE_HEAD + (
        "duration_s: 10\n"
        "streams:\n"
        "  - {id: s1, from: a, to: b, rate_pps: 10}\n"
        "  - id: s2\n"
        "    from: a\n"
        "    to: b\n"
    )
    path = write(tmp_path, text)
    problem = only_problem(load_profile, path)
    assert_located(
        problem, path, line_of(text, "id: s2"), "streams[1].rate_pps", "required field is missing"
    )


def test_missing_top_level_field(tmp_path: Path) -> None:
    path = write(tmp_path, PROFILE_HEAD + "repetitions: 2\n")
    problem = only_problem(load_profile, path)
    assert_located(problem, path, 1, "duration_s", "required field is missing")


@pytest.mark.parametrize(
    ("body", "marker", "field"),
    [
        ('duration_s: "ten"\n', "duration_s", "duration_s"),
        ('duration_s: "10"\n', "duration_s", "duration_s"),
        (
            'duration_s: 10\nstreams:\n  - id: s\n    from: a\n    to: b\n    rate_pps: "100"\n',
            "rate_pps",
            "streams[0].rate_pps",
        ),
    ],
    ids=["word", "quoted-number", "nested"],
)
def test_string_for_a_number_is_a_type_error(
    tmp_path: Path, body: str, marker: str, field: str
) -> None:
    text = PROFILE_HEAD + body
    path = write(tmp_path, text)
    problem = only_problem(load_profile, path)
    assert_located(problem, path, line_of(text, marker), field, "valid number")


def test_negative_rate_is_out_of_range(tmp_path: Path) -> None:
    text = PROFILE_HEAD + (
        "duration_s: 10\nstreams:\n  - id: s\n    from: a\n    to: b\n    rate_pps: -5\n"
    )
    path = write(tmp_path, text)
    problem = only_problem(load_profile, path)
    assert_located(
        problem, path, line_of(text, "rate_pps"), "streams[0].rate_pps", "greater than 0", "-5"
    )


def test_out_of_range_in_a_flow_mapping(tmp_path: Path) -> None:
    text = PROFILE_HEAD + "duration_s: 10\nimpairments:\n  - {link: x, loss_pct: 150}\n"
    path = write(tmp_path, text)
    problem = only_problem(load_profile, path)
    assert_located(
        problem, path, line_of(text, "loss_pct"), "impairments[0].loss_pct", "less than or equal"
    )


@pytest.mark.parametrize(
    ("text", "marker"),
    [
        ("name: p\nduration_s: 10\nrepetitions: 1: 2\nstreams: []\n", "repetitions"),
        ("name: p\nduration_s: 10\n\tstreams: []\nkpis: []\n", "\tstreams"),
        ("name: p\nduration_s: 10\n---\nname: q\n", "---"),
    ],
    ids=["colon-in-value", "tab-indent", "two-documents"],
)
def test_invalid_yaml_names_the_line_of_the_error(tmp_path: Path, text: str, marker: str) -> None:
    path = write(tmp_path, text)
    problem = only_problem(load_profile, path)
    assert problem.startswith(f"{path}:{line_of(text, marker)}: not valid YAML: "), problem
    assert len(problem) > len(f"{path}:1: not valid YAML: ")  # the reason follows


@pytest.mark.parametrize(
    "text", ["", "\n\n", "# only a comment\n"], ids=["empty", "blank", "comment"]
)
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert only_problem(load_profile, path) == f"{path}:1: the file is empty"
    assert only_problem(load_lab, path) == f"{path}:1: the file is empty"


@pytest.mark.parametrize("text", ["- name: p\n- duration_s: 10\n", "just text\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    for loader in (load_profile, load_lab, load_any):
        problem = only_problem(loader, path)
        assert_located(problem, path, 1, "(document)", "expected a mapping")


def test_duplicate_key_names_the_second_occurrence(tmp_path: Path) -> None:
    text = "name: p\nduration_s: 10\ndescription: first\nrepetitions: 2\ndescription: again\n"
    path = write(tmp_path, text)
    problem = only_problem(load_profile, path)
    assert_located(problem, path, line_of(text, "again"), "description", "duplicate key")


def test_nested_duplicate_key(tmp_path: Path) -> None:
    text = PROFILE_HEAD + (
        "duration_s: 10\n"
        "streams:\n"
        "  - id: s\n"
        "    from: a\n"
        "    to: b\n"
        "    from: c\n"
        "    rate_pps: 1\n"
    )
    path = write(tmp_path, text)
    problem = only_problem(load_profile, path)
    assert_located(problem, path, line_of(text, "from: c"), "streams[0].from", "duplicate key")


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN", "1.0e+999"])
def test_non_finite_numbers_are_rejected(tmp_path: Path, value: str) -> None:
    text = PROFILE_HEAD + (f"duration_s: 10\nimpairments:\n  - link: x\n    delay_ms: {value}\n")
    path = write(tmp_path, text)
    problem = only_problem(load_profile, path)
    assert_located(problem, path, line_of(text, "delay_ms"), "impairments[0].delay_ms", "finite")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "lab.yaml"
    for loader in (load_profile, load_lab, load_any):
        assert only_problem(loader, path) == f"{path}: no such file"


def test_directory_and_binary_file_are_clear_problems(tmp_path: Path) -> None:
    problem = only_problem(load_profile, tmp_path)
    assert problem.startswith(f"{tmp_path}: cannot read"), problem
    binary = tmp_path / "blob.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    assert only_problem(load_profile, binary).startswith(f"{binary}: "), binary


# --------------------------------------------------------------------------------------------
# Labs: field checks and cross-references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subnet", ["10.300.0.0/24", "10.0.0.0/33", "banana", "10.0.0.1/24"])
def test_bad_cidr_subnet(tmp_path: Path, subnet: str) -> None:
    text = LAB_HEAD + (
        "nodes:\n"
        "  - {name: a}\n"
        "  - {name: b}\n"
        "links:\n"
        "  - name: ab\n"
        "    endpoints: [a, b]\n"
        f"    subnet: {subnet}\n"
    )
    path = write(tmp_path, text)
    problem = only_problem(load_lab, path)
    # 10.0.0.1/24 has host bits set: not a network either
    assert_located(problem, path, line_of(text, "subnet:"), "links[0].subnet", subnet)


def test_ipv6_subnet_is_refused(tmp_path: Path) -> None:
    text = (
        LAB_HEAD + "nodes: [{name: a}, {name: b}]\nlinks:\n  - {name: ab, endpoints: [a, b], "
        "subnet: 'fd00::/64'}\n"
    )
    path = write(tmp_path, text)
    problem = only_problem(load_lab, path)
    assert_located(problem, path, line_of(text, "fd00"), "links[0].subnet", "only IPv4")


def test_bad_address_pool(tmp_path: Path) -> None:
    text = "name: lab\naddress_pool: 10.0.0.0/25\nnodes: [{name: a}]\n"
    path = write(tmp_path, text)
    problem = only_problem(load_lab, path)
    assert_located(problem, path, 2, "address_pool", "/24 or larger")


def test_bad_endpoint_address_is_one_problem(tmp_path: Path) -> None:
    text = LAB_HEAD + (
        "nodes:\n"
        "  - {name: a}\n"
        "  - {name: b}\n"
        "links:\n"
        "  - name: ab\n"
        "    endpoints:\n"
        "      - {node: a, address: 10.0.0.1/33}\n"
        "      - b\n"
    )
    path = write(tmp_path, text)
    problem = only_problem(load_lab, path)
    assert_located(
        problem, path, line_of(text, "/33"), "links[0].endpoints[0].address", "10.0.0.1/33"
    )


def test_endpoint_on_unknown_node(tmp_path: Path) -> None:
    text = LAB_HEAD + (
        "nodes:\n"
        "  - {name: a}\n"
        "  - {name: b}\n"
        "links:\n"
        "  - name: ab\n"
        "    endpoints:\n"
        "      - a\n"
        "      - ghost:eth3\n"
    )
    path = write(tmp_path, text)
    problem = only_problem(load_lab, path)
    assert_located(
        problem, path, line_of(text, "ghost"), "links[0].endpoints[1].node", "'ghost'", "no node"
    )


def test_duplicate_node_names(tmp_path: Path) -> None:
    text = LAB_HEAD + "nodes:\n  - {name: a}\n  - {name: b}\n  - name: a\n    forwarding: true\n"
    path = write(tmp_path, text)
    problem = only_problem(load_lab, path)
    assert_located(problem, path, line_of(text, "- name: a"), "nodes[2].name", "duplicate", "'a'")


def test_capture_point_on_a_link_its_node_is_not_on(tmp_path: Path) -> None:
    text = LAB_HEAD + (
        "nodes:\n"
        "  - {name: a}\n"
        "  - {name: b}\n"
        "  - {name: c}\n"
        "links:\n"
        "  - {name: ab, endpoints: [a, b]}\n"
        "  - {name: bc, endpoints: [b, c]}\n" + LAB_DEVICES + "capture_points:\n"
        "  - {name: ok, node: a, link: ab}\n"
        "  - name: wrong\n"
        "    node: a\n"
        "    link: bc\n"
    )
    path = write(tmp_path, text)
    problem = only_problem(load_lab, path)
    assert_located(
        problem, path, line_of(text, "link: bc"), "capture_points[1].link", "'a'", "'bc'"
    )


def test_subnet_overlapping_the_address_pool(tmp_path: Path) -> None:
    text = LAB_HEAD + (
        "nodes: [{name: a}, {name: b}]\n"
        "links:\n"
        "  - name: ab\n"
        "    endpoints: [a, b]\n"
        "    subnet: 10.201.7.0/24\n"
    )
    path = write(tmp_path, text)
    problem = only_problem(load_lab, path)
    assert_located(
        problem, path, line_of(text, "10.201.7"), "links[0].subnet", "address_pool", "10.201.0.0/16"
    )


def test_subnets_of_two_links_overlapping(tmp_path: Path) -> None:
    text = LAB_HEAD + (
        "nodes: [{name: a}, {name: b}]\n"
        "links:\n"
        "  - {name: one, endpoints: [a, b], subnet: 10.9.0.0/24}\n"
        "  - {name: two, endpoints: [a, b], subnet: 10.9.0.128/25}\n"
    )
    path = write(tmp_path, text)
    problem = only_problem(load_lab, path)
    assert_located(problem, path, line_of(text, "name: two"), "links[1].subnet", "overlaps")


def test_many_problems_in_one_file_are_reported_together(tmp_path: Path) -> None:
    text = PROFILE_HEAD + (
        "duraton_s: 10\n"  # unknown field + duration_s missing
        "repetitions: zero\n"  # wrong type
        "streams:\n"
        "  - {id: s1, from: a, to: b, rate_pps: -1}\n"  # out of range
        "  - {id: s2, from: a, to: b, rate_pps: 5, dscp: 99}\n"  # out of range
        "kpis:\n"
        "  - {name: k, stream: s1, metric: loss_pct}\n"  # no limit
    )
    path = write(tmp_path, text)
    found = problems(load_profile, path)
    expected = {
        ("duraton_s", line_of(text, "duraton_s")),
        ("duration_s", 1),
        ("repetitions", line_of(text, "zero")),
        ("streams[0].rate_pps", line_of(text, "id: s1")),
        ("streams[1].dscp", line_of(text, "id: s2")),
        ("kpis[0]", line_of(text, "name: k")),
    }
    assert len(found) == len(expected), found
    assert {split_problem(p, path)[:2] for p in found} == expected


def test_many_lab_cross_reference_problems_are_reported_together(tmp_path: Path) -> None:
    text = LAB_HEAD + (
        "nodes:\n"
        "  - {name: a}\n"
        "  - {name: a}\n"  # duplicate
        "links:\n"
        "  - {name: ab, endpoints: [a, ghost]}\n"  # unknown node
        "  - {name: in_pool, endpoints: [a, b], subnet: 10.201.1.0/24}\n"  # b unknown, overlap
        "devices:\n"
        "  - {name: net, kind: network, driver: emulated, node: nowhere}\n"  # unknown node
        "capture_points:\n"
        "  - {name: cp, node: a}\n"  # neither link nor ifname, and no capture device
    )
    path = write(tmp_path, text)
    found = problems(load_lab, path)
    assert len(found) == 7, found
    assert all(p.startswith(f"{path}:") for p in found)
    joined = "\n".join(found)
    for fragment in (
        "nodes[1].name: duplicate name 'a'",
        "links[0].endpoints[1].node: no node named 'ghost'",
        "links[1].endpoints[1].node: no node named 'b'",
        "links[1].subnet: overlaps the address_pool",
        "devices[0].node: no node named 'nowhere'",
        "capture_points[0]: give the link or the ifname",
        "capture_points[0].device: no device named 'capture'",
    ):
        assert fragment in joined


# --------------------------------------------------------------------------------------------
# Shorthand, sources, schemas
# --------------------------------------------------------------------------------------------


def test_endpoint_shorthand(tmp_path: Path) -> None:
    text = LAB_HEAD + (
        "nodes: [{name: a}, {name: b}, {name: c}]\n"
        "links:\n"
        "  - {name: ab, endpoints: ['a:wan0', b]}\n"
        "  - name: bc\n"
        "    endpoints:\n"
        "      - b:lan.1\n"
        "      - {node: c, ifname: eth7, address: 10.9.0.2/30}\n"
        "    subnet: 10.9.0.0/30\n"
    )
    lab, _ = load_lab(write(tmp_path, text))
    assert lab.links[0].endpoints == (Endpoint(node="a", ifname="wan0"), Endpoint(node="b"))
    assert lab.links[1].endpoints == (
        Endpoint(node="b", ifname="lan.1"),
        Endpoint(node="c", ifname="eth7", address="10.9.0.2/30"),
    )


def test_shorthand_with_bad_interface_name(tmp_path: Path) -> None:
    text = (
        LAB_HEAD + "nodes: [{name: a}, {name: b}]\nlinks:\n"
        "  - {name: ab, endpoints: ['a:this-name-is-too-long', b]}\n"
    )
    path = write(tmp_path, text)
    found = problems(load_lab, path)
    assert any(
        p.startswith(f"{path}:{line_of(text, 'too-long')}: links[0].endpoints[0].ifname: ")
        for p in found
    ), found


def test_parse_yaml_keeps_lines(tmp_path: Path) -> None:
    text = "a: 1\nb:\n  - x\n  - {c: 2}\nd:\n  e: 3\n"
    source = parse_yaml(write(tmp_path, text))
    assert source.data == {"a": 1, "b": ["x", {"c": 2}], "d": {"e": 3}}
    assert source.line_of(("a",)) == 1
    assert source.line_of(("b",)) == 2
    assert source.line_of(("b", 0)) == 3
    assert source.line_of(("b", 1, "c")) == 4
    assert source.line_of(("d", "e")) == 6
    assert source.line_of(("d", "missing", 3)) == 5  # deepest known ancestor
    assert source.line_of(()) == 1
    assert source.problem(("b", 1, "c"), "bad") == f"{source.path}:4: b[1].c: bad"
    assert source.problem((), "bad") == f"{source.path}:1: (document): bad"


@pytest.mark.parametrize("model", [Profile, Lab])
def test_json_schema_export(model: type[Profile] | type[Lab]) -> None:
    schema = json.loads(json.dumps(model.model_json_schema(by_alias=True)))
    assert schema["type"] == "object"
    assert schema["title"] == model.__name__
    assert "schema_version" in schema["properties"]
    version = schema["properties"]["schema_version"]
    assert version.get("const") == 1 or version.get("enum") == [1], version
    assert schema.get("additionalProperties") is False
    assert "name" in schema["required"]


def test_profile_schema_uses_the_yaml_names_of_stream_fields() -> None:
    schema = Profile.model_json_schema(by_alias=True)
    stream = schema["$defs"]["Stream"]
    assert {"from", "to", "rate_pps"} <= set(stream["properties"])
    assert {"from", "to", "id"} <= set(stream["required"])


# --------------------------------------------------------------------------------------------
# Inputs that must not escape as tracebacks
# --------------------------------------------------------------------------------------------


def test_unknown_yaml_tag_is_a_config_error(tmp_path: Path) -> None:
    text = "name: p\nduration_s: !seconds 10\n"
    path = write(tmp_path, text)
    problem = only_problem(load_profile, path)
    assert problem.startswith(f"{path}:2: "), problem


def test_recursive_alias_is_a_config_error(tmp_path: Path) -> None:
    text = "name: p\nduration_s: 10\nstreams: &loop [*loop]\n"
    path = write(tmp_path, text)
    problem = only_problem(load_profile, path)
    assert problem.startswith(f"{path}:3: "), problem
