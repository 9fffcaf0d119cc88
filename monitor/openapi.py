"""What the OpenAPI schema cannot learn from the views' signatures: the batch body (read raw, so
its size can be capped while streaming) and the probe authentication headers of /v1/targets
(checked by hand, so a missing header is a 401, not a generic 422)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from monitor.ingest.schemas import SignedBatch
from monitor.signing.eip712 import HEADER_PROBE, HEADER_SIGNATURE, HEADER_TIMESTAMP

AUTH_HEADERS = [
    (HEADER_PROBE, "^0x[0-9a-fA-F]{40}$", "the probe's address"),
    (HEADER_TIMESTAMP, "^[0-9]{1,16}$", "unix time in milliseconds"),
    (HEADER_SIGNATURE, "^0x[0-9a-fA-F]{130}$", "EIP-712 signature (docs/signing.md)"),
]


def install(app: FastAPI) -> None:
    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            body = SignedBatch.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components["SignedBatch"] = body
            doc["paths"]["/v1/batches"]["post"]["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/SignedBatch"}}
                },
            }
            doc["paths"]["/v1/targets"]["get"]["parameters"] = [
                {
                    "name": name,
                    "in": "header",
                    "required": True,
                    "description": description,
                    "schema": {"type": "string", "pattern": pattern},
                }
                for name, pattern, description in AUTH_HEADERS
            ]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]
