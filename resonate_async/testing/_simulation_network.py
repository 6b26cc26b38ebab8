"""The simulated network between workers and the engine: every request and message crosses
the simulator's faults."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from resonate_async._client import Resonate
from resonate_async._errors import RequestTooLargeError, TransportError
from resonate_async.engine import Engine
from resonate_async.protocol import (
    Message,
    Request,
    Response,
    TaskFence,
    TaskFulfill,
    TaskHeartbeat,
    TaskSuspend,
    encode_request,
)
from resonate_async.testing._clock import VirtualClock
from resonate_async.transport import EmbeddedTransport

if TYPE_CHECKING:
    from resonate_async.testing._simulation import _Simulator


class Network(EmbeddedTransport):
    """The embedded engine, whose push messages go to the simulator instead of subscribers,
    and whose timers the simulator fires."""

    def __init__(self, engine: Engine, clock: VirtualClock, sim: _Simulator) -> None:
        super().__init__(engine, clock=clock, close_engine=False, recover=False)
        self.sim = sim

    def _deliver(self, messages: list[tuple[str, Message]]) -> None:
        for address, message in messages:
            self.sim.inflight.append(InFlight(address, message, 0))

    async def background(self) -> None:
        await anyio.sleep_forever()

    def tick(self) -> None:
        now = self.clock.now_ms()
        due = self.engine.next_due()
        while due is not None and due <= now:
            self.engine.tick(now)
            self._deliver(self.engine.drain_messages())
            nxt = self.engine.next_due()
            if nxt == due:
                break
            due = nxt


@dataclass
class InFlight:
    address: str
    message: Message
    not_before: int
    copy: bool = False  # a burst's copy: never burst again (storms do not compound)


class Process:
    """One simulated worker process: an incarnation of worker slot ``slot``."""

    def __init__(self, slot: int, incarnation: int) -> None:
        self.slot = slot
        self.pid = f"w{slot}-{incarnation}"
        self.alive = False
        self.scope: anyio.CancelScope | None = None
        self.app: Resonate | None = None
        self.port: Port | None = None
        self.stream: MemoryObjectSendStream[Message] | None = None
        self.miskeyed = False  # runs with the wrong Encryptor: must never write a settlement
        self.waiting: Counter[str] = Counter()  # execute messages in hand, task not acquired


class Port:
    """What one worker process sees as its transport: every request crosses the faults, and
    the run's request size limit (refused like an HTTP 413, before the engine sees it)."""

    delivers_all = False  # the simulator drops messages

    def __init__(self, sim: _Simulator, proc: Process) -> None:
        self.sim = sim
        self.proc = proc
        self.dead = False
        self.killed = anyio.Event()
        self.stalled_until = 0
        # what the driver may check before sending; the limit holds whether declared or not
        self.max_request_bytes = sim.max_request_bytes if sim.declare_limit else None

    def kill(self) -> None:
        self.dead = True
        self.killed.set()

    async def send(self, request: Request) -> Response:
        sim, proc = self.sim, self.proc
        clock = sim.clock
        while not self.dead and self.stalled_until > clock.now_ms():
            await clock.wait(self.killed, (self.stalled_until - clock.now_ms()) / 1000)
        if self.dead:
            raise TransportError(f"simulated crash: process {proc.pid} is gone")
        faulty = sim.faulty()
        if faulty:
            if isinstance(request, TaskHeartbeat) and sim.roll("heartbeat_lost"):
                raise TransportError("simulated: heartbeat lost")
            if sim.roll("crash_on_send", "crash_before_send"):
                sim.crash(proc)
                raise TransportError(f"simulated crash of {proc.pid} before {request.KIND}")
            if sim.roll("fail_before"):
                raise TransportError(f"simulated: {request.KIND} never reached the engine")
        if sim.engine_down:
            raise TransportError("simulated: the engine is restarting")
        if (isinstance(request, TaskFence | TaskFulfill | TaskSuspend)
                and sim.outage_until.get(request.id, 0) > clock.now_ms()):
            sim.events["task_outage_failed_write"] += 1
            raise TransportError(f"simulated: the engine cannot write task {request.id} "
                                 f"({request.KIND} failed)")
        limit = sim.max_request_bytes
        if limit is not None:
            size = len(encode_request(request, corr_id="0"))
            if size > limit:
                sim.events["refused_too_large"] += 1
                # the size stays out of the text: it varies with the task's version, and
                # the SDK quotes this text in the rejection it stores
                raise RequestTooLargeError(
                    f"the simulated server refused a request body over its limit of {limit} "
                    "bytes as too large (HTTP 413)", kind=request.KIND)
        response = await sim.network.send(request)
        sim.checks.observe(proc, request, response)
        if faulty:
            if sim.roll("fail_after"):
                raise TransportError(f"simulated: the answer to {request.KIND} was lost")
            if sim.roll("crash_on_send", "crash_after_send"):
                sim.crash(proc)
                raise TransportError(f"simulated crash of {proc.pid} after {request.KIND}")
        return response

    def subscribe(self, group: str, pid: str, *, accepts_work: bool = True,
                  on_connect: Callable[[], None] | None = None,
                  ) -> MemoryObjectReceiveStream[Message]:
        send, receive = anyio.create_memory_object_stream[Message](math.inf)
        self.proc.stream = send
        return receive

    async def wait_subscribed(self, group: str, pid: str) -> None:
        await anyio.lowlevel.checkpoint()

    def unsubscribe(self, group: str, pid: str) -> None:
        stream, self.proc.stream = self.proc.stream, None
        if stream is not None:
            stream.close()

    async def background(self) -> None:
        await anyio.sleep_forever()

    async def __aenter__(self) -> Port:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        return None
