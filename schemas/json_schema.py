"""The published JSON Schema of the spec, generated from the pydantic models."""

from __future__ import annotations

from typing import Any

from schemas.spec import Experiment

SCHEMA_ID = "https://exprun.dev/schemas/experiment.schema.json"


def experiment_schema() -> dict[str, Any]:
    schema = Experiment.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "exprun experiment spec (version 1)",
        **{k: v for k, v in schema.items() if k != "title"},
    }
