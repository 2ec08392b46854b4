"""The service against its own OpenAPI document: schemathesis through the ASGI app (no
network), on a real Detector (a tiny XGBoost model, memory state) behind an API key.

Every operation gets up to MAX_EXAMPLES generated requests per run, valid and invalid
(schemathesis' positive and negative modes, with its examples and coverage phases), some
without the key. Each reply must have a status code the document lists, a Content-Type and
a body that conform to it, the documented headers, and no 5xx; a request the document calls
invalid must be refused (negative_data_rejection: the document is as strict as the service);
a request without the key must get 401 (ignored_auth).

Left out: positive_data_acceptance (every schema-valid request accepted). The document
cannot say everything the service checks: that 2026-02-30 is not a date, that a transaction
time must fall in the window around the server's clock, that a composite key needs one
known part, that an id already scored with other content is a conflict. Those are
documented 4xx replies, and status_code_conformance holds them to the document.

The run is bounded (MAX_EXAMPLES, derandomized so every run tests the same requests, no
example database written) and takes about 20 s on 2 cores, most of it the model's training.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from fraudseq.serving.http import create_app
from test_api import FakeDetector

KEY = "contract-test-key"
MAX_BATCH = 5
MAX_EXAMPLES = 60

# The document depends only on the model's schema (the simulator's), the key and the batch
# limit, so it is built here, at collection, without a model; the test checks that the real
# app serves the same document. (schemathesis.pytest.from_fixture would build it from the
# real app, but it does not run under pytest 9.)
DOCUMENT = create_app(FakeDetector(), api_key=KEY, max_batch=MAX_BATCH).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.update(headers={"X-API-Key": KEY})


@pytest.fixture(scope="session")
def contract_app(tiny_xgboost):
    """The app on a real Detector, built once per session (per xdist worker)."""
    from fraudseq.serving import Detector

    model_dir, _ = tiny_xgboost
    detector = Detector.load(model_dir, "memory")
    detector.explain = "none"
    app = create_app(detector, api_key=KEY, max_batch=MAX_BATCH)
    assert app.openapi() == DOCUMENT
    yield app
    detector.close()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_service_conforms_to_its_openapi_document(case, contract_app):
    # The schema came from a document, so schemathesis needs the app to send requests to
    # (its own probes, such as the request without the key, use the schema's).
    case.operation.schema.app = case.operation.app = contract_app
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
