"""``GET /inference/queue``: depth of the shared admission queues (slots and waiters)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from inference_service.services.queue import RedisAdmissionQueue
from inference_service.services.queue_models import QueueSnapshot, QueueUnavailable
from switchboard_common import problem_responses
from switchboard_common.identity import Principal, require_scopes

router = APIRouter(prefix="/inference", tags=["inference"])


async def get_admission_queue(request: Request) -> RedisAdmissionQueue:
    """The Redis queue the lifespan put on ``app.state.admission`` (503 if there is none)."""
    gate = getattr(request.app.state, "admission", None)
    if not isinstance(gate, RedisAdmissionQueue):
        raise QueueUnavailable("The Redis admission queue is not configured on this replica.")
    return gate


AdmissionQueueDep = Annotated[RedisAdmissionQueue, Depends(get_admission_queue)]


@router.get(
    "/queue",
    response_model=QueueSnapshot,
    summary="Slots in use and requests waiting per priority, per backend and model",
    responses=problem_responses(401, 403, 503),
)
async def queue_snapshot(
    _principal: Annotated[Principal, require_scopes("inference")],
    queue: AdmissionQueueDep,
) -> QueueSnapshot:
    return await queue.snapshot()
