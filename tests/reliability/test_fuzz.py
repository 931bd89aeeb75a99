"""Fuzzing: schemathesis generates requests from sctk's own OpenAPI document, sent with an
admin's JWT to the real API over HTTP; every answer must be a non-5xx whose status, content
type, headers and body the document describes.

Schemathesis's Python API drives it: for each operation, valid requests (positive mode) and
requests that break the schema (negative mode), Hypothesis-generated from a fixed seed so
that a run in CI is reproducible (SCTK_FUZZ_SEED picks another; SCTK_FUZZ_EXAMPLES more).

Bounded for the run itself, and only that: a request that would change the fuzzing admin's
own account (its password, role or state, by username in the path) is sent for a decoy
account instead, and a key rotation keeps the login sessions, so that the rest of the run is
not answered 401. Nothing else is excluded.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sctk import config
from sctk.storage.engine import make_engine, session_scope
from tests.helpers import LiveServer
from tests.reliability.harness import prepare_home

pytestmark = [pytest.mark.reliability, pytest.mark.parametrize("backend", ["sqlite"])]

SEED = int(os.environ.get("SCTK_FUZZ_SEED", "20261127"))
EXAMPLES = int(os.environ.get("SCTK_FUZZ_EXAMPLES", "10"))  # per operation and mode
MIN_CASES = 1000
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
DECOY = ("dora.decoy", "Walnut-Comet-Harbour-284", "analyst")
LIMITS = {  # every request comes from 127.0.0.1 and one account: no 429 instead of answers
    "client_rate_limit_per_minute": 100_000_000,
    "rate_limit_per_minute": 100_000_000,
    "rate_limit_burst": 1_000_000,
}


# uvicorn's HTTP parser (httptools) refuses a request target of 64 KiB or more with its own
# text/plain 400 before the app sees the request, and the document describes the app's
# answers. Negative cases can build such a URL (a string parameter far over its maxLength,
# of 4-byte characters, percent-encoded: 12 bytes each); they are counted, not checked.
PARSER_URL_LIMIT = 64 * 1024


def _refused_by_the_http_parser(response) -> bool:
    return (
        response.status_code == 400
        and len(response.request.url) >= PARSER_URL_LIMIT
        and response.text == "Invalid HTTP request received."
    )


def _bound(case, admin: str) -> None:
    """Keep the run's own identity intact (see the module docstring)."""
    params = case.path_parameters or {}
    if params.get("username") == admin:
        params["username"] = DECOY[0]
    # ending every login session would end the run's own JWT too: rotate, keep sessions
    if isinstance(case.query, dict) and "revoke_sessions" in case.query:
        case.query["revoke_sessions"] = False


def _fuzz_operation(operation, mode, base_url, http, auth, admin, tally) -> None:
    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        _bound(case, admin)
        started = time.perf_counter()
        response = case.call(base_url=base_url, session=http, headers=auth, timeout=60)
        tally["cases"][operation.label] += 1
        tally["status"][response.status_code] += 1
        tally["time"][operation.label] += time.perf_counter() - started
        if _refused_by_the_http_parser(response):
            tally["parser"] += 1
            return
        if response.status_code < 300:
            tally["ok"].add(operation.label)
        try:
            case.validate_response(response, checks=CHECKS)
        except (FailureGroup, AssertionError) as exc:  # collected: no shrinking, all listed
            first = str(exc).strip().splitlines()[:6]
            tally["failures"][operation.label].append(
                f"{mode.value} {response.status_code}: {' / '.join(first)}\n"
                f"    {case.as_curl_command()}"[:1200]
            )

    try:
        run()
    except Unsatisfiable:
        # negative mode on an operation with nothing to break (no parameters, no body)
        if mode is not GenerationMode.NEGATIVE:
            raise


def test_fuzz_the_openapi_document_no_5xx_no_schema_violations(tmp_path, settings):
    from sctk.api.app import create_app
    from sctk.security import users
    from tests.reliability.harness import ADMIN, login

    prepare_home(settings.home)  # the admin and a model for the model operations to find
    engine = make_engine(settings)
    with session_scope(engine) as session:
        users.create(session, *DECOY, actor="tests")
    engine.dispose()
    app_settings = config.load(settings.home, {"security": LIMITS}).settings

    tally = {
        "cases": Counter(),
        "status": Counter(),
        "ok": set(),
        "time": Counter(),
        "failures": defaultdict(list),
        "parser": 0,
    }
    with LiveServer(create_app(app_settings)) as server, requests.Session() as http:
        document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
        schema = schemathesis.openapi.from_dict(document)
        auth = login(server.url)
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(operation, mode, server.url, http, auth, ADMIN[0], tally)
        # the identity held to the end: the run did not fuzz itself into 401s
        assert http.get(f"{server.url}/api/v1/me", headers=auth).status_code == 200

    total = sum(tally["cases"].values())
    statuses = dict(sorted(tally["status"].items()))
    print(
        f"fuzzing: {total} cases over {len(operations)} operations (seed {SEED}); "
        f"answers by status {statuses}; {len(tally['ok'])} operations answered 2xx; "
        f"{tally['parser']} URLs over {PARSER_URL_LIMIT} bytes refused by the HTTP parser"
    )
    print("slowest operations (s):", [(k, round(v, 1)) for k, v in tally["time"].most_common(5)])
    failures = {label: found for label, found in tally["failures"].items() if found}
    assert not failures, "\n".join(
        f"{label}: {len(found)} failing cases, first: {found[0]}"
        for label, found in failures.items()
    )
    assert total >= MIN_CASES, tally["cases"]
    assert sum(n for code, n in statuses.items() if code >= 500) == 0
    # not only refusals: most operations were reached with a request they accept
    assert len(tally["ok"]) >= len(operations) // 2, sorted(tally["ok"])
