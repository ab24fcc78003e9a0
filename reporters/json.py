"""JSON (`results.json`): the whole Report; its schema is `schemas/results.schema.json`."""

from __future__ import annotations

from reporters.base import Files
from schemas.report import Report

FILE_NAME = "results.json"


def render_json(report: Report) -> str:
    return report.model_dump_json(indent=2) + "\n"


class JsonReporter:
    name = "json"

    def render(self, report: Report) -> Files:
        return {FILE_NAME: render_json(report)}
