"""The config: every section typed and checked when loaded, --set overrides, ${VAR} values never shown and
never stored, and the work dir's copy of the config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from v60k.backends.llm import LLMSettings
from v60k.core.config import (
    ConfigError,
    OutputSettings,
    load_config,
    parse_override,
    resolve_config,
    store_config,
    stored_config_path,
)
from v60k.core.errors import redact

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["demo.yaml", "video60k.yaml"])
def test_the_shipped_pipelines_load_with_typed_sections(name):
    config = load_config(REPO / "pipelines" / name)
    assert isinstance(config.llm, LLMSettings) and isinstance(config.output, OutputSettings)
    assert abs(sum(config.output.splits.values()) - 1) < 1e-9
    assert config.shared["llm"]["api_key_env"] == "OPENAI_API_KEY"  # plain data for the worker processes


def test_the_demo_follows_one_environment_variable_or_one_flag(monkeypatch):
    monkeypatch.delenv("V60K_LLM_BASE_URL", raising=False)
    assert not load_config(REPO / "pipelines" / "demo.yaml").llm.enabled
    monkeypatch.setenv("V60K_LLM_BASE_URL", "http://127.0.0.1:8000/v1")
    config = load_config(REPO / "pipelines" / "demo.yaml")
    assert config.llm.enabled and config.llm.base_url == "http://127.0.0.1:8000/v1"
    monkeypatch.delenv("V60K_LLM_BASE_URL")
    flagged = load_config(REPO / "pipelines" / "demo.yaml",
                          overrides=[parse_override("llm.base_url=http://127.0.0.1:9/v1")])
    assert flagged.llm.base_url == "http://127.0.0.1:9/v1"


def test_set_parses_yaml_values_into_sections():
    assert parse_override("workers=4").path == ("workers",)
    assert parse_override("detector=content", default_section="scenes").path == ("scenes", "detector")
    assert parse_override("workers=4", default_section="scenes").path == ("workers",)  # a top-level key stays one
    override = parse_override("output.splits={train: 0.5, test: 0.5}")
    assert override.path == ("output", "splits") and override.value == {"train": 0.5, "test": 0.5}
    config = load_config(None, overrides=[override, parse_override("scenes.min_scene_len_s=1.5"),
                                          parse_override("output.splits.test=0.5")])
    assert config.output.splits == {"train": 0.5, "test": 0.5}
    assert config.section("scenes") == {"min_scene_len_s": 1.5}
    with pytest.raises(ConfigError, match="expected SECTION.KEY=VALUE"):
        parse_override("llm.base_url")
    with pytest.raises(ConfigError, match=r"--set output.splits: the split ratios must sum to 1 \(they sum to 0.9\)"):
        load_config(None, overrides=[parse_override("output.splits={train: 0.8, test: 0.1}")])


def test_output_ratios_are_non_negative_and_sum_to_one():
    OutputSettings(splits={"train": 1.0, "test": 0.0})
    for splits in ({"train": 1.2, "test": -0.2}, {"train": 0.5}, {"train": 0.0}):
        with pytest.raises(ValueError):
            OutputSettings(splits=splits)


def test_mistakes_never_quote_an_expanded_value(tmp_path, monkeypatch):
    secret = "sk-test-SECRET123"
    monkeypatch.setenv("V60K_TEST_TOKEN", secret)
    path = tmp_path / "p.yaml"
    path.write_text("workers: ${V60K_TEST_TOKEN}\nllm:\n  max_tokens: ${V60K_TEST_TOKEN}\n"
                    "clips:\n  min_s: ${V60K_TEST_TOKEN}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert secret not in message and "input_value" not in message
    assert all(f"p.yaml: {key}:" in message for key in ("workers", "llm.max_tokens", "clips.min_s"))
    shown = redact(f"a library said {secret}!")  # the reference of a variable holding that value
    assert shown.startswith("a library said ${") and shown.endswith("}!") and secret not in shown


def test_the_work_dir_keeps_references_and_a_command_without_config_uses_them(tmp_path, monkeypatch):
    secret = "sk-test-SECRET123"
    monkeypatch.setenv("V60K_TEST_TOKEN", secret)
    monkeypatch.setenv("V60K_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    path = tmp_path / "p.yaml"
    path.write_text("workers: 2\nllm:\n  base_url: ${V60K_LLM_BASE_URL}\n  model: ${V60K_TEST_TOKEN:-none}\n"
                    "output:\n  dir: ${V60K_OUT:-corpus}\n  splits: {train: 0.5, test: 0.5}\n"
                    "scenes:\n  detector: content\n")
    config = load_config(path)
    work = tmp_path / "work"
    store_config(work, config)
    text = stored_config_path(work).read_text()
    assert secret not in text and "http://127.0.0.1:9/v1" not in text
    stored = yaml.safe_load(text)
    assert stored["llm"] == {"base_url": "${V60K_LLM_BASE_URL}", "model": "${V60K_TEST_TOKEN:-none}"}
    assert stored["output"]["dir"] == "${V60K_OUT:-corpus}" and stored["scenes"] == {"detector": "content"}
    again = resolve_config(work, None)
    assert again.model_dump(exclude={"source"}) == config.model_dump(exclude={"source"})
    assert again.source == str(stored_config_path(work))
    # a value changed in code is written as it is now, not as the reference it no longer matches
    moved = config.model_copy(update={"output": config.output.model_copy(update={"dir": Path("elsewhere")})})
    assert moved.to_document()["output"]["dir"] == "elsewhere"
    assert resolve_config(work, path).source == str(path)  # --config wins over the stored one
    assert resolve_config(tmp_path / "fresh", None).source is None  # neither: the defaults
