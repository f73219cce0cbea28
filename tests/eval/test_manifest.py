import json
import subprocess
import sys

from hypothesis import given, strategies as st

from eval.manifest import ManifestEntry, json_schema, parse_line, read_manifest, write_manifest

GOOD = {
    "system": "idadapter-v1", "subject": "alice", "references": ["refs/alice.jpg"],
    "prompt": "a photo of a woman is sks, smiling", "prompt_category": "expression",
    "seed": 42, "image": "images/alice_0000.png",
    "generator": {"name": "idadapter", "version": "0.1.0", "trained_with": ["sface"], "adapter_scale": 1.0},
}


def test_contract_example_parses_with_generator_metadata():
    entry = parse_line(json.dumps(GOOD))
    assert entry.generator.trained_with == ["sface"]
    assert entry.generator.model_extra == {"adapter_scale": 1.0}
    assert entry.seed == 42


def test_malformed_lines_are_reported_with_line_numbers_and_the_rest_is_read(tmp_path):
    bad_path = dict(GOOD, image="../outside.png")
    lines = [
        json.dumps(GOOD),
        "{not json",
        "",
        json.dumps(dict(GOOD, references=[])),
        json.dumps(bad_path),
        json.dumps({k: v for k, v in GOOD.items() if k != "prompt"}),
        json.dumps(dict(GOOD, image="/abs/x.png")),
        json.dumps([1, 2]),
        json.dumps(dict(GOOD, seed=7)),
    ]
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join(lines) + "\n")
    manifest = read_manifest(path)
    assert [e.seed for e in manifest.entries] == [42, 7]
    assert manifest.lines == [1, 9]
    by_line = {e.line: e.reason for e in manifest.errors}
    assert sorted(by_line) == [2, 4, 5, 6, 7, 8]
    assert "not valid JSON" in by_line[2]
    assert "references" in by_line[4]
    assert "escapes" in by_line[5]
    assert "prompt" in by_line[6]
    assert "absolute" in by_line[7]
    assert "not a JSON object" in by_line[8]


@given(st.lists(st.sampled_from(["a", "b", "..", "."]), min_size=1, max_size=6))
def test_paths_never_escape_the_manifest_folder(parts):
    path = "/".join(parts)
    depth, escapes = 0, False
    for part in parts:
        depth += {"..": -1, ".": 0}.get(part, 1)
        escapes |= depth < 0
    try:
        parse_line(json.dumps(dict(GOOD, image=path)))
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == (not escapes)


def test_write_then_read_round_trips(tmp_path):
    entries = [ManifestEntry.model_validate(dict(GOOD, seed=i)) for i in range(3)]
    path = write_manifest(tmp_path / "m" / "run.jsonl", entries)
    assert read_manifest(path).entries == entries


def test_schema_cli_prints_the_pydantic_schema():
    out = subprocess.run([sys.executable, "-m", "eval.manifest", "schema"], capture_output=True, text=True, check=True)
    schema = json.loads(out.stdout)
    assert schema == json_schema()
    assert set(schema["required"]) == {"system", "subject", "references", "prompt", "prompt_category", "image"}
