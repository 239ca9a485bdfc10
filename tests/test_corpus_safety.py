"""Nothing lost: a corpus is never replaced by another work dir's or by an empty one, files v60k did not write
are never deleted, a damaged catalog is an error (and `v60k doctor --repair` rebuilds it), two writers of one
folder exclude each other, the card survives any name, publishing is private and licence-aware, and read-only
or full disks give one clear line. Through the CLI and the Python API, offline, in seconds."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fake_hub import FakeHub

from v60k.cli import cli
from v60k.core.catalog import Catalog, CatalogDamaged
from v60k.core.workdir import WorkDir, read_json, write_json
from v60k.dataset import OutputSettings, validate, write_shards
from v60k.dataset.card import read_card_header, split_front_matter
from v60k.dataset.ownership import RECORD_NAME, CorpusError
from v60k.testing.sample_workdirs import CASTS, build_workdir, mark

REPO = Path(__file__).resolve().parent.parent
TOKEN = "hf_test_Token_do_not_print_1234"


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def shard_cli(work: WorkDir | Path, out: Path, *extra: str):
    root = work.root if isinstance(work, WorkDir) else work
    return invoke("shard", "--workdir", root, "--out", out, "--split-method", "rank", *extra)


@pytest.fixture
def built(tmp_path: Path) -> tuple[WorkDir, Path]:
    """A finished work dir of 3 videos and its corpus, written by `v60k shard`."""
    work = build_workdir(tmp_path / "work", videos=3)
    out = tmp_path / "corpus"
    result = shard_cli(work, out)
    assert result.exit_code == 0, result.output
    return work, out


def rows(out: Path, table: str) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in (out / "data" / table).glob("*.parquet"))


# ------------------------------------------------------------------ 1. another or empty work dir


def test_a_mistyped_workdir_in_a_run_leaves_the_corpus_alone(built, tmp_path: Path) -> None:
    _, out = built
    before = snapshot(out)
    config = tmp_path / "cfg.yaml"
    config.write_text(f"output:\n  dir: {out}\n  split_method: rank\n")
    result = invoke("run", "--config", config, "--workdir", tmp_path / "typo", "--quiet")
    assert result.exit_code != 0
    assert "not written" in result.output and "--force" in result.output and "typo" in result.output
    assert "OK: 0 error(s)" not in result.output and "Traceback" not in result.output
    assert snapshot(out) == before
    assert rows(out, "utterances") == 24


def test_another_work_dir_needs_force_and_then_replaces(built, tmp_path: Path) -> None:
    _, out = built
    before = snapshot(out)
    other = build_workdir(tmp_path / "other", videos=1)
    with pytest.raises(CorpusError, match="built from work dir"):
        write_shards(other, out, OutputSettings(check=False))
    result = shard_cli(other, out)
    assert result.exit_code == 1 and "not written" in result.output and "--force" in result.output
    assert snapshot(out) == before
    result = shard_cli(other, out, "--force")
    assert result.exit_code == 0, result.output
    assert rows(out, "videos") == 1
    assert read_json(out / RECORD_NAME)["workdir"] == str(other.root)


def test_an_empty_corpus_never_replaces_one_with_rows(built, tmp_path: Path) -> None:
    work, out = built
    before = snapshot(out)
    for vid in ("vid0000", "vid0001", "vid0002"):
        mark(work, vid, "download", "failed", "error", "gone")  # the same work dir, nothing finished any more
    with pytest.raises(CorpusError, match="no finished video"):
        write_shards(work, out, OutputSettings(check=False))
    result = shard_cli(work, out)
    assert result.exit_code == 1 and "no finished video" in result.output
    assert snapshot(out) == before
    summary = write_shards(work, out, OutputSettings(check=False), overwrite=True)
    assert sum(summary.rows["videos"].values()) == 0 and rows(out, "videos") == 0


def test_a_smaller_corpus_of_the_same_work_dir_is_written_with_a_warning(built) -> None:
    work, out = built
    mark(work, "vid0001", "download", "failed", "error", "gone")
    result = shard_cli(work, out)
    assert result.exit_code == 0, result.output
    assert "videos: 3 → 2 rows" in result.output and rows(out, "videos") == 2


def test_the_same_work_dir_rewrites_its_corpus_even_when_moved(built, tmp_path: Path) -> None:
    work, out = built
    moved = tmp_path / "moved-work"
    shutil.move(str(work.root), moved)
    result = shard_cli(moved, out)
    assert result.exit_code == 0, result.output
    assert read_json(out / RECORD_NAME)["workdir"] == str(moved)


# ------------------------------------------------------------------ 2. files v60k did not write


def test_foreign_files_are_never_deleted(built) -> None:
    work, out = built
    important = out / "data" / "raw" / "important.csv"
    important.parent.mkdir()
    important.write_text("keep me\n")
    (out / "notes.txt").write_text("mine\n")
    (out / "data" / "linked").symlink_to(important.parent, target_is_directory=True)
    before = snapshot(out)
    for extra in ((), ("--force",)):
        result = shard_cli(work, out, *extra)
        assert result.exit_code == 1, result.output
        assert "did not write" in result.output and "data/raw/important.csv" in result.output
        assert "notes.txt" in result.output and "data/linked" in result.output
    assert snapshot(out) == before


def test_a_folder_of_someone_elses_files_is_refused(tmp_path: Path) -> None:
    work = build_workdir(tmp_path / "work", videos=1)
    home = tmp_path / "projects"
    (home / "data").mkdir(parents=True)
    (home / "data" / "table.parquet").write_bytes(b"not ours")
    (home / "README.md").write_text("---\ntitle: my project\n---\n# mine\n")
    before = snapshot(home)
    with pytest.raises(CorpusError, match="did not write"):
        write_shards(work, home, OutputSettings(check=False), overwrite=True)
    assert snapshot(home) == before
    assert shard_cli(work, tmp_path / "fresh").exit_code == 0  # a new folder is fine
    (tmp_path / "empty").mkdir()
    assert shard_cli(work, tmp_path / "empty").exit_code == 0  # so is an empty one


def test_a_card_edited_by_hand_is_replaced_only_with_force(built) -> None:
    work, out = built
    card = out / "README.md"
    card.write_text(card.read_text() + "\nA note of mine.\n")
    result = shard_cli(work, out)
    assert result.exit_code == 1 and "changed since v60k wrote them: README.md" in result.output
    assert "A note of mine." in card.read_text()
    assert shard_cli(work, out, "--force").exit_code == 0
    assert "A note of mine." not in card.read_text()


def test_a_corpus_written_before_the_record_is_adopted_with_force(built) -> None:
    work, out = built
    (out / RECORD_NAME).unlink()
    before = snapshot(out)
    result = shard_cli(work, out)
    assert result.exit_code == 1 and "without a record" in result.output
    assert snapshot(out) == before
    assert shard_cli(work, out, "--force").exit_code == 0
    assert set(read_json(out / RECORD_NAME)["files"]) == {p for p in snapshot(out) if p != RECORD_NAME}


# ------------------------------------------------------------------ 3. damaged catalog, doctor


def _manifest(path: Path, videos: int = 3) -> Path:
    """The manifest the synthetic work dir stands for (series and cast are only there)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "id", "series", "characters", "language", "license", "title"])
        for v in range(videos):
            writer.writerow([f"https://example.org/v/{v}", f"vid{v:04d}", f"Series {v % 2}",
                             ";".join(CASTS[v % len(CASTS)]), "en", "cc-by-4.0", f"Episode {v}"])
    return path


def test_a_truncated_catalog_is_an_error_and_doctor_rebuilds_it(built, tmp_path: Path) -> None:
    work, out = built
    corpus_before = snapshot(out)
    work.catalog_path.write_bytes(b"")  # `: > catalog.sqlite`
    for args in (("status", "--workdir", work.root), ("run", "--workdir", work.root, "--quiet"),
                 ("shard", "--workdir", work.root, "--out", tmp_path / "x")):
        result = invoke(*args)
        assert result.exit_code != 0, (args, result.output)
        assert "doctor --workdir" in result.output and "0 videos" not in result.output, result.output
        assert "Traceback" not in result.output
    assert work.catalog_path.stat().st_size == 0  # nothing was recreated over it
    with pytest.raises(CatalogDamaged):
        Catalog(work)
    assert Catalog.diagnose(work)["state"] == "empty"

    result = invoke("doctor", "--workdir", work.root)
    assert result.exit_code == 1 and "empty" in result.output and "--repair" in result.output
    result = invoke("doctor", "--workdir", work.root, "--repair", "--manifest", _manifest(tmp_path / "videos.csv"))
    assert result.exit_code == 0, result.output
    assert "rebuilt: 3 video(s)" in result.output
    assert list(work.root.glob("catalog.sqlite.damaged-*"))  # the old file is kept
    with Catalog(work, read_only=True) as catalog:
        assert catalog.video_count() == 3
        assert all(counts["done"] == 3 for counts in catalog.counts().values())
        assert len(catalog.counts()) == 8
    assert invoke("doctor", "--workdir", work.root).exit_code == 0
    result = shard_cli(work, out)  # the rebuilt catalog rewrites its own corpus, identically
    assert result.exit_code == 0, result.output
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k != RECORD_NAME} == \
        {k: v for k, v in corpus_before.items() if k != RECORD_NAME}


def test_a_catalog_that_is_not_a_database_is_named(built) -> None:
    work, _ = built
    work.catalog_path.write_bytes(b"this is not SQLite at all" * 100)
    result = invoke("status", "--workdir", work.root)
    assert result.exit_code != 0 and "cannot be read" in result.output and "doctor" in result.output
    assert Catalog.diagnose(work)["state"] == "damaged"
    result = invoke("doctor", "--workdir", work.root, "--repair")
    assert result.exit_code == 0, result.output
    with Catalog(work, read_only=True) as catalog:
        assert catalog.video_count() == 3


def test_doctor_adds_video_folders_the_catalog_does_not_know(built, tmp_path: Path) -> None:
    work, _ = built
    extra = build_workdir(tmp_path / "extra", videos=4)
    shutil.copytree(extra.video_dir("vid0003"), work.video_dir("vid0003"))
    health = Catalog.diagnose(work)
    assert health["state"] == "ok" and health["unknown_dirs"] == ["vid0003"]
    result = invoke("doctor", "--workdir", work.root, "--repair")
    assert result.exit_code == 0 and "rebuilt: 1 video(s)" in result.output
    with Catalog(work, read_only=True) as catalog:
        assert catalog.video_count() == 4 and catalog.item("vid0003", "generate")["state"] == "done"


def test_a_new_work_dir_still_starts_cleanly(tmp_path: Path) -> None:
    with Catalog(tmp_path / "new") as catalog:
        assert catalog.video_count() == 0 and catalog.catalog_id
        first = catalog.catalog_id
    with Catalog(tmp_path / "new", read_only=True) as catalog:
        assert catalog.catalog_id == first


# ------------------------------------------------------------------ 4. two writers


@contextmanager
def held_lock(path: Path) -> Iterator[None]:
    """Another process holding an flock on ``path`` (a file or a folder) until the block ends."""
    script = ("import fcntl, os, sys\n"
              "p = sys.argv[1]\n"
              "fd = os.open(p, os.O_RDONLY if os.path.isdir(p) else os.O_RDWR | os.O_CREAT)\n"
              "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_folder_being_written_is_not_written_twice(built) -> None:
    work, out = built
    before = snapshot(out)
    with held_lock(out):
        result = shard_cli(work, out)
    assert result.exit_code != 0 and "another v60k shard is writing" in result.output
    assert snapshot(out) == before
    with held_lock(work.lock_path):  # a run holds the work dir
        result = shard_cli(work, out)
    assert result.exit_code != 0 and "another v60k run is using" in result.output
    assert snapshot(out) == before


def test_two_concurrent_shards_into_one_folder(built, tmp_path: Path) -> None:
    work, out = built
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    other = build_workdir(tmp_path / "work2", videos=2)
    commands = [[sys.executable, "-m", "v60k", "shard", "--workdir", str(w.root), "--out", str(out), "--force"]
                for w in (work, other)]
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in commands]
    outputs = [(p.wait(timeout=120), p.stdout.read()) for p in procs if p.stdout is not None]
    for code, output in outputs:
        assert code == 0 or (code == 1 and "another v60k shard is writing" in output), output
        assert "ERROR" not in output and "Traceback" not in output
    assert any(code == 0 for code, _ in outputs)
    report = validate(out)
    assert report.ok, report.render()
    assert rows(out, "videos") in (2, 3)


# ------------------------------------------------------------------ 9. the card and names


def _rename_cast(work: WorkDir, names: list[str]) -> None:
    """Give vid0000's lines, dialogues and cast these character names."""
    paths = work.paths("vid0000")
    lines = read_json(paths.lines_json)
    old = lines["cast"]
    mapping = dict(zip(old, names))
    lines["cast"] = names
    for line in lines["lines"]:
        line["character"] = mapping[line["character"]]
    write_json(paths.lines_json, lines)
    generation = read_json(paths.generation_json)
    for dialogue in generation["dialogues"]:
        dialogue["character"] = mapping[dialogue["character"]]
        for turn in dialogue["turns"]:
            turn["speaker"] = mapping[turn["speaker"]]
    write_json(paths.generation_json, generation)
    with Catalog(work) as catalog:
        catalog.update_video("vid0000", characters=names)


def test_the_card_survives_any_name(tmp_path: Path) -> None:
    work = build_workdir(tmp_path / "work", videos=2)
    evil = "<script>alert(1)</script>\n## Injected heading"
    _rename_cast(work, [evil, "Ross | *bold* [link](http://x)"])
    out = tmp_path / "corpus"
    summary = write_shards(work, out, OutputSettings(pretty_name="Friends --- Season 1", splits={"train": 1.0}))
    assert summary.validation.ok, summary.validation.render()
    header = read_card_header(out / "README.md")
    assert header["pretty_name"] == "Friends --- Season 1" and header["configs"]
    text = (out / "README.md").read_text()
    _, body = split_front_matter(text)
    assert "<script>" not in body and "&lt;script&gt;" in body
    assert not any(line.startswith("## Injected") for line in body.splitlines())
    assert "Ross \\| \\*bold\\* \\[link\\](http://x)" in body
    assert "# Friends --- Season 1" in body
    assert invoke("validate", out).exit_code == 0


def test_the_card_reader_takes_the_header_between_exact_delimiters(tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text("---\r\npretty_name: 'a --- b'\r\nconfigs: []\r\n---\r\n# a --- b\r\n\r\n---\r\nmore\r\n")
    assert read_card_header(card) == {"pretty_name": "a --- b", "configs": []}
    for broken in ("pretty_name: x\n---\n", "---\npretty_name: x\n", "--- x\nfoo: 1\n---\n"):
        card.write_text(broken)
        with pytest.raises(ValueError):
            read_card_header(card)


# ------------------------------------------------------------------ 12. publishing


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def test_publish_is_private_unless_public(built, hub: FakeHub) -> None:
    _, out = built
    result = invoke("publish", out, "--repo-id", "org/private-one")
    assert result.exit_code == 0, result.output
    assert hub.repos["org/private-one"].private
    assert RECORD_NAME not in hub.repos["org/private-one"].files  # it names local paths
    result = invoke("publish", out, "--repo-id", "org/public-one", "--public")
    assert result.exit_code == 0, result.output
    assert not hub.repos["org/public-one"].private


def test_publish_refuses_unknown_licenses(tmp_path: Path, hub: FakeHub) -> None:
    work = build_workdir(tmp_path / "work", videos=3)
    for vid in ("vid0001", "vid0002"):
        info = read_json(work.paths(vid).info_json)
        info.pop("license")
        write_json(work.paths(vid).info_json, info)
        with Catalog(work) as catalog:
            catalog.update_video(vid, license=None if vid == "vid0001" else "unknown")
    out = tmp_path / "corpus"
    assert write_shards(work, out, OutputSettings(splits={"train": 1.0})).validation.ok
    for extra in ((), ("--dry-run",)):
        result = invoke("publish", out, "--repo-id", "org/x", *extra)
        assert result.exit_code == 1 and "2 video(s) have no known license (vid0001, vid0002)" in result.output
        assert "--allow-unknown-license" in result.output
    assert hub.requests == []
    text = (out / "README.md").read_text()
    assert "| cc-by-4.0 | 1 |" in text and "| unknown | 2 |" in text
    result = invoke("publish", out, "--repo-id", "org/x", "--allow-unknown-license")
    assert result.exit_code == 0, result.output
    assert hub.repos["org/x"].files["README.md"] == (out / "README.md").read_bytes()


def test_the_card_credits_cc_by_videos(built) -> None:
    _, out = built
    text = (out / "README.md").read_text()
    assert "| cc-by-4.0 | 3 |" in text and "### Attribution" in text
    for v in range(3):
        assert f'- "Episode {v}" by Example, https://example.org/v/{v}, cc-by-4.0' in text


# ------------------------------------------------------------------ read-only and full disks


def _unshare_available() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _unshare_available(), reason="no user/mount namespaces (unshare -rm)")


def _in_namespace(setup: str, *v60k_args: str | Path) -> subprocess.CompletedProcess[str]:
    """``v60k ARGS`` in a private mount namespace after the ``setup`` shell commands (mounts)."""
    command = " ".join([sys.executable, "-m", "v60k", *(f"'{a}'" for a in v60k_args)])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(["unshare", "-rm", "sh", "-c", f"{setup} && exec {command}"], env=env,
                          capture_output=True, text=True, timeout=120)


@needs_mounts
def test_shard_and_report_read_a_read_only_work_dir(built, tmp_path: Path) -> None:
    work, _ = built
    before = snapshot(work.root)
    ro = f"mount --bind -o ro '{work.root}' '{work.root}'"
    result = _in_namespace(ro, "shard", "--workdir", work.root, "--out", tmp_path / "ro-corpus")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 0 error(s)" in result.stdout and rows(tmp_path / "ro-corpus", "videos") == 3
    result = _in_namespace(ro, "report", "--workdir", work.root, "--out", tmp_path / "report.html")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "report.html").stat().st_size > 1000
    assert snapshot(work.root) == before


@needs_mounts
def test_a_full_or_read_only_output_is_one_clear_line(built, tmp_path: Path) -> None:
    work, out = built
    full = tmp_path / "full"
    full.mkdir()
    result = _in_namespace(f"mount -t tmpfs -o size=48k tmpfs '{full}'", "shard", "--workdir", work.root,
                           "--out", full / "corpus")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "cannot write the corpus" in result.stderr
    assert "No space left on device" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    before = snapshot(out)
    result = _in_namespace(f"mount --bind -o ro '{out}' '{out}'", "shard", "--workdir", work.root, "--out", out)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Read-only file system" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(out) == before


def test_an_out_dir_that_cannot_be_made_is_one_clear_line(built, tmp_path: Path) -> None:
    work, _ = built
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = shard_cli(work, blocker / "corpus")
    assert result.exit_code == 1 and "cannot write the corpus" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
