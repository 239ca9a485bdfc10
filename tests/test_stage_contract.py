"""The stage contract: stages declare the documents they read and write, the registry derives the order
(``requires``) from them, and a re-run of a stage re-queues every later stage that reads what it writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from v60k.core import documents, pipeline
from v60k.core.catalog import Catalog, ItemOutcome
from v60k.core.documents import DOCUMENTS, NAMES, DocumentError
from v60k.core.stage import Stage
from v60k.core.workdir import VideoPaths, WorkDir, write_json
from v60k.stages import (
    STAGE_ORDER,
    ContractError,
    derive_requires,
    registered_stages,
    stage_class,
    stages_through,
)


def test_each_read_document_has_exactly_one_earlier_writer_and_requires_is_derived() -> None:
    classes = registered_stages()
    assert [c.name for c in classes] == list(STAGE_ORDER)
    writer_of: dict[str, list[int]] = {}
    for position, klass in enumerate(classes):
        assert set(klass.reads) | set(klass.writes) <= set(NAMES), klass.name
        for doc in klass.writes:
            writer_of.setdefault(doc, []).append(position)
    for position, klass in enumerate(classes):
        for doc in klass.reads:
            assert len(writer_of.get(doc, [])) == 1, f"{klass.name} reads {doc}: writers {writer_of.get(doc)}"
            assert writer_of[doc][0] < position, f"{klass.name} reads {doc} before it is written"
        expected = {classes[writer_of[doc][0]].name for doc in klass.reads}
        assert set(klass.requires) == expected and len(klass.requires) == len(expected), klass.name
        assert list(klass.requires) == sorted(klass.requires, key=STAGE_ORDER.index)
    assert all(writer_of.get(name) for name in DOCUMENTS), "every document has a writer stage"


def test_generate_depends_on_sample_because_it_reads_frames() -> None:
    generate = stage_class("generate")
    assert "frames" in generate.reads and "sample" in generate.requires
    assert stages_through("lines") == ("download", "scenes", "transcribe", "diarize", "attribute")


def test_a_read_without_an_earlier_writer_or_a_document_written_twice_is_refused() -> None:
    class Writes(Stage):
        name = "w"
        writes = ("clips",)

    class Reads(Stage):
        name = "r"
        reads = ("clips",)

    assert derive_requires([Writes, Reads]) == {"w": (), "r": ("w",)}
    with pytest.raises(ContractError, match="r reads clips, which no earlier stage writes"):
        derive_requires([Reads, Writes])
    with pytest.raises(ContractError, match="clips is written by both w and w"):
        derive_requires([Writes, Writes])


def test_documents_read_todays_files_keep_unknown_fields_and_explain_bad_ones(tmp_path: Path) -> None:
    paths = VideoPaths(tmp_path)
    for name, doc in DOCUMENTS.items():
        assert getattr(paths, doc.paths_attribute()) == doc.path(paths) == tmp_path / doc.file_name, name
    write_json(paths.scenes_json, {
        "stream": {"duration_s": 4.0, "fps": 25.0}, "detector": {"name": "adaptive"},
        "scenes": [{"index": 0, "start_s": 0.0, "end_s": 4.0, "start_frame": 0, "end_frame": 100}],
        "motion": {"fps": 5.0, "times_s": [0.0, 0.2], "scores": [0.0, 3.1], "dhash": ["a1b2c3d4e5f60718", "00ff"]},
        "warnings": ["kept"]})
    scenes = documents.Scenes.load(paths)
    assert scenes.motion is not None and scenes.motion.dhash == [0xA1B2C3D4E5F60718, 0xFF]
    scenes.save(paths)
    again = documents.load(paths, documents.Scenes)
    assert again.motion.to_dict()["dhash"] == ["a1b2c3d4e5f60718", "00000000000000ff"]
    assert (again.model_extra or {})["warnings"] == ["kept"] and again.stream.duration_s == 4.0
    profile = documents.Motion(fps=2.0)  # filled after construction: still written whole
    profile.add(0.0, 0.0, 5)
    documents.Scenes(motion=profile).save(paths)
    assert documents.Scenes.load(paths).motion == profile
    write_json(paths.clips_json, {"clips": [{"clip_id": "c0", "start_s": 0.0}]})
    with pytest.raises(DocumentError, match=r"clips.json is not valid: clips.0.end_s"):
        documents.Clips.load(paths)
    with pytest.raises(DocumentError, match="frames.json is missing"):
        documents.Frames.load(paths)


def test_a_changed_sample_setting_requeues_generate(tmp_path: Path) -> None:
    """Real stages, pipeline and catalog: sample (re-)runs, generate (not selected) goes back to pending."""
    work = WorkDir(tmp_path / "work").create()
    with Catalog(work) as catalog:
        catalog.add_videos([{"video_id": "ep1", "source_url": "file:///ep1.mp4"}])
        catalog.ensure_items(list(STAGE_ORDER))
        for stage in STAGE_ORDER:  # finished earlier, under settings whose fingerprint is not recorded
            catalog.record(ItemOutcome("ep1", stage, "done", 0.0, 1.0), None)

    def states() -> dict[str, str]:
        with Catalog(work) as catalog:
            return {stage: catalog.item("ep1", stage)["state"] for stage in ("clips", "sample", "generate")}

    # sample runs (no clips.json: it skips at once) and records its fingerprint; generate is re-queued
    pipeline.run(work, stages=["sample"], force=True)
    assert states() == {"clips": "done", "sample": "skipped", "generate": "pending"}
    with Catalog(work) as catalog:
        catalog.record(ItemOutcome("ep1", "generate", "done", 0.0, 1.0), None)
    pipeline.run(work, stages=["sample"])  # same settings: nothing to do, generate stays done
    assert states() == {"clips": "done", "sample": "skipped", "generate": "done"}
    pipeline.run(work, stages=["sample"], overrides={"sample": {"max_frames": 8}})
    assert states() == {"clips": "done", "sample": "skipped", "generate": "pending"}
