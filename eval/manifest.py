"""The run manifest: one JSON line per generated image (docs/contracts.md).

`read_manifest` parses a JSONL file line by line; a malformed line becomes a `ManifestError` with its
line number and the rest is still read. `python -m eval.manifest schema` prints the JSON Schema.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import (BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError,
                      field_validator)

from eval.files import open_regular

MAX_LINE_BYTES = 1 << 20  # a longer line is refused unread: no field needs a megabyte
MAX_TEXT = 10_000  # characters in any one string field
MAX_REFERENCES = 100
SEED_RANGE = (-(2**63), 2**63 - 1)  # a signed 64-bit integer, as the scores table stores it


# pydantic refuses a lone UTF-16 surrogate ("\ud800") in a str: it could not be written as UTF-8 anywhere
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
Seed = Annotated[StrictInt, Field(ge=SEED_RANGE[0], le=SEED_RANGE[1])]


def _relative_path(value: str) -> str:
    path = PurePosixPath(value.replace("\\", "/"))
    if not value.strip():
        raise ValueError("empty path")
    if path.is_absolute() or (len(value) > 1 and value[1] == ":"):
        raise ValueError(f"absolute path {value!r} is not allowed; paths are relative to the manifest")
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            raise ValueError(f"path {value!r} escapes the manifest's folder")
    return value


class GeneratorInfo(BaseModel):
    """Optional metadata about the generator that produced the image."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: Text | None = None
    version: Text | None = None
    trained_with: list[Name] = Field(
        default_factory=list,
        description="recognizers used in the generator's training (judges that are not independent)",
    )


class ManifestEntry(BaseModel):
    """One generated image and what it was generated from."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: no "42" -> 42, no true -> 1

    system: Name = Field(description="name of the generating system")
    subject: Name = Field(description="the person the image should show")
    references: list[Name] = Field(min_length=1, max_length=MAX_REFERENCES,
                                   description="reference photo paths, relative to the manifest")
    prompt: Text
    prompt_category: Name = Field(
        description="identity (bare class-noun prompt), expression, style, scene, or another word"
    )
    seed: Seed | None = Field(None, description="a JSON integer (no fraction, no quotes), signed 64-bit")
    image: Name = Field(description="generated image path, relative to the manifest")
    generator: GeneratorInfo | None = None

    @field_validator("image")
    @classmethod
    def _image_is_relative(cls, value: str) -> str:
        return _relative_path(value)

    @field_validator("references")
    @classmethod
    def _references_are_relative(cls, values: list[str]) -> list[str]:
        return [_relative_path(value) for value in values]


@dataclass(frozen=True)
class ManifestError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class Manifest:
    path: Path
    entries: list[ManifestEntry]
    lines: list[int]  # the source line number of each entry
    errors: list[ManifestError]

    @property
    def root(self) -> Path:
        return self.path.parent


def _explain(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or 'line'}: {item['msg']}" for item in error.errors()
    )


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def parse_line(text: str) -> ManifestEntry:
    """One manifest line; raises ValueError with a readable reason."""
    try:
        data: Any = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:
        raise ValueError("not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    try:
        return ManifestEntry.model_validate(data)
    except ValidationError as error:
        raise ValueError(_explain(error)) from None


def _decode(raw: bytes, number: int) -> str:
    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as some editors write
        raw = raw[3:]
    if len(raw) > MAX_LINE_BYTES:
        raise ValueError(f"line longer than {MAX_LINE_BYTES:,} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 (byte {error.start + 1}: {error.reason})") from None


def _raw_lines(handle):
    """(number, bytes) per line, a line over MAX_LINE_BYTES cut at the limit (and then refused)."""
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := handle.readline(1 << 16)) and not rest.endswith(b"\n"):
                pass
        yield number, raw


def read_manifest(path: str | Path) -> Manifest:
    """Each line decoded on its own: a line of bad UTF-8, bad JSON or a bad field is one error."""
    path = Path(path)
    entries, lines, errors = [], [], []
    with open_regular(path) as handle:
        for number, raw in _raw_lines(handle):
            try:
                text = _decode(raw, number)
                if not text.strip():
                    continue
                entries.append(parse_line(text))
                lines.append(number)
            except ValueError as error:
                errors.append(ManifestError(number, str(error)))
    return Manifest(path=path, entries=entries, lines=lines, errors=errors)


def write_manifest(path: str | Path, entries: list[ManifestEntry]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(entry.model_dump_json(exclude_none=True) + "\n" for entry in entries)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def json_schema() -> dict:
    return ManifestEntry.model_json_schema()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.manifest", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("schema", help="print the manifest line's JSON Schema")
    check = commands.add_parser("check", help="validate a manifest and list malformed lines")
    check.add_argument("manifest", type=Path)
    args = parser.parse_args(argv)
    if args.command == "schema":
        print(json.dumps(json_schema(), indent=2))
        return 0
    try:
        manifest = read_manifest(args.manifest)
    except OSError as error:
        print(f"error: {args.manifest}: {error.strerror or error}", file=sys.stderr)
        return 2
    for error in manifest.errors:
        print(f"{args.manifest}: {error}", file=sys.stderr)
    print(f"{len(manifest.entries)} valid lines, {len(manifest.errors)} malformed")
    return 1 if manifest.errors else 0


if __name__ == "__main__":
    sys.exit(main())
