"""Legacy generic endpoints (``/``, ``/info``, ``/configuration``) and the schedules, which
this orchestrator does not offer (501 in the legacy error shape)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, MediaType, get, post

from api.errors import ApiError
from api.legacy.security import DEPENDENCIES, Legacy, PathId, authenticated
from api.legacy.shapes import JSON_MEDIA_TYPE, READ_ERRORS

SCHEDULES_UNSUPPORTED = ("Data-movement schedules are not supported by this orchestrator; "
                         "create deployments directly")


class GenericController(Controller):
    path = ""
    tags = ["generic"]
    dependencies = DEPENDENCIES

    @get(["/"], operation_id="root", media_type=MediaType.TEXT, sync_to_thread=False)
    def root(self, legacy: Legacy) -> str:
        """The service name, as plain text (anonymous)."""
        return legacy.settings.display_name

    @get(["/info"], operation_id="info", media_type=JSON_MEDIA_TYPE, sync_to_thread=False)
    def info(self, legacy: Legacy) -> dict[str, Any]:
        """Build information, a JSON object (anonymous; orchent's URL probe)."""
        return legacy.settings.info

    @get(["/configuration"], operation_id="configuration",
         responses=READ_ERRORS, media_type=JSON_MEDIA_TYPE,
         guards=[authenticated], security=[{"bearer": []}], sync_to_thread=False)
    def configuration(self, legacy: Legacy) -> dict[str, str]:
        """Service URLs the orchestrator uses, a flat object of strings."""
        return legacy.settings.configuration


class SchedulesController(Controller):
    path = "/schedules"
    tags = ["schedules"]
    guards = [authenticated]
    security = [{"bearer": []}]

    @get(["/"], operation_id="listSchedules", sync_to_thread=False)
    def list_schedules(self) -> None:
        """Not supported: 501."""
        raise ApiError(501, SCHEDULES_UNSUPPORTED)

    @post(["/"], operation_id="createSchedule", opt={"mutation": True}, sync_to_thread=False)
    def create_schedule(self) -> None:
        """Not supported: 501."""
        raise ApiError(501, SCHEDULES_UNSUPPORTED)

    @get(["/{schedule_id:str}"], operation_id="getSchedule", sync_to_thread=False)
    def get_schedule(self, schedule_id: PathId) -> None:
        """Not supported: 501."""
        raise ApiError(501, SCHEDULES_UNSUPPORTED)

    @get(["/{schedule_id:str}/events"], operation_id="getScheduleEvents", sync_to_thread=False)
    def get_schedule_events(self, schedule_id: PathId) -> None:
        """Not supported: 501."""
        raise ApiError(501, SCHEDULES_UNSUPPORTED)

    @get(["/{schedule_id:str}/template"], operation_id="getScheduleTemplate",
         sync_to_thread=False)
    def get_schedule_template(self, schedule_id: PathId) -> None:
        """Not supported: 501."""
        raise ApiError(501, SCHEDULES_UNSUPPORTED)
