"""The OpenAPI 3.1 document, generated from the route declarations and their models.

Every status an operation can answer is listed: its success status (and 202
where the work may still be queued), the statuses of the domain errors it
declares (through ``status.status_of``, the same table the answers use), 400
for any operation that parses input, 413 for any that takes a body, 401 for
the control endpoints when a token is set (and the bearer scheme only then).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic.json_schema import models_json_schema

from p2p_offers.node import errors
from p2p_offers.node.http.registry import JSON, Api, Operation
from p2p_offers.node.http.schemas import ErrorOut
from p2p_offers.node.http.status import DESCRIPTIONS, status_of

_PATH_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")
_OK = {200: "OK", 201: "Created", 202: "Accepted: still queued; poll the resource"}


def openapi(
    apis: list[Api],
    title: str,
    version: str,
    *,
    auth: bool,
    path_params: dict[str, dict[str, Any]],
    description: str = "",
) -> dict[str, Any]:
    """The document of every registered operation; ``path_params`` gives each one's schema."""
    ops = [op for api in apis for op in api.operations]
    models = {m for op in ops for m in (op.body, op.query, op.response) if m} | {ErrorOut}
    models |= {op.accepted for op in ops if isinstance(op.accepted, type)}
    refs, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    error_ref = refs[(ErrorOut, "validation")]
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        path = _PATH_PARAM.sub(r"{\1}", op.path)
        operation: dict[str, Any] = {"summary": op.summary, "operationId": op.handler.__name__}
        params = [
            {"name": name, "in": "path", "required": True, "schema": path_params[name]}
            for name in _PATH_PARAM.findall(op.path)
        ]
        params += _query_params(op)
        if params:
            operation["parameters"] = params
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        operation["responses"] = _responses(op, refs, error_ref, auth)
        if op.auth and auth:
            operation["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[op.method.lower()] = operation
    components: dict[str, Any] = {"schemas": defs.get("$defs", {})}
    if auth:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": components,
    }


def _query_params(op: Operation) -> list[dict[str, Any]]:
    if op.query is None:
        return []
    schema = op.query.model_json_schema(ref_template="#/components/schemas/{model}")
    params = []
    for attr, field in op.query.model_fields.items():
        name = field.alias or attr  # a query key that is a keyword (from) has an alias
        params.append(
            {
                "name": name,
                "in": "query",
                "required": field.is_required(),
                "schema": schema["properties"][name],
            }
        )
    return params


def _responses(
    op: Operation, refs: dict[Any, Any], error_ref: dict[str, Any], auth: bool
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in [op.status] + ([202] if op.accepted else []):
        ok: dict[str, Any] = {"description": _OK.get(status, "OK")}
        model = op.accepted if status == 202 and isinstance(op.accepted, type) else op.response
        if model is not None:
            ok["content"] = {"application/json": {"schema": refs[(model, "validation")]}}
        elif op.media != JSON:
            ok["content"] = {op.media: {"schema": {"type": "string"}}}
        responses[str(status)] = ok
    raised: set[type[errors.DomainError]] = set(op.raises)
    if op.body or op.query or _PATH_PARAM.search(op.path):
        raised.add(errors.InvalidInput)
    if op.body:
        raised.add(errors.BodyTooLarge)
    if op.auth and auth:
        raised.add(errors.Unauthorized)
    for status in sorted({status_of(cls) for cls in raised}):
        responses[str(status)] = {
            "description": DESCRIPTIONS.get(status, "error"),
            "content": {"application/json": {"schema": error_ref}},
        }
    return responses
