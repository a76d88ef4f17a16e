"""Validates paymux's OpenAPI document and the API's real answers against it.

Usage: check-openapi.py <dir>, where <dir> holds what `tests/tests/openapi.rs` wrote:
openapi.json (the document the gateway served) and answers.json (real answers: method, route
template, status, body). The document is checked by openapi-spec-validator; each answer's body
against the schema the document gives for that operation and status, by jsonschema (draft
2020-12, the dialect of OpenAPI 3.1). Neither validator is ours. Run it with the venv that
`.ci/run` installs them into.
"""

import json
import sys
from pathlib import Path

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC_URI = "urn:paymux:openapi"


def main() -> int:
    folder = Path(sys.argv[1])
    doc = json.loads((folder / "openapi.json").read_text())
    answers = json.loads((folder / "answers.json").read_text())
    validate(doc)
    print(f"openapi.json: a valid OpenAPI {doc['openapi']} document")

    registry = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    failures = 0
    for answer in answers:
        where = f"{answer['method'].upper()} {answer['path']} -> {answer['status']}"
        operation = doc["paths"].get(answer["path"], {}).get(answer["method"])
        if operation is None:
            print(f"{where}: not in the document")
            failures += 1
            continue
        response = operation["responses"].get(str(answer["status"]))
        if response is None:
            print(f"{where}: this status is not documented")
            failures += 1
            continue
        if "application/json" not in response.get("content", {}):
            print(f"{where}: the document gives no JSON schema for it")
            failures += 1
            continue
        # The schema in place in the document, so its $refs resolve there.
        schema = {"$ref": DOC_URI + "#" + pointer_to(operation_path(answer))}
        errors = list(Draft202012Validator(schema, registry=registry).iter_errors(answer["body"]))
        for e in errors:
            print(f"{where}: {e.json_path}: {e.message}")
        failures += len(errors)
    if failures or not answers:
        print(f"{failures} problem(s) in {len(answers)} answer(s)")
        return 1
    print(f"{len(answers)} real answers match their schemas")
    return 0


def operation_path(answer):
    """The JSON pointer segments of an answer's inline response schema in the document."""
    return [
        "paths",
        answer["path"],
        answer["method"],
        "responses",
        str(answer["status"]),
        "content",
        "application/json",
        "schema",
    ]


def pointer_to(segments):
    escaped = (s.replace("~", "~0").replace("/", "~1") for s in segments)
    return "/" + "/".join(escaped)


if __name__ == "__main__":
    sys.exit(main())
