"""The corpus as its users get it: Parquet shards checked against ``schemas/``, a dataset card, an HTML
report and Hub publishing.

    from v60k.dataset import OutputSettings, write_shards, validate, write_card, write_report, publish
"""

from __future__ import annotations

from v60k.dataset.card import write_card
from v60k.dataset.schema import SPLITS, TABLES, table_schema
from v60k.dataset.validate import ValidationReport, validate
from v60k.dataset.writer import OutputSettings, ShardSummary, write_shards

__all__ = ["SPLITS", "TABLES", "OutputSettings", "ShardSummary", "ValidationReport", "publish", "table_schema",
           "validate", "write_card", "write_report", "write_shards"]


def write_report(*args, **kwargs):  # noqa: ANN002, ANN003 - lazy import of the report module
    from v60k.dataset.report import write_report as _write_report

    return _write_report(*args, **kwargs)


def publish(*args, **kwargs):  # noqa: ANN002, ANN003 - lazy import (huggingface_hub)
    from v60k.dataset.publish import publish as _publish

    return _publish(*args, **kwargs)
