"""``publish`` / ``v60k publish`` with the real ``huggingface_hub`` client against a fake Hub at its HTTP
boundary: repository creation, LFS uploads and commits, retries, resume, dry run, token handling, and no
upload at all for a corpus that does not validate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_hub import FakeHub
from test_validate import BAD_INPUTS, make_corpus

from v60k.cli import cli

TOKEN = "hf_test_Token_do_not_print_1234"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)  # conftest sets offline mode for everything else
    monkeypatch.setattr(hub_constants, "HF_HUB_DISABLE_XET", True)  # the fake speaks LFS, not Xet
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def _publish(corpus: Path, *extra: str):
    return CliRunner().invoke(cli, ["publish", str(corpus), "--repo-id", "v60k-org/roleplay", *extra])


def test_publish_uploads_every_shard_and_the_card(tmp_path: Path, hub: FakeHub,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    corpus = make_corpus(tmp_path)
    result = _publish(corpus, "--private")
    assert result.exit_code == 0, result.output
    repo = hub.repos["v60k-org/roleplay"]
    assert repo.repo_type == "dataset" and repo.private
    local = {p.relative_to(corpus).as_posix(): p.read_bytes() for p in corpus.rglob("*")
             if p.is_file() and (p.suffix == ".parquet" or p.name == "README.md")}
    assert repo.files == local
    assert repo.commits[-1]["files"] == ["README.md"]  # the card goes last
    assert hub.authorizations == {f"Bearer {TOKEN}"}
    assert TOKEN not in result.output
    assert not any(TOKEN in p.read_text(errors="ignore") for p in corpus.rglob("*") if p.is_file())
    assert ("PUT", f"/fake-lfs/{__import__('hashlib').sha256(local['data/videos/train-00000-of-00001.parquet']).hexdigest()}") \
        in hub.requests


def test_publish_retries_transient_failures_and_resumes(tmp_path: Path, hub: FakeHub,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from v60k.dataset.publish import publish

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    corpus = make_corpus(tmp_path)
    hub.fail_next.update(create=1, commit=2)
    messages: list[str] = []
    result = publish(corpus, "v60k-org/roleplay", backoff_s=0.0, max_files_per_commit=2, echo=messages.append)
    repo = hub.repos["v60k-org/roleplay"]
    assert len(repo.files) == len(result.files) == 5
    assert sum("retry" in m for m in messages) == 3 and result.attempts == 1 + 3 + 1 + 2  # create, 3 commits
    puts = [r for r in hub.requests if r[0] == "PUT"]
    assert len(puts) == 4
    publish(corpus, "v60k-org/roleplay", backoff_s=0.0, echo=messages.append)  # a re-run uploads nothing again
    assert [r for r in hub.requests if r[0] == "PUT"] == puts
    assert len(repo.commits) == 3


def test_a_persistent_failure_is_reported_without_the_token(tmp_path: Path, hub: FakeHub,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from v60k.dataset.publish import PublishError, publish

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    corpus = make_corpus(tmp_path)
    hub.fail_next.update(commit=100)
    with pytest.raises(PublishError) as caught:
        publish(corpus, "v60k-org/roleplay", retries=2, backoff_s=0.0, echo=lambda _: None)
    assert "could not commit 1/2" in str(caught.value) and TOKEN not in str(caught.value)
    assert hub.repos["v60k-org/roleplay"].files == {}


def test_dry_run_lists_files_and_contacts_nobody(tmp_path: Path, hub: FakeHub) -> None:
    corpus = make_corpus(tmp_path)
    result = _publish(corpus, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "data/dialogues/train-00000-of-00001.parquet" in result.output and "README.md" in result.output
    assert "dry run: 5 file(s)" in result.output
    assert hub.requests == []


def test_no_token_is_a_clear_error(tmp_path: Path, hub: FakeHub) -> None:
    corpus = make_corpus(tmp_path)
    result = _publish(corpus)
    assert result.exit_code == 1
    assert "no Hugging Face token" in result.output
    assert hub.requests == []


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_a_corpus_that_does_not_validate_is_not_published(tmp_path: Path, hub: FakeHub,
                                                          monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    corpus = make_corpus(tmp_path)
    where, message = BAD_INPUTS[kind](corpus)
    result = _publish(corpus)
    assert result.exit_code == 1
    assert "does not validate" in result.output
    assert any(where in line and message in line for line in result.output.splitlines()), result.output
    assert hub.requests == [] and hub.repos == {}


def test_the_login_cache_token_is_used(tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub_constants

    token_file = tmp_path / "hf-home" / "token"  # where `hf auth login` keeps it (resolved when the client loads)
    token_file.parent.mkdir()
    token_file.write_text(TOKEN)
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(token_file))
    corpus = make_corpus(tmp_path)
    result = _publish(corpus)
    assert result.exit_code == 0, result.output
    assert hub.authorizations == {f"Bearer {TOKEN}"} and TOKEN not in result.output
