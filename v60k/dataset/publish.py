"""Publish a shard folder to a Hugging Face dataset repository.

    result = publish("corpus", "my-org/my-roleplay")            # a private repository unless private=False

The folder is validated first (a failing corpus is not published), and every video must have a known license
(``allow_unknown_license`` to publish anyway). The repository is created if needed, private unless
``private=False`` (``create_repo(repo_type="dataset", exist_ok=True)``), then the shards go up in batched commits (data files
first, the card last), each retried on transient errors. A re-run is a resume: the Hub reports which files it
already has with the same content, and those are skipped. The token comes from ``HF_TOKEN`` or the login cache;
it is never printed or written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from v60k.core.errors import V60kError
from v60k.dataset.card import normalize_license
from v60k.dataset.reader import read_rows
from v60k.dataset.validate import validate

MB = 1024 * 1024


class PublishError(V60kError, RuntimeError):
    """Nothing (more) was uploaded: the corpus does not validate, no token, or the Hub kept failing."""


@dataclass
class PublishResult:
    repo_id: str
    url: str
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    commits: int = 0
    attempts: int = 0
    dry_run: bool = False
    private: bool = False


def upload_plan(root: Path) -> list[tuple[str, Path]]:
    """(path in repo, local path): the card and every shard under data/, shards first, in name order."""
    shards = sorted(p for p in (root / "data").rglob("*.parquet") if not any(x.startswith(".") for x in p.parts))
    plan = [(p.relative_to(root).as_posix(), p) for p in shards]
    if (root / "README.md").exists():
        plan.append(("README.md", root / "README.md"))
    return plan


def batches(plan: list[tuple[str, Path]], max_files: int, max_bytes: int) -> list[list[tuple[str, Path]]]:
    """Consecutive groups of at most ``max_files`` files and about ``max_bytes``; the card alone, last."""
    out: list[list[tuple[str, Path]]] = []
    current: list[tuple[str, Path]] = []
    size = 0
    for rel, path in plan:
        if rel == "README.md":
            continue
        length = path.stat().st_size
        if current and (len(current) >= max_files or size + length > max_bytes):
            out.append(current)
            current, size = [], 0
        current.append((rel, path))
        size += length
    if current:
        out.append(current)
    out += [[item] for item in plan if item[0] == "README.md"]
    return out


def resolve_token(token: str | None = None) -> str | None:
    """An explicit token, else ``HF_TOKEN``, else the login cache."""
    if token:
        return token
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    from huggingface_hub import get_token

    return get_token()


def _retryable(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status is None or status >= 500 or status == 429
    if isinstance(exc, (OSError, TimeoutError)) or type(exc).__module__.split(".")[0].startswith("httpx"):
        return True
    return exc.__cause__ is not None and _retryable(exc.__cause__)


def unknown_licenses(root: Path) -> list[str]:
    """Ids of the corpus's videos whose license is missing or unknown."""
    rows = read_rows(root, "videos", columns=["video_id", "license"])
    return sorted(row["video_id"] for row in rows if normalize_license(row["license"]) is None)


def publish(directory: str | Path, repo_id: str, private: bool = True, dry_run: bool = False, *,
            allow_unknown_license: bool = False,
            revision: str | None = None, commit_message: str = "Upload corpus shards", token: str | None = None,
            endpoint: str | None = None, max_files_per_commit: int = 100, max_mb_per_commit: float = 4096,
            retries: int = 4, backoff_s: float = 2.0, echo: Callable[[str], None] = print) -> PublishResult:
    """Validate ``directory`` and upload it to the dataset repository ``repo_id`` (see the module doc)."""
    root = Path(directory)
    report = validate(root)
    if not report.ok:
        raise PublishError(f"not published: {root} does not validate\n{report.render()}")
    unknown = [] if allow_unknown_license else unknown_licenses(root)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise PublishError(f"not published: {len(unknown)} video(s) have no known license ({shown}); set `license` "
                           "in the manifest (or `output.license`), or pass --allow-unknown-license")
    plan = upload_plan(root)
    if not any(rel == "README.md" for rel, _ in plan):
        raise PublishError(f"not published: {root} has no dataset card (README.md); run `v60k shard` first")
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    result = PublishResult(repo_id=repo_id, url=f"{endpoint.rstrip('/')}/datasets/{repo_id}",
                           files=[rel for rel, _ in plan], bytes=sum(p.stat().st_size for _, p in plan),
                           dry_run=dry_run, private=private)
    groups = batches(plan, max_files_per_commit, int(max_mb_per_commit * MB))
    if dry_run:
        echo(f"would create dataset repo {repo_id} ({'private' if private else 'public'}) if missing, then commit:")
        for number, group in enumerate(groups, 1):
            for rel, path in group:
                echo(f"  [{number}/{len(groups)}] {rel}  {path.stat().st_size / 1e6:.2f} MB")
        return result

    token = resolve_token(token)
    if not token:
        raise PublishError("not published: no Hugging Face token (set HF_TOKEN or run `hf auth login`)")
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint, token=token)
    url = _retrying(lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
                    "create the repository", retries, backoff_s, echo, result)
    result.url = str(url)
    for number, group in enumerate(groups, 1):
        def commit(group=group, number=number):
            operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path)) for rel, path in group]
            return api.create_commit(repo_id, operations, repo_type="dataset", revision=revision,
                                     commit_message=f"{commit_message} ({number}/{len(groups)})")

        _retrying(commit, f"commit {number}/{len(groups)}", retries, backoff_s, echo, result)
        result.commits += 1
        echo(f"batch {number}/{len(groups)} done: {len(group)} file(s)")
    return result


def _retrying(action: Callable[[], object], what: str, retries: int, backoff_s: float,
              echo: Callable[[str], None], result: PublishResult) -> object:
    for attempt in range(retries + 1):
        result.attempts += 1
        try:
            return action()
        except Exception as exc:
            if attempt >= retries or not _retryable(exc):
                raise PublishError(f"could not {what}: {type(exc).__name__}: {exc}") from exc
            delay = backoff_s * 2**attempt
            echo(f"{what} failed ({type(exc).__name__}); retry {attempt + 1}/{retries} in {delay:.0f} s")
            time.sleep(delay)
    raise AssertionError("unreachable")
