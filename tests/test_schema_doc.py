"""docs/SCHEMA.md is generated from the pydantic models and documents every field."""

from pathlib import Path

from dupstream.lab.schema_doc import MODELS, render, rows

PAGE = Path(__file__).resolve().parents[1] / "docs" / "SCHEMA.md"


def test_every_public_field_is_documented():
    undocumented = [f"{m.__name__}.{name}" for m in MODELS for name, _, _, desc in rows(m)
                    if not desc]
    assert undocumented == []


def test_committed_schema_page_is_current():
    assert PAGE.read_text() == render(), (
        "docs/SCHEMA.md is stale: python -m dupstream.lab.schema_doc > docs/SCHEMA.md")
