"""API errors: one exception type carrying status, code and message, one JSON shape out.

Everything the API answers with on failure is ``{"error": {"code", "message",
"details"?}}``. Domain code raises ``ApiError`` with the status the spec fixes
for the situation; Flask and pydantic errors are translated here, and anything
else is a bug: it is logged with its traceback and answered with a JSON 500
(never an HTML page, never a traceback to the client).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


def bad_request(code: str, message: str, details: Any = None) -> ApiError:
    return ApiError(400, code, message, details)


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"unknown {what} {ident}")


def not_owner(offer_id: str) -> ApiError:
    return ApiError(403, "not_owner", f"offer {offer_id} belongs to another node")


def conflict(code: str, message: str, details: Any = None) -> ApiError:
    return ApiError(409, code, message, details)


def owner_unreachable(message: str) -> ApiError:
    return ApiError(502, "owner_unreachable", message)


def dht_unavailable(message: str) -> ApiError:
    return ApiError(503, "dht_unavailable", message)


def from_validation(exc: ValidationError) -> ApiError:
    """Pydantic's errors as ``details``: which field (dotted path) and why."""
    details = [
        {
            "field": ".".join(str(p) for p in err["loc"]) or "body",
            "message": err["msg"].removeprefix("Value error, "),
        }
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    fields = ", ".join(d["field"] for d in details)
    return bad_request("invalid_input", f"invalid input: {fields}", details)


def _respond(error: ApiError) -> tuple[Response, int]:
    return jsonify(error.body()), error.status


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return _respond(exc)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> tuple[Response, int]:
        return _respond(from_validation(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        codes = {
            400: "invalid_json",
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
        }
        code = codes.get(status, exc.name.lower().replace(" ", "_"))
        return _respond(ApiError(status, code, exc.description or exc.name))

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return _respond(ApiError(500, "internal", "internal error; see the node's log"))
