"""Schemathesis checks of our own, loaded through SCHEMATHESIS_HOOKS by
.ci/openapi-conformance."""

import os

import schemathesis

# Operations anyone may call; everything else under /api/v1/ needs the token.
PUBLIC = {"/api/v1/openapi.json"}


@schemathesis.check
def unauthenticated_answers_401(ctx, response, case):
    """Without a token, every /api/v1 operation but the document answers
    401 with `WWW-Authenticate: Bearer` and a JSON error, whatever else the
    request holds. Active only in the run without a token."""
    if os.environ.get("CI_EXPECT_401") != "1":
        return None
    path = case.operation.path
    if not path.startswith("/api/v1/") or path in PUBLIC:
        return None
    if response.status_code != 401:
        raise AssertionError(
            f"{case.operation.method.upper()} {path} without a token answered "
            f"{response.status_code}, not 401"
        )
    if response.headers.get("www-authenticate") != ["Bearer"]:
        raise AssertionError(f"401 without `WWW-Authenticate: Bearer`: {response.headers}")
    body = response.json()
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        raise AssertionError(f"401 without a JSON error body: {body!r}")
    return None
