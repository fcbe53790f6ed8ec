"""A small route registry: each endpoint declares its models and its errors once.

``Api.route`` registers a Flask view that checks the bearer token, parses the
JSON body (any body the parser cannot take is ``InvalidJson``, a 400, never a
500), validates it and the query string with the declared pydantic models,
calls the handler with the node and the parsed models, and renders the result
as JSON with the declared status. The same declaration feeds ``openapi``, so
the published document cannot disagree with what the code accepts and answers.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel, ValidationError

from p2p_offers.node import errors
from p2p_offers.node.metrics import outcome_of

if TYPE_CHECKING:
    from p2p_offers.node.runtime import Node

EXTENSION = "p2p_offers"  # app.extensions key of the running node
JSON = "application/json"

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
    raises: tuple[type[errors.DomainError], ...]
    auth: bool
    on_invalid: Callable[[Node], None] | None
    accepted: bool | type[BaseModel]  # may answer 202 (work still queued), in this model if one
    media: str  # the success answer's content type (the handler returns a Response if not JSON)


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
        raises: tuple[type[errors.DomainError], ...] = (),
        auth: bool = False,
        on_invalid: Callable[[Node], None] | None = None,
        accepted: bool | type[BaseModel] = False,
        media: str = JSON,
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
                raises,
                auth,
                on_invalid,
                accepted,
                media,
            )
            self.operations.append(op)
            self.blueprint.add_url_rule(path, handler.__name__, _view(op), methods=[method])
            return handler

        return register


def invalid_input(exc: ValidationError) -> errors.InvalidInput:
    """Pydantic's errors as the fields at fault (dotted path) and why."""
    problems = [
        (
            ".".join(str(p) for p in err["loc"]) or "body",
            err["msg"].removeprefix("Value error, "),
        )
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    return errors.InvalidInput.fields(problems)


def current_node() -> Node:
    node: Node = current_app.extensions[EXTENSION]
    return node


def read_json() -> Any:
    """The request body as JSON: numbers with a fraction as ``Decimal``, no NaN, bounded depth."""
    data = request.get_data(cache=True)
    try:
        return json.loads(data, parse_float=Decimal, parse_constant=_no_constant)
    except RecursionError:
        raise errors.InvalidJson(
            "the body is not JSON this node takes: it nests too deep"
        ) from None
    except ValueError as exc:  # also bad UTF-8, and integers too long to convert
        raise errors.InvalidJson(f"the body is not valid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def invoke(
    op: Operation,
    node: Node,
    path_args: dict[str, str],
    query: Callable[[], dict[str, Any]],
    body: Callable[[], Any],
    token: str | None,
    wanted: str = "bearer token",
) -> Any:
    """One operation, whichever edge asked: the token checked, the query and body validated
    with the declared models, the handler called. The REST view and the Grenache RPC
    dispatcher (``http/rpc.py``) both come through here, so they cannot disagree.

    ``query`` and ``body`` are read lazily: only the models an operation declares are read.
    """
    started, outcome = time.perf_counter(), "ok"
    try:
        return _invoke(op, node, path_args, query, body, token, wanted)
    except Exception as exc:
        outcome = "invalid_input" if isinstance(exc, ValidationError) else outcome_of(exc)
        raise
    finally:
        node.metrics.operation(op.handler.__name__, outcome, time.perf_counter() - started)


def _invoke(
    op: Operation,
    node: Node,
    path_args: dict[str, str],
    query: Callable[[], dict[str, Any]],
    body: Callable[[], Any],
    token: str | None,
    wanted: str,
) -> Any:
    if op.auth:
        check_token(node.config.api_token, token, wanted)
    kwargs: dict[str, Any] = dict(path_args)
    try:
        if op.query is not None:
            kwargs["query"] = op.query.model_validate(query())
        if op.body is not None:
            kwargs["body"] = op.body.model_validate(body())
    except (ValidationError, errors.InvalidJson):
        if op.on_invalid is not None:
            op.on_invalid(node)
        raise
    return op.handler(node, **kwargs)


def _view(op: Operation) -> Callable[..., Any]:
    def view(**path_args: str) -> Any:
        node = current_node()
        result = invoke(op, node, path_args, request.args.to_dict, read_json, _bearer())
        if isinstance(result, Response):
            return result
        return current_app.json.response(result), op.status

    return view


def _bearer() -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def check_token(token: str | None, given: str | None, wanted: str = "bearer token") -> None:
    """With an API token set, control operations need it (compared in constant time)."""
    if not token:
        return
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
        raise errors.Unauthorized(f"a valid {wanted} is required")
