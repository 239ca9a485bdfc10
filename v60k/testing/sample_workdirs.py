"""Small synthetic work dirs in the documented formats (info/scenes/lines/clips/frames/generation JSON,
tiny JPEG frames, catalog rows): the dataset tests and the shard benchmark build their input with this.

    build_workdir(tmp / "work", videos=4, clips_per_video=2, dialogues_per_clip=2)
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from v60k.core.catalog import Catalog, ItemOutcome
from v60k.core.workdir import WorkDir, write_bytes, write_json
from v60k.stages import STAGE_ORDER

CASTS = (("Monica", "Ross"), ("Ada", "Grace", "Linus"))


def tiny_jpeg(seed: int, size: tuple[int, int] = (32, 24)) -> bytes:
    from PIL import Image

    colour = ((seed * 53) % 256, (seed * 97) % 256, (seed * 151) % 256)
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def build_workdir(root: str | Path, videos: int = 4, clips_per_video: int = 2, dialogues_per_clip: int = 2,
                  lines_per_clip: int = 4, frames_per_clip: int = 3, series_count: int = 2,
                  done_stages: tuple[str, ...] = STAGE_ORDER, jpeg: bytes | None = None, judged: bool = False) -> WorkDir:
    """A work dir whose catalog says ``done_stages`` are done for every video, with their files written.
    ``judged``: each clip's first dialogue carries judge scores (1-10, varying by clip), its second an
    unreadable judge answer (``judge_scores`` null, ``judge_problem``), the rest none."""
    workdir = WorkDir(root).create()
    clip_len = 30.0
    with Catalog(workdir) as catalog:
        rows = []
        for v in range(videos):
            cast = CASTS[v % len(CASTS)]
            rows.append({"video_id": f"vid{v:04d}", "source_url": f"https://example.org/v/{v}",
                         "series": f"Series {v % series_count}" if series_count else None,
                         "characters": list(cast), "language": "en", "license": "cc-by-4.0",
                         "title": f"Episode {v}"})
        catalog.add_videos(rows)
        catalog.ensure_items(list(STAGE_ORDER))
        for row in rows:
            vid, cast = row["video_id"], row["characters"]
            paths = workdir.paths(vid)
            duration = clip_len * clips_per_video
            write_json(paths.info_json, {"id": vid, "title": row["title"], "channel": "Example", "duration": duration,
                                         "license": row["license"], "upload_date": "20240101",
                                         "webpage_url": row["source_url"], "width": 320, "height": 240, "fps": 25.0})
            scenes = [{"index": i, "start_s": i * clip_len / 2, "end_s": (i + 1) * clip_len / 2,
                       "start_frame": int(i * clip_len / 2 * 25), "end_frame": int((i + 1) * clip_len / 2 * 25)}
                      for i in range(clips_per_video * 2)]
            write_json(paths.scenes_json, {"stream": {"duration_s": duration, "fps": 25.0, "width": 320, "height": 240,
                                                      "has_video": True, "has_audio": True},
                                           "detector": {"name": "adaptive"}, "scenes": scenes})
            lines, clips, frames, dialogues, summaries = [], [], {}, [], {}
            for c in range(clips_per_video):
                clip_id = f"{vid}-c{c:03d}"
                start = c * clip_len
                clip_lines = []
                for k in range(lines_per_clip):
                    n = len(lines)
                    t0 = start + 1.0 + k * (clip_len - 2) / lines_per_clip
                    speaker_index = k % 2
                    words = [{"text": f"w{j}", "start_s": round(t0 + 0.3 * j, 3), "end_s": round(t0 + 0.3 * j + 0.25, 3),
                              "probability": 0.9} for j in range(3)]
                    line = {"line_id": f"L{n:04d}", "start_s": round(t0, 3), "end_s": round(t0 + 1.0, 3),
                            "text": f"Line {n} of {vid}, said by {cast[speaker_index]}.",
                            "speaker": f"SPEAKER_{speaker_index:02d}", "character": cast[speaker_index],
                            "confidence": 0.9 - 0.1 * speaker_index, "words": words}
                    lines.append(line)
                    clip_lines.append(line)
                clips.append({"clip_id": clip_id, "index": c, "start_s": start, "end_s": start + clip_len,
                              "scene_indices": [2 * c, 2 * c + 1], "line_ids": [x["line_id"] for x in clip_lines]})
                frames[clip_id] = []
                for f in range(frames_per_clip):
                    t = start + (f + 0.5) * clip_len / frames_per_clip
                    rel = f"frames/{clip_id}/{int(t * 1000):06d}.jpg"
                    write_bytes(paths.root / rel, jpeg if jpeg is not None else tiny_jpeg(v * 100 + c * 10 + f))
                    frames[clip_id].append({"t_s": round(t, 3), "path": rel, "scene_index": 2 * c})
                summaries[clip_id] = {"text": f"In clip {c} of {vid}, {cast[0]} and {cast[1]} talk.",
                                      "generation_type": "extractive", "generator": "v60k", "prompt_version": None}
                for d in range(dialogues_per_clip):
                    who, other = cast[d % 2], cast[(d + 1) % 2]
                    turns = []
                    for t in range(4):
                        role = "user" if t % 2 == 0 else "character"
                        turns.append({"role": role, "speaker": other if role == "user" else who,
                                      "text": f"Turn {t} of dialogue {d} in {clip_id}."})
                    dialogues.append({"dialogue_id": f"{clip_id}-d{d:02d}", "clip_id": clip_id, "character": who,
                                      "generation_type": "raw_lines", "generator": "v60k", "prompt_version": None,
                                      "turns": turns})
                    if judged and d == 0:
                        base = (v * 3 + c * 2) % 8 + 1  # 1..8: some dialogues pass a >= 7 filter, most do not
                        scores = {"fluency": base + 2, "tone_consistency": base, "video_text_relevance": base + 1}
                        dialogues[-1]["judge_scores"] = scores
                        dialogues[-1]["judge_score"] = round(sum(scores.values()) / len(scores), 3)
                    elif judged and d == 1:
                        dialogues[-1].update(judge_scores=None, judge_problem="no valid score")
            speakers = {f"SPEAKER_{i:02d}": {"character": cast[i], "confidence": 0.9 - 0.1 * i, "evidence": {}}
                        for i in range(2)}
            write_json(paths.transcript_json, {"backend": "synthetic", "language": "en", "duration_s": duration,
                                               "segments": [{k: x[k] for k in ("start_s", "end_s", "text", "words")}
                                                            for x in lines]})
            write_json(paths.diarization_json, {"backend": "synthetic", "num_speakers": 2, "turns": [],
                                                "speakers": {}, "lines": [{k: v for k, v in x.items()
                                                                           if k not in ("character", "confidence")}
                                                                          for x in lines]})
            write_json(paths.lines_json, {"cast": list(cast), "cast_source": "manifest", "speakers": speakers,
                                          "lines": lines})
            write_json(paths.clips_json, {"clips": clips})
            write_json(paths.frames_json, {"clips": frames, "settings": {}})
            write_json(paths.generation_json, {
                "summaries": summaries, "dialogues": dialogues,
                "usage": {"requests": 2, "prompt_tokens": 1000, "completion_tokens": 250, "cached": 0, "cost_usd": 0.002},
                "failures": []})
            for stage in done_stages:
                usage = {"prompt_tokens": 1000, "completion_tokens": 250, "cost_usd": 0.002} if stage == "generate" else {}
                now = time.time()
                catalog.record(ItemOutcome(vid, stage, "done", now, now + 0.1, usage=usage), fingerprint="synthetic")
    return workdir


def mark(workdir: WorkDir, video_id: str, stage: str, state: str, error_class: str | None = None,
         message: str | None = None) -> None:
    """Set one (video, stage) row's state, e.g. a failure for the report's failures plot."""
    with Catalog(workdir) as catalog:
        now = time.time()
        catalog.record(ItemOutcome(video_id, stage, state, now, now, error_class=error_class,
                                   error_message=message), fingerprint="synthetic")


def describe(workdir: WorkDir) -> dict[str, Any]:
    with Catalog(workdir) as catalog:
        return {"videos": catalog.video_count(), "counts": catalog.counts()}
