"""The dataset's tables, read from ``schemas/<table>.yaml``: one Arrow schema per table with a doc for every
field (field metadata ``doc``), the table name and schema version (schema metadata), and the Hugging Face
``features`` description so that ``datasets`` decodes frames as images.

    schema = table_schema("clips")        # pyarrow.Schema
    spec = load_table_spec("clips")       # TableSpec: version, doc, fields (name, type, nullable, doc)
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

TABLES: tuple[str, ...] = ("videos", "utterances", "clips", "dialogues")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
META_TABLE = b"v60k.table"
META_VERSION = b"v60k.schema_version"
META_HF = b"huggingface"

_PRIMITIVES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "double": pa.float64(),
    "float": pa.float32(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "binary": pa.binary(),
}
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def schemas_dir() -> Path:
    """``$V60K_SCHEMAS_DIR``, else the package's ``v60k/schemas/`` (the repository's ``schemas/`` links there)."""
    override = os.environ.get("V60K_SCHEMAS_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[1] / "schemas"


class SchemaError(ValueError):
    """A schema file that cannot be read, naming the file."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type_text: str
    arrow_type: pa.DataType
    nullable: bool
    doc: str
    since: str = "1.0"  # the table's schema version that added the field


@dataclass(frozen=True)
class TableSpec:
    table: str
    version: str
    doc: str
    fields: tuple[FieldSpec, ...]
    source: str

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)


def version_key(version: str) -> tuple[int, ...]:
    """``"1.10"`` → ``(1, 10)``: schema versions compared as numbers (an unreadable one sorts first)."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def parse_type(text: str) -> pa.DataType:
    """``list<struct<start_s: double, end_s: double>>`` → the Arrow type (``image`` is the HF Image struct)."""
    parsed, rest = _parse(text.strip())
    if rest.strip():
        raise SchemaError(f"unexpected {rest!r} after a type in {text!r}")
    return parsed


def _parse(text: str) -> tuple[pa.DataType, str]:
    text = text.lstrip()
    for name in ("list<", "struct<"):
        if text.startswith(name):
            inner, rest = _bracketed(text[len(name) - 1 :])
            if name == "list<":
                item = parse_type(inner)
                return pa.list_(item), rest
            members = []
            for part in _split_top(inner):
                member, _, member_type = part.partition(":")
                if not member_type:
                    raise SchemaError(f"struct member without a type: {part!r}")
                members.append(pa.field(member.strip(), parse_type(member_type)))
            return pa.struct(members), rest
    word = ""
    while text and (text[0].isalnum() or text[0] == "_"):
        word, text = word + text[0], text[1:]
    if word == "image":
        return IMAGE_TYPE, text
    if word not in _PRIMITIVES:
        raise SchemaError(f"unknown type {word!r}")
    return _PRIMITIVES[word], text


def _bracketed(text: str) -> tuple[str, str]:
    depth = 0
    for index, char in enumerate(text):
        depth += (char == "<") - (char == ">")
        if depth == 0:
            return text[1:index], text[index + 1 :]
    raise SchemaError(f"unbalanced <> in {text!r}")


def _split_top(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "<") - (char == ">")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in (*parts, current) if p.strip()]


@functools.cache
def load_table_spec(table: str, directory: str | None = None) -> TableSpec:
    """The spec of ``table`` from ``<schemas>/<table>.yaml``."""
    path = Path(directory) if directory else schemas_dir()
    path = path / f"{table}.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SchemaError(f"no schema file for table {table!r}: {path}") from exc
    if not isinstance(raw, dict) or raw.get("table") != table or not raw.get("fields"):
        raise SchemaError(f"{path}: expected `table: {table}`, `version` and `fields`")
    fields = []
    for entry in raw["fields"]:
        try:
            fields.append(FieldSpec(str(entry["name"]), str(entry["type"]), parse_type(str(entry["type"])),
                                    bool(entry.get("nullable", True)), str(entry.get("doc", "")),
                                    str(entry.get("since", "1.0"))))
        except (KeyError, SchemaError) as exc:
            raise SchemaError(f"{path}: field {entry!r}: {exc}") from exc
    return TableSpec(table, str(raw.get("version", "0")), str(raw.get("doc", "")), tuple(fields), str(path))


@functools.cache
def table_schema(table: str) -> pa.Schema:
    """The Arrow schema of ``table``: field docs in field metadata, table name, version and HF features in
    the schema metadata."""
    spec = load_table_spec(table)
    features = {f.name: hf_feature(f.arrow_type, f.type_text) for f in spec.fields}
    # ``datasets`` applies a metadata feature (Image) only to a field equal to its own, nullable, rendering;
    # such fields stay nullable in Arrow and their requiredness is enforced by the writer and the validator.
    fields = [pa.field(f.name, f.arrow_type, nullable=f.nullable or "image" in f.type_text,
                       metadata={"doc": f.doc}) for f in spec.fields]
    metadata = {
        META_TABLE: table.encode(),
        META_VERSION: spec.version.encode(),
        META_HF: json.dumps({"info": {"features": features}}).encode(),
    }
    return pa.schema(fields, metadata=metadata)


_HF_DTYPES = {"string": "string", "double": "float64", "float": "float32", "int32": "int32", "int64": "int64",
              "bool": "bool", "binary": "binary"}


def hf_feature(arrow_type: pa.DataType, type_text: str = "") -> Any:
    """The ``datasets`` feature description of an Arrow type (``image`` members become ``Image``)."""
    if arrow_type.equals(IMAGE_TYPE) and "image" in type_text:
        return {"_type": "Image"}
    if pa.types.is_list(arrow_type):
        inner_text = type_text.strip()[5:-1] if type_text.strip().startswith("list<") else ""
        return {"feature": hf_feature(arrow_type.value_type, inner_text), "_type": "List"}
    if pa.types.is_struct(arrow_type):
        return {arrow_type.field(i).name: hf_feature(arrow_type.field(i).type) for i in range(arrow_type.num_fields)}
    for name, dtype in _PRIMITIVES.items():
        if arrow_type.equals(dtype):
            return {"dtype": _HF_DTYPES[name], "_type": "Value"}
    raise SchemaError(f"no Hugging Face feature for {arrow_type}")


def required_fields(table: str) -> list[str]:
    """Fields that must have a value in every row (from the schema file, whatever Arrow declares)."""
    return [f.name for f in load_table_spec(table).fields if not f.nullable]
