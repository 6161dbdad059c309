"""JSON or CSV answers for the admin read endpoints (``?format=csv`` or ``Accept: text/csv``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from litestar import Request, Response

from api.errors import JSON_MEDIA_TYPE, ApiError

CSV_MEDIA_TYPE = "text/csv;charset=UTF-8"


def wants_csv(request: Request[Any, Any, Any], format_: str | None) -> bool:
    if format_ is not None:
        if format_ not in ("json", "csv"):
            raise ApiError(400, f"Value {format_} for param format is not one of json, csv")
        return format_ == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] = ()) -> str:
    names = list(columns)
    for row in rows:
        for key in row:
            if key not in names:
                names.append(key)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_cell(row.get(name)) for name in names])
    return out.getvalue()


def table_response(request: Request[Any, Any, Any], format_: str | None, body: Any,
                   rows: Sequence[dict[str, Any]], *, filename: str,
                   columns: Sequence[str] = ()) -> Response[Any]:
    if wants_csv(request, format_):
        return Response(csv_text(rows, columns), media_type=CSV_MEDIA_TYPE, headers={
            "Content-Disposition": f'attachment; filename="{filename}.csv"'})
    return Response(body, media_type=JSON_MEDIA_TYPE)
