"""Pipeline configuration: YAML with ``${ENV_VAR}`` interpolation → a ``PipelineConfig`` checked when loaded.

Every section is typed: ``llm`` (``LLMSettings``), ``output`` (``OutputSettings``), ``resources`` (per stage:
cpus, gpus, memory_gb, workers) and one section per stage (that stage's ``Settings``). A mistake is one
``ConfigError`` naming the file (or ``--set``), the section and the key, never quoting a value: values of
``${VAR}`` references are registered with ``v60k.core.errors.redact`` and never echoed. Secrets come only from the
environment.

``--set SECTION.KEY=VALUE`` overrides are applied before the checks. The work dir keeps the config it was run with
(``<workdir>/config.yaml``, with ``${VAR}`` references in place of the values they had), and a command without
``--config`` uses it.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from v60k.backends.llm import LLMSettings
from v60k.core.errors import ConfigError, redact, register_sensitive

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SHARED_SECTIONS = ("llm", "output")
STORED_CONFIG = "config.yaml"  # in the work dir: the config of its last run
_env_values: dict[str, str] = {}  # expanded value -> "${NAME}" (any length; redact() covers the long ones in text)

__all__ = ["ConfigError", "LLMSettings", "OutputSettings", "PipelineConfig", "Override", "load_config",
           "parse_override", "resolve_config", "store_config"]


class OutputSettings(BaseModel):
    """The pipeline config's ``output:`` section: where and how the shards are written."""

    model_config = ConfigDict(extra="forbid")

    dir: Path | None = None
    shard_size_mb: float = Field(default=500, gt=0)
    row_group_rows: int = Field(default=1000, ge=1)
    row_group_mb: float = Field(default=32, gt=0)
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    compression_level: int | None = None
    # the share of series per split: each >= 0, summing to 1 (v60k.dataset.splits)
    splits: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    split_method: Literal["series", "hash", "rank"] = "series"  # one method; hash / rank: its earlier names
    seed: int = 0
    card: bool = True
    check: bool = True  # validate what was written
    license: str | None = None  # Hub license id for the card (default: from the videos' licenses)
    pretty_name: str | None = None
    overwrite: bool = False  # replace a corpus of another work dir, or with an empty one (never foreign files)
    # LLM dialogues / summaries nearly repeating an earlier video's are dropped (v60k.dataset.dedup_pass)
    dedup_across_videos: bool = True
    near_duplicate_threshold: float = Field(default=0.7, gt=0, le=1)  # MinHash Jaccard estimate

    @field_validator("splits")
    @classmethod
    def _ratios_sum_to_one(cls, splits: dict[str, float]) -> dict[str, float]:
        total = sum(splits.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"the split ratios must sum to 1 (they sum to {total:g})")
        return splits


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "pipeline"
    stages: list[str] | None = None  # None: every registered stage, in order
    executor: Literal["local", "ray"] = "local"
    workers: int = Field(default=1, ge=1)
    ray_address: str | None = None
    llm: LLMSettings = Field(default_factory=LLMSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    resources: dict[str, dict[str, Any]] = Field(default_factory=dict)  # {stage: {cpus, gpus, memory_gb, workers}}
    stage_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    source: str | None = None  # the file it was read from
    # {key path: (the ${VAR} text as written, its value when loaded)}: what to_document writes back
    _templates: dict[tuple[str, ...], tuple[str, str]] = PrivateAttr(default_factory=dict)

    def section(self, stage: str) -> dict[str, Any]:
        return dict(self.stage_settings.get(stage) or {})

    @property
    def shared(self) -> dict[str, Any]:
        """The sections every stage sees, as plain data (picklable for worker processes)."""
        return {"llm": self.llm.model_dump(mode="json"), "output": self.output.model_dump(mode="json")}

    def with_sections(self, overrides: dict[str, dict[str, Any]]) -> PipelineConfig:
        """This config with stage settings replaced key by key (``{stage: {setting: value}}``)."""
        merged = {name: dict(section) for name, section in self.stage_settings.items()}
        for name, values in overrides.items():
            merged.setdefault(name, {}).update(values)
        return self.model_copy(update={"stage_settings": merged})

    def to_document(self) -> dict[str, Any]:
        """The config as YAML data for the work dir: what differs from the defaults, with every value that came from
        a ``${VAR}`` reference written as that reference again."""
        doc: dict[str, Any] = self.model_dump(mode="json", exclude_defaults=True,
                                              exclude={"llm", "output", "resources", "stage_settings", "source"})
        if self.resources:
            doc["resources"] = self.resources
        for name, model in (("llm", self.llm), ("output", self.output)):
            section = model.model_dump(mode="json", exclude_defaults=True)
            if section:
                doc[name] = section
        for name, section in self.stage_settings.items():
            doc[name] = json.loads(json.dumps(section, default=str))  # plain YAML data whatever the caller passed
        return _restore(doc, (), self._templates)


# ------------------------------------------------------------------------------------------ ${ENV}


def interpolate(value: Any) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in strings with environment values. Every value taken from the
    environment is registered as sensitive: no error message shows it, no stored config holds it."""
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                env = os.environ[name]
                if env:
                    _env_values.setdefault(env, f"${{{name}}}")
                    register_sensitive(env, name)
                return env
            return default if default is not None else ""

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    return value


def _templates(value: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], tuple[str, str]]:
    """{path: (text, its value)} for every string of a raw config that holds a ``${VAR}`` reference."""
    if isinstance(value, str):
        return {path: (value, interpolate(value))} if _ENV.search(value) else {}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    found: dict[tuple[str, ...], tuple[str, str]] = {}
    for key, child in items:
        found.update(_templates(child, (*path, str(key))))
    return found


def _restore(value: Any, path: tuple[str, ...], templates: dict[tuple[str, ...], tuple[str, str]]) -> Any:
    """``value`` with each leaf that still has the value of its ``${VAR}`` text written as that text again; any
    other value from the environment concealed."""
    if isinstance(value, dict):
        return {k: _restore(v, (*path, str(k)), templates) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, (*path, str(i)), templates) for i, v in enumerate(value)]
    template = templates.get(path)
    if template is not None and str(value) == template[1]:
        return template[0]
    return conceal(value)


def conceal(value: Any) -> Any:
    """``value`` with every string that came from the environment replaced by its ``${VAR}`` reference."""
    if isinstance(value, str):
        return _env_values.get(value) or redact(value)
    if isinstance(value, dict):
        return {k: conceal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [conceal(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------ --set


class Override(BaseModel):
    """One ``--set SECTION.KEY=VALUE``: the key's path and the value (a YAML scalar: true, 3, 0.5, text)."""

    path: tuple[str, ...]
    value: Any = None

    @property
    def label(self) -> str:
        return "--set " + ".".join(self.path)


def parse_override(item: str, default_section: str | None = None) -> Override:
    """``SECTION.KEY=VALUE`` (or ``KEY=VALUE``: a top-level key, or ``default_section``'s key when given)."""
    key, sep, raw = item.partition("=")
    path = tuple(part.strip() for part in key.split("."))
    if not sep or not all(path):
        raise ConfigError(f"--set {key.strip() or item!r}: expected SECTION.KEY=VALUE")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {key.strip()}: the value is not a YAML value (quote it)") from None
    if len(path) == 1 and default_section is not None and path[0] not in _TOP_LEVEL:
        path = (default_section, path[0])
    return Override(path=path, value=value)


def _apply(raw: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    doc = dict(raw)
    for override in overrides:
        node = doc
        for part in override.path[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[override.path[-1]] = override.value
    return doc


# ------------------------------------------------------------------------------------------ loading

_TOP_LEVEL = set(PipelineConfig.model_fields) - {"stage_settings", "source", "llm", "output", "resources"}
_SECTION_MODELS: dict[str, type[BaseModel]] = {"llm": LLMSettings, "output": OutputSettings}


def load_config(path: str | Path | None, known_stages: Sequence[str] | None = None,
                overrides: Sequence[Override] = ()) -> PipelineConfig:
    """Read a pipeline YAML (None: the defaults), apply ``overrides`` and check every section.

    ``known_stages`` (default: the registered stages) are the stage sections a config may have.
    """
    from v60k.stages import STAGE_ORDER

    known_stages = list(STAGE_ORDER) if known_stages is None else known_stages
    where = str(path) if path is not None else "config"
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ConfigError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', None) or 'syntax error'}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    overridden = {o.path for o in overrides}
    raw = _apply(raw, overrides)
    templates = _templates(raw)
    raw = interpolate(raw)
    fields = set(PipelineConfig.model_fields) - {"stage_settings", "source"}
    top = {k: v for k, v in raw.items() if k in fields}
    sections = {k: v for k, v in raw.items() if k not in fields}

    def origin(*keys: Any) -> str:
        """Where the value at ``keys`` came from: ``--set`` or the file."""
        keys = tuple(str(k) for k in keys)
        if any(o[: len(keys)] == keys or keys[: len(o)] == o for o in overridden):
            return "--set"
        return where

    for name, section in sections.items():
        if name not in known_stages:
            raise ConfigError(f"{_at(origin(name), name)}: unknown section{_did_you_mean(name, [*fields, *known_stages])}"
                              f"; stage sections are {', '.join(known_stages)}")
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"{_at(origin(name), name)}: a section must be a mapping of settings")
    for name in SHARED_SECTIONS + ("resources",):
        if name in top and top[name] is None:
            top[name] = {}
        if name in top and not isinstance(top[name], dict):
            raise ConfigError(f"{_at(origin(name), name)}: a section must be a mapping of settings")
    problems = []
    for name, section in sections.items():  # every stage section's mistakes, with the rest's, in one message
        if name not in STAGE_ORDER:  # a stage of the caller's own: checked when it is built
            continue
        try:
            check_stage_settings(name, section or {}, origin)
        except ConfigError as exc:
            problems.append(str(exc))
    try:
        config = PipelineConfig(**top, stage_settings={k: v or {} for k, v in sections.items()},
                                source=str(path) if path is not None else None)
    except ValidationError as exc:
        raise ConfigError("; ".join([describe(exc, origin, model=PipelineConfig), *problems])) from None
    if problems:
        raise ConfigError("; ".join(problems))
    for stage in config.stages or ():
        if stage not in known_stages:
            raise ConfigError(f"{_at(origin('stages'), 'stages')}: unknown stage {stage!r}{_did_you_mean(stage, known_stages)}"
                              f"; stages are {', '.join(known_stages)}")
    check_resources(config.resources, known_stages, origin)
    config._templates = templates
    return config


def check_stage_settings(stage: str, section: dict[str, Any], origin: Any = None, settings_class: Any = None) -> Any:
    """``section`` as the stage's Settings, or a ConfigError naming the section and key."""
    if settings_class is None:
        from v60k.stages import stage_class

        settings_class = stage_class(stage).Settings
    try:
        return settings_class(**section)
    except ValidationError as exc:
        raise ConfigError(describe(exc, origin or (lambda *keys: "config"), model=settings_class,
                                   prefix=(stage,))) from None


def check_resources(resources: dict[str, Any], known_stages: Sequence[str], origin: Any = None) -> None:
    """Every ``resources:`` entry names a stage and only known resources with valid amounts."""
    from v60k.core.stage import Resources

    origin = origin or (lambda *keys: "config")
    for stage, entry in resources.items():
        if stage not in known_stages:
            raise ConfigError(f"{_at(origin('resources', stage), f'resources.{stage}')}: unknown stage"
                              f"{_did_you_mean(stage, known_stages)}")
        try:
            Resources().merged(entry)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{_at(origin('resources', stage), f'resources.{stage}')}: {exc}") from None


def describe(exc: ValidationError, origin: Any, model: type[BaseModel] | None = None,
             prefix: tuple[str, ...] = ()) -> str:
    """A pydantic error as one line per problem, ``WHERE: section.key: what is wrong`` — never the input value."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = tuple(str(part) for part in error["loc"])
        full = prefix + loc
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            known = _known_keys(model, loc[:-1])
            hint = _did_you_mean(loc[-1], known)
            message = "unknown key" + (hint or (f" (known: {', '.join(known)})" if known else ""))
        problems.append(f"{_at(origin(*full), '.'.join(full))}: {message}")
    return "; ".join(problems)


def _at(where: str, key: str) -> str:
    """``--set llm.model`` or ``pipeline.yaml: llm.model``."""
    return f"--set {key}" if where == "--set" else f"{where}: {key}"


def _known_keys(model: type[BaseModel] | None, parent: tuple[str, ...]) -> list[str]:
    """The keys ``model`` accepts at ``parent`` (a shared section's keys inside the whole config)."""
    if model is PipelineConfig and len(parent) == 1 and parent[0] in _SECTION_MODELS:
        model, parent = _SECTION_MODELS[parent[0]], ()
    if model is None or parent:
        return []
    return [name for name in model.model_fields if name not in ("stage_settings", "source")]


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ------------------------------------------------------------------------------------------ the work dir's copy


def stored_config_path(workdir: str | Path) -> Path:
    return Path(workdir) / STORED_CONFIG


def resolve_config(workdir: str | Path | None, path: str | Path | None, overrides: Sequence[Override] = (),
                   known_stages: Sequence[str] | None = None) -> PipelineConfig:
    """The config a command uses: ``path`` when given, else the one the work dir was last run with, else the
    defaults; with ``overrides`` applied."""
    if path is None and workdir is not None and stored_config_path(workdir).is_file():
        path = stored_config_path(workdir)
    return load_config(path, known_stages, overrides)


def store_config(workdir: str | Path, config: PipelineConfig) -> Path:
    """Write ``config`` to the work dir (``${VAR}`` references, never their values)."""
    from v60k.core.workdir import write_bytes

    header = ("# The config this work dir was last run with (v60k writes it at every run). Commands without\n"
              "# --config use it; ${VAR} references are read from the environment each time.\n")
    text = header + yaml.safe_dump(config.to_document(), sort_keys=False, allow_unicode=True)
    return write_bytes(stored_config_path(workdir), text.encode("utf-8"))
