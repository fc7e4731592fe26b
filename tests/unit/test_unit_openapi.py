"""The committed OpenAPI document is the one the controller serves."""

from __future__ import annotations

import json
from pathlib import Path

from nfvha.api.openapi import openapi_document

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_openapi_document_is_current() -> None:
    committed = json.loads(DOC.read_text())
    assert committed == json.loads(json.dumps(openapi_document(), sort_keys=True)), (
        "docs/openapi.json is stale: run 'nfvha openapi > docs/openapi.json'")


def test_openapi_document_covers_the_standard_interfaces() -> None:
    paths = json.loads(DOC.read_text())["paths"]
    for p in ("/vnffm/v1/alarms", "/vnffm/v1/alarms/{alarm_id}", "/vnffm/v1/subscriptions",
              "/vnffm/v1/subscriptions/{subscription_id}", "/v1/notifications",
              "/doctor/events", "/v1/status", "/v1/events"):
        assert p in paths, p
