"""Pipeline configuration: YAML with ``${ENV_VAR}`` interpolation → a validated ``PipelineConfig``.

One section per stage (validated by that stage's ``Settings``), plus ``executor``, ``workers``,
``resources`` (per stage: cpus, gpus, memory_gb, workers), ``llm`` and ``output`` shared sections.
Secrets come only from the environment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SHARED_SECTIONS = ("llm", "output")


class ConfigError(ValueError):
    """A config file that cannot be used, with a message naming the file and the key."""


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "pipeline"
    stages: list[str] | None = None  # None: every registered stage, in order
    executor: Literal["local", "ray"] = "local"
    workers: int = Field(default=1, ge=1)
    ray_address: str | None = None
    llm: dict[str, Any] = Field(default_factory=dict)
    output: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = Field(default_factory=dict)  # {stage: {cpus, gpus, memory_gb, workers}}
    stage_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    source: str | None = None  # the file it was read from

    def section(self, stage: str) -> dict[str, Any]:
        return dict(self.stage_settings.get(stage) or {})

    @property
    def shared(self) -> dict[str, Any]:
        return {"llm": self.llm, "output": self.output}


def interpolate(value: Any) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in strings with environment values."""
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            return ""

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    return value


def load_config(path: str | Path | None, known_stages: list[str] | None = None) -> PipelineConfig:
    """Read a pipeline YAML. Unknown top-level keys that are not stage names are an error."""
    if path is None:
        return PipelineConfig()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    raw = interpolate(raw)
    fields = set(PipelineConfig.model_fields) - {"stage_settings", "source"}
    top = {k: v for k, v in raw.items() if k in fields}
    sections = {k: v for k, v in raw.items() if k not in fields}
    if known_stages is not None:
        unknown = sorted(set(sections) - set(known_stages))
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {unknown}; stages are {known_stages}")
    for name, section in sections.items():
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"{path}: section {name!r} must be a mapping")
    try:
        return PipelineConfig(**top, stage_settings={k: v or {} for k, v in sections.items()}, source=str(path))
    except Exception as exc:  # pydantic.ValidationError
        raise ConfigError(f"{path}: {exc}") from exc
