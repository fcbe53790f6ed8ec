"""A small route registry: each endpoint declares its models once, for Flask and for OpenAPI.

``Api.route`` registers a Flask view that checks the bearer token, validates
the query string and the JSON body with the declared pydantic models, calls
the handler with the node and the parsed models, and renders the result as
JSON with the declared status. The same declaration feeds ``openapi()``, so
the published document cannot disagree with what the code accepts.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from p2p_offers.node import errors

EXTENSION = "p2p_offers"  # app.extensions key of the running node

Handler = Callable[..., Any]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    handler: Handler
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    errors: tuple[int, ...]
    auth: bool
    on_invalid: Callable[[Any], None] | None


class Api:
    def __init__(self, name: str) -> None:
        self.blueprint = Blueprint(name, __name__)
        self.operations: list[Operation] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        errors: tuple[int, ...] = (),
        auth: bool = False,
        on_invalid: Callable[[Any], None] | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            op = Operation(
                method,
                path,
                summary,
                handler,
                body,
                query,
                response,
                status,
                errors,
                auth,
                on_invalid,
            )
            self.operations.append(op)
            self.blueprint.add_url_rule(path, f"{handler.__name__}", _view(op), methods=[method])
            return handler

        return register


def current_node() -> Any:
    return current_app.extensions[EXTENSION]


def _view(op: Operation) -> Callable[..., Any]:
    def view(**path_args: str) -> Any:
        node = current_node()
        if op.auth:
            _check_token(node.config.api_token)
        kwargs: dict[str, Any] = dict(path_args)
        try:
            if op.query is not None:
                kwargs["query"] = op.query.model_validate(request.args.to_dict())
            if op.body is not None:
                kwargs["body"] = op.body.model_validate(request.get_json(force=True, silent=False))
        except ValidationError:
            if op.on_invalid is not None:
                op.on_invalid(node)
            raise
        result = op.handler(node, **kwargs)
        if isinstance(result, Response):
            return result
        return current_app.json.response(result), op.status

    return view


def _check_token(token: str | None) -> None:
    if not token:
        return
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
        raise errors.ApiError(401, "unauthorized", "a valid bearer token is required")


# -- OpenAPI -------------------------------------------------------------------------------

_PATH_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")
_STATUS_TEXT = {
    400: "invalid input",
    401: "missing or wrong bearer token",
    403: "not the owner",
    404: "unknown",
    409: "conflict",
    413: "body too large",
    502: "owner unreachable",
    503: "DHT unavailable",
}


def openapi(apis: list[Api], title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every registered operation, schemas from the models."""
    from p2p_offers.node.models import ErrorOut

    ops = [op for api in apis for op in api.operations]
    models = {m for op in ops for m in (op.body, op.query, op.response) if m} | {ErrorOut}
    refs, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        path = _PATH_PARAM.sub(r"{\1}", op.path)
        operation: dict[str, Any] = {"summary": op.summary, "operationId": op.handler.__name__}
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAM.findall(op.path)
        ]
        if op.query is not None:
            for attr, field in op.query.model_fields.items():
                name = field.alias or attr  # a query key that is a keyword (from) has an alias
                params.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": field.is_required(),
                        "schema": op.query.model_json_schema()["properties"][name],
                    }
                )
        if params:
            operation["parameters"] = params
        if op.body is not None:
            schema = refs[(op.body, "validation")]
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            }
        responses: dict[str, Any] = {}
        ok: dict[str, Any] = {"description": "OK" if op.status == 200 else "Created"}
        if op.response is not None:
            schema = refs[(op.response, "validation")]
            ok["content"] = {"application/json": {"schema": schema}}
        responses[str(op.status)] = ok
        error_ref = refs[(ErrorOut, "validation")]
        statuses = set(op.errors) | ({400} if op.body or op.query else set())
        statuses |= {401} if op.auth else set()
        for status in sorted(statuses):
            responses[str(status)] = {
                "description": _STATUS_TEXT.get(status, "error"),
                "content": {"application/json": {"schema": error_ref}},
            }
        operation["responses"] = responses
        if op.auth:
            operation["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
