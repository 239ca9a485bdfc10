"""The whole pipeline through the CLI, as a user runs it: one generated episode served over HTTP, every stage
with its real backend (yt-dlp, PySceneDetect, faster-whisper tiny.en, speaker embeddings), the tests' OpenAI
server for generation, and the Parquet shards written and validated as the run's last step. A second run
redoes nothing and gives byte-identical shards."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from click.testing import CliRunner
from openai_server import OpenAIServer
from test_generate import scripted

from v60k.cli import cli
from v60k.testing.sample_episodes import build_episode, two_speaker_spec

REPO = Path(__file__).resolve().parent.parent


def _config(path: Path, server: OpenAIServer, corpus: Path) -> Path:
    config = yaml.safe_load((REPO / "pipelines" / "demo.yaml").read_text())
    config["llm"] = {"base_url": server.base_url, "model": "scripted-model", "schema_mode": "json_schema",
                     "retry_base_s": 0.0}
    config["output"] = {**config["output"], "dir": str(corpus)}
    path.write_text(yaml.safe_dump(config))
    return path


def _digests(corpus: Path) -> dict[str, str]:
    return {str(p.relative_to(corpus)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(corpus.rglob("*")) if p.is_file() and p.name != ".v60k-corpus.json"}  # not the record


def test_v60k_run_from_manifest_to_validated_shards(tmp_path, media_server):
    episode = build_episode(two_speaker_spec(), media_server.root)
    manifest = tmp_path / "videos.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "id", "series", "characters", "license"])
        writer.writerow([media_server.url(episode.path.name), "ep1", "Central Perk", "Monica;Ross", "CC-BY-4.0"])
    work, corpus = tmp_path / "work", tmp_path / "corpus"
    runner = CliRunner()
    with OpenAIServer(scripted) as server:
        config = _config(tmp_path / "pipeline.yaml", server, corpus)
        args = ["run", str(manifest), "--config", str(config), "--workdir", str(work), "--quiet", "--strict"]
        first = runner.invoke(cli, args)
        assert first.exit_code == 0, first.output
        requests = server.chat_requests
        status = json.loads(runner.invoke(cli, ["status", "--workdir", str(work), "--json"]).output)
        shards = _digests(corpus)

        again = runner.invoke(cli, args)
        assert again.exit_code == 0, again.output
        assert server.chat_requests == requests  # nothing generated twice
        # without --config the work dir's own config is used: nothing redone with built-in defaults
        resumed = runner.invoke(cli, ["run", "--workdir", str(work), "--quiet", "--strict"])
        assert resumed.exit_code == 0, resumed.output
        assert server.chat_requests == requests
    assert requests >= 3  # a summary, and a dialogue per character
    assert {stage: counts["done"] for stage, counts in status["stages"].items()} == dict.fromkeys(status["stages"], 1)
    assert list(status["stages"]) == ["download", "scenes", "transcribe", "diarize", "attribute", "clips", "sample",
                                      "generate"]
    assert _digests(corpus) == shards  # identical shards from the re-run

    assert "OK: 0 error(s)" in (runner.invoke(cli, ["validate", str(corpus)]).output)
    assert (corpus / "README.md").exists()
    lines = pq.read_table(corpus / "data" / "utterances").to_pylist()
    assert len(lines) >= 7  # nine lines spoken; a short pair may merge
    assert {line["character"] for line in lines} == {"Monica", "Ross"}  # every line attributed, to the cast
    dialogues = pq.read_table(corpus / "data" / "dialogues").to_pylist()
    assert {d["character"] for d in dialogues} == {"Monica", "Ross"}
    llm = [d for d in dialogues if d["generation_type"] == "llm"]
    assert {d["character"] for d in llm} == {"Monica", "Ross"} and llm[0]["generator"] == "scripted-model"
    assert {d["generation_type"] for d in dialogues} == {"llm", "raw_lines"}  # the real lines as well
    clips = pq.read_table(corpus / "data" / "clips").to_pylist()
    assert clips and all(c["summary_type"] == "llm" for c in clips)
    for clip in clips:  # the dynamic profile: frames in temporal order, inside the clip
        times = clip["frame_times_s"]
        assert len(times) >= 4 and times == sorted(times) and len(clip["frames"]) == len(times)
        assert clip["start_s"] <= times[0] and times[-1] < clip["end_s"]


def test_every_command_is_on_the_cli_with_an_example():
    expected = {"download", "scenes", "transcribe", "diarize", "attribute", "clips", "sample", "generate", "run",
                "status", "retry", "shard", "validate", "report", "publish", "export-sft", "chat", "eval"}
    assert expected <= set(cli.commands)
    runner = CliRunner()
    for name in sorted(cli.commands):
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, name
