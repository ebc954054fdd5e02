"""The OpenAPI rewrite's rules on a small app: error statuses per route kind, no 422, the links."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from grokd.server.openapi import document_errors


class Body(BaseModel):
    x: int


def _spec() -> dict:
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {}

    @app.post("/v1/files")
    def upload() -> dict:
        return {}

    @app.get("/v1/files/{file_id}")
    def get_file(file_id: str) -> dict:
        return {}

    @app.post("/v1/tokenize-text")
    def tokenize(body: Body) -> dict:
        return {}

    spec = get_openapi(title="t", version="0", routes=app.routes)
    return document_errors(spec, always_open={"/health"}, public={"/health"})


def test_statuses_follow_the_route_kind() -> None:
    paths = _spec()["paths"]
    assert set(paths["/health"]["get"]["responses"]) == {"200", "408", "500"}
    tokenize = set(paths["/v1/tokenize-text"]["post"]["responses"])
    assert {"400", "401", "403", "404", "413", "415", "429", "500", "503"} <= tokenize and "422" not in tokenize
    get_file = set(paths["/v1/files/{file_id}"]["get"]["responses"])
    assert {"404", "501"} <= get_file and "413" not in get_file


def test_error_responses_carry_the_envelope() -> None:
    spec = _spec()
    resp = spec["paths"]["/v1/tokenize-text"]["post"]["responses"]["400"]
    assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["ErrorResponse"]["required"] == ["error"]


def test_links_point_only_at_operations_the_document_has() -> None:
    links = _spec()["paths"]["/v1/files"]["post"]["responses"]["200"]["links"]
    assert links == {"GetFile": {"operationRef": "#/paths/~1v1~1files~1{file_id}/get",
                                 "parameters": {"file_id": "$response.body#/id"}}}
