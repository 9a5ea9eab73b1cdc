"""The SimPy fleet model: vehicles drive, charge at shared chargers, fail, and queue for a workshop.

Scenario: a fleet operator's depot for ``horizon_days``. Every vehicle is a process that drives its
daily trips, parks, and charges (overnight on AC, or at the depot's shared DC fast chargers, a
resource with a queue). Each latent failure (from the generator, see ``plans``) degrades the vehicle
from its onset until its failure time. A maintenance policy sends vehicles to the workshop (bays and
technicians are resources); an inspection there finds any degradation that has progressed far
enough, which is then *caught early*: parts are ordered and the repair is a planned visit. A failure
that no technician has caught by its failure time strands the vehicle (*roadside*): it is towed in
and repaired with a longer repair. Every process is a generator taking ``env``; time is in hours
since the start; nothing reads the wall clock, and all randomness comes from the seed.

>>> import simpy
>>> from configs.settings import WhatIfConfig
>>> from simulation.whatif.plans import FailureSpec, VehiclePlan
>>> plan = VehiclePlan("v0", "commuter", 40.0, 2, 60.0, 0.0,
...                    (FailureSpec(0, "brake_wear", 0, 30 * 3_600_000, 1),))
>>> model = FleetModel(simpy.Environment(), [plan], WhatIfConfig(), horizon_days=3, start_ms=0, seed=1)
>>> model.run().events[0].outcome
'roadside'
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import simpy

from configs.settings import WhatIfConfig
from simulation.whatif.plans import MS_PER_HOUR, FailureSpec, VehiclePlan

AVERAGE_TRIP_SPEED_KMH = 32.0
DAY_START_HOUR = 7.0  # first trip of the day leaves between 07:00 and 09:00
ACTIVE_HOURS_PER_DAY = 13.0  # trips and the parking between them fit in this span
DC_TRIGGER_SOC = 0.25  # below this a vehicle may stop at a DC charger between trips
DC_TARGET_SOC = 0.8
OVERNIGHT_TARGET_SOC = 0.9
MIN_SOC = 0.05

ROADSIDE = "roadside"
CAUGHT_EARLY = "caught_early"
PENDING = "pending"  # neither caught nor failed before the horizon (censored)

T = TypeVar("T")


class MaintenancePolicy(Protocol):
    """Decides when vehicles go to the workshop; see ``simulation.whatif.policies``."""

    name: str

    def start(self, model: FleetModel) -> None: ...

    def on_repair(self, model: FleetModel, vehicle: VehicleState, events: Sequence[FailureSpec]) -> None: ...


class _NoPolicy:
    """Reactive maintenance: nothing is done until something fails."""

    name = "reactive"

    def start(self, model: FleetModel) -> None:
        return None

    def on_repair(self, model: FleetModel, vehicle: VehicleState, events: Sequence[FailureSpec]) -> None:
        return None


@dataclass
class VehicleState:
    """Mutable state of one simulated vehicle."""

    plan: VehiclePlan
    index: int
    rng: random.Random
    soc: float = OVERNIGHT_TARGET_SOC
    odometer_km: float = 0.0
    km_since_service: float = 0.0
    last_service_h: float = 0.0
    out_of_service: simpy.Event | None = None  # set while off the road; succeeds when released
    out_since_h: float = 0.0
    downtime_h: float = 0.0
    process: simpy.Process | None = None
    outcome: dict[int, str] = field(default_factory=dict)  # event_id -> caught_early | roadside
    resolved_h: dict[int, float] = field(default_factory=dict)  # caught or failed at
    towed: dict[int, bool] = field(default_factory=dict)
    failed_waiting: list[FailureSpec] = field(default_factory=list)  # failed, repair not yet started
    booked: dict[int, FailureSpec] = field(default_factory=dict)  # diagnosed, back on the road until parts arrive
    parts_arrived: list[FailureSpec] = field(default_factory=list)  # booked repairs ready for the current visit

    @property
    def vehicle_id(self) -> str:
        return self.plan.vehicle_id

    @property
    def in_service(self) -> bool:
        return self.out_of_service is None


@dataclass(frozen=True)
class EventOutcome:
    vehicle_id: str
    event_id: int
    mode: str
    severity: int
    onset_h: float
    failure_h: float
    outcome: str  # caught_early | roadside | pending
    resolved_h: float  # when caught or when failed; NaN when pending
    towed: bool


@dataclass
class VisitRecord:
    vehicle_id: str
    reason: str  # roadside | scheduled | predictive | repair (a booked repair once parts arrived)
    arrive_h: float  # taken off the road
    queued_h: float = math.nan  # reached the workshop (after any tow) and joined the queue
    first_bay_h: float = math.nan
    released_h: float = math.nan
    caught_early: int = 0  # degradations found at this visit's inspection
    booked_repairs: int = 0  # repairs of degradations found earlier (parts arrived)
    repaired_failures: int = 0
    technician_hours: float = 0.0
    towed: bool = False

    @property
    def false_alarm(self) -> bool:
        return self.reason in ("scheduled", "predictive") and self.caught_early == 0 and self.repaired_failures == 0


@dataclass(frozen=True)
class AlertRecord:
    vehicle_id: str
    t_h: float
    risk: float
    source: str


@dataclass
class ModelRecords:
    """Everything a run leaves behind; ``kpis.compute_kpis`` reads it."""

    horizon_h: float
    num_vehicles: int
    workshop_bays: int
    technicians: int
    events: list[EventOutcome]
    visits: list[VisitRecord]
    alerts: list[AlertRecord]
    queue: list[tuple[float, int, int]]  # (t_h, vehicles waiting for a bay or technician, bays busy)
    downtime_h: dict[str, float]
    bay_busy_h: float
    technician_busy_h: float
    charger_waits_h: list[float]
    km_driven: float


class BusyMeter:
    """Integral over time of how many units of a resource are held (exact utilisation)."""

    def __init__(self, env: simpy.Environment) -> None:
        self._env = env
        self._level = 0
        self._since = 0.0
        self.total = 0.0

    def change(self, delta: int) -> None:
        now = self._env.now
        self.total += self._level * (now - self._since)
        self._level += delta
        self._since = now

    def total_until(self, t: float) -> float:
        return self.total + self._level * (t - self._since)


class FleetModel:
    """A fleet, its chargers and its workshop in one SimPy environment; ``run()`` returns the records."""

    def __init__(self, env: simpy.Environment, plans: Sequence[VehiclePlan], cfg: WhatIfConfig, *,
                 horizon_days: float, start_ms: int, seed: int, policy: MaintenancePolicy | None = None) -> None:
        self.env = env
        self.cfg = cfg
        self.horizon_h = float(horizon_days) * 24.0
        self.start_ms = int(start_ms)
        self.seed = int(seed)
        self.policy: MaintenancePolicy = policy if policy is not None else _NoPolicy()
        self.rng = random.Random(f"whatif-model:{seed}")
        self.vehicles = [VehicleState(plan=p, index=i, rng=random.Random(f"whatif-vehicle:{seed}:{i}"))
                         for i, p in enumerate(plans)]
        self.by_id = {v.vehicle_id: v for v in self.vehicles}
        self.bays = simpy.PriorityResource(env, capacity=cfg.workshop_bays)
        self.technicians = simpy.PriorityResource(env, capacity=cfg.technicians)
        num_chargers = max(1, math.ceil(cfg.dc_chargers_per_100_vehicles * len(plans) / 100.0))
        self.dc_chargers = simpy.Resource(env, capacity=num_chargers)
        self.bay_meter = BusyMeter(env)
        self.technician_meter = BusyMeter(env)
        self.visits: list[VisitRecord] = []
        self.alerts: list[AlertRecord] = []
        self.queue: list[tuple[float, int, int]] = []
        self.charger_waits_h: list[float] = []
        self._started = False

    # ----------------------------------------------------------------- time
    def hours_at(self, t_ms: int) -> float:
        return (t_ms - self.start_ms) / MS_PER_HOUR

    def ms_at(self, t_h: float) -> int:
        return self.start_ms + int(round(t_h * MS_PER_HOUR))

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for v in self.vehicles:
            v.process = self.env.process(self._drive(v))
            for event in v.plan.events:
                if self.hours_at(event.onset_ms) < self.horizon_h:
                    self.env.process(self._failure_clock(v, event))
        self.env.process(self._monitor_queue())
        self.policy.start(self)

    def run(self) -> ModelRecords:
        self.start()
        self.env.run(until=self.horizon_h)
        return self.records()

    def records(self) -> ModelRecords:
        now = self.env.now
        downtime = {}
        for v in self.vehicles:
            open_h = (now - v.out_since_h) if not v.in_service else 0.0
            downtime[v.vehicle_id] = v.downtime_h + open_h
        return ModelRecords(
            horizon_h=self.horizon_h, num_vehicles=len(self.vehicles), workshop_bays=self.cfg.workshop_bays,
            technicians=self.cfg.technicians, events=self._event_outcomes(), visits=list(self.visits),
            alerts=list(self.alerts), queue=list(self.queue), downtime_h=downtime,
            bay_busy_h=self.bay_meter.total_until(now), technician_busy_h=self.technician_meter.total_until(now),
            charger_waits_h=list(self.charger_waits_h), km_driven=sum(v.odometer_km for v in self.vehicles),
        )

    def _event_outcomes(self) -> list[EventOutcome]:
        rows = []
        for v in self.vehicles:
            for e in v.plan.events:
                onset_h, failure_h = self.hours_at(e.onset_ms), self.hours_at(e.failure_ms)
                if onset_h >= self.horizon_h:
                    continue  # degradation not even started: outside this run
                outcome = v.outcome.get(e.event_id, PENDING)
                rows.append(EventOutcome(
                    vehicle_id=v.vehicle_id, event_id=e.event_id, mode=e.mode, severity=e.severity,
                    onset_h=onset_h, failure_h=failure_h, outcome=outcome,
                    resolved_h=v.resolved_h.get(e.event_id, math.nan), towed=v.towed.get(e.event_id, False),
                ))
        return rows

    # ------------------------------------------------------- policy surface
    def record_alert(self, vehicle: VehicleState, risk: float, source: str) -> None:
        self.alerts.append(AlertRecord(vehicle.vehicle_id, self.env.now, float(risk), source))

    def send_to_workshop(self, vehicle: VehicleState, reason: str) -> bool:
        """Take an in-service vehicle off the road for a planned visit; False if it is already off."""
        if not vehicle.in_service:
            return False
        self._take_out(vehicle)
        self.env.process(self._visit(vehicle, reason, towed=False))
        return True

    def active_degradations(self, vehicle: VehicleState, t_h: float) -> list[FailureSpec]:
        """Latent failures of ``vehicle`` that have started and are neither caught nor failed at ``t_h``."""
        t_ms = self.ms_at(t_h)
        return [e for e in vehicle.plan.events
                if e.event_id not in vehicle.outcome and e.onset_ms <= t_ms < e.failure_ms]

    # ------------------------------------------------------------- processes
    def _drive(self, v: VehicleState) -> Generator[simpy.Event, object, None]:
        while True:
            if v.out_of_service is not None:
                yield v.out_of_service
                continue
            try:
                yield from self._one_day(v)
            except simpy.Interrupt:
                continue  # taken off the road; wait for release at the top of the loop

    def _one_day(self, v: VehicleState) -> Generator[simpy.Event, object, None]:
        now = self.env.now
        leave = math.floor(now / 24.0) * 24.0 + DAY_START_HOUR + 2.0 * v.rng.random()
        if leave < now:
            leave += 24.0
        yield self.env.timeout(leave - now)
        plan = v.plan
        trips = max(plan.trips_per_day, 1)
        km_per_trip = plan.daily_km / trips
        for _ in range(trips):
            km = km_per_trip * (0.6 + 0.8 * v.rng.random())
            yield self.env.timeout(km / AVERAGE_TRIP_SPEED_KMH)
            v.odometer_km += km
            v.km_since_service += km
            v.soc = max(v.soc - km * self.cfg.consumption_kwh_per_km / plan.battery_kwh, MIN_SOC)
            if v.soc < DC_TRIGGER_SOC and v.rng.random() < plan.dc_share:
                yield from self._dc_charge(v, DC_TARGET_SOC)
            gap = max(ACTIVE_HOURS_PER_DAY - plan.daily_km / AVERAGE_TRIP_SPEED_KMH, 1.0) / trips
            yield self.env.timeout(gap)
        if v.rng.random() < plan.dc_share:
            yield from self._dc_charge(v, OVERNIGHT_TARGET_SOC)
        else:
            v.soc = max(v.soc, OVERNIGHT_TARGET_SOC)  # AC overnight: no shared resource, always enough time

    def _dc_charge(self, v: VehicleState, target_soc: float) -> Generator[simpy.Event, object, None]:
        if v.soc >= target_soc:
            return
        arrived = self.env.now
        with self.dc_chargers.request() as slot:
            yield slot
            self.charger_waits_h.append(self.env.now - arrived)
            hours = (target_soc - v.soc) * v.plan.battery_kwh / self.cfg.dc_charge_power_kw
            yield self.env.timeout(hours)
            v.soc = target_soc

    def _failure_clock(self, v: VehicleState, event: FailureSpec) -> Generator[simpy.Event, object, None]:
        yield self.env.timeout(max(self.hours_at(event.failure_ms) - self.env.now, 0.0))
        if event.event_id in v.outcome:
            return  # caught early: the part was replaced before it could fail
        v.outcome[event.event_id] = ROADSIDE
        v.resolved_h[event.event_id] = self.env.now
        v.failed_waiting.append(event)
        if v.in_service:
            v.towed[event.event_id] = True
            self._take_out(v)
            self.env.process(self._visit(v, ROADSIDE, towed=True))
        # else: the vehicle is already at (or on its way to) the workshop; that visit repairs it

    def _monitor_queue(self) -> Generator[simpy.Event, object, None]:
        while True:
            waiting = len(self.bays.queue) + len(self.technicians.queue)
            self.queue.append((self.env.now, waiting, self.bays.count))
            yield self.env.timeout(self.cfg.queue_sample_hours)

    # -------------------------------------------------------------- workshop
    def _take_out(self, v: VehicleState) -> None:
        v.out_of_service = self.env.event()
        v.out_since_h = self.env.now
        process = v.process
        if process is not None and process.is_alive and self.env.active_process is not process:
            process.interrupt("workshop")

    def _release(self, v: VehicleState) -> None:
        v.downtime_h += self.env.now - v.out_since_h
        v.last_service_h = self.env.now
        v.km_since_service = 0.0
        event, v.out_of_service = v.out_of_service, None
        if event is not None:
            event.succeed()

    def _holding_bay_and_technician(self, priority: int, work: Callable[[], Generator[simpy.Event, object, T]]
                                    ) -> Generator[simpy.Event, object, T]:
        """Queue for a bay, then a technician (both at ``priority``), run ``work()`` while holding both and
        return what it returns; the busy meters count exactly the time each is held."""
        with self.bays.request(priority=priority) as bay:
            yield bay
            self.bay_meter.change(+1)
            try:
                with self.technicians.request(priority=priority) as tech:
                    yield tech
                    self.technician_meter.change(+1)
                    try:
                        return (yield from work())
                    finally:
                        self.technician_meter.change(-1)
            finally:
                self.bay_meter.change(-1)

    def _work(self, hours: float, priority: int) -> Generator[simpy.Event, object, None]:
        """Hold a bay and a technician for ``hours`` (a repair after the parts arrived)."""
        def repair() -> Generator[simpy.Event, object, None]:
            yield self.env.timeout(hours)

        yield from self._holding_bay_and_technician(priority, repair)

    def _inspect(self, v: VehicleState) -> list[FailureSpec]:
        """Degradations a technician finds now: started, not yet failed, and far enough along."""
        now_ms = self.ms_at(self.env.now)
        return [e for e in self.active_degradations(v, self.env.now)
                if e.event_id not in v.booked and e.progress_at(now_ms) >= self.cfg.detectable_progress]

    def _mark_caught(self, v: VehicleState, events: Sequence[FailureSpec]) -> None:
        """The vehicle is off the road for these repairs before they fail: caught early."""
        for e in events:
            if e.event_id not in v.outcome:
                v.outcome[e.event_id] = CAUGHT_EARLY
                v.resolved_h[e.event_id] = self.env.now

    def repair_hours(self, event: FailureSpec, roadside: bool) -> float:
        """Technician hours to repair one failure mode at its severity; a breakdown takes longer."""
        cfg = self.cfg
        base = cfg.repair_hours_by_mode.get(event.mode, cfg.repair_hours_default)
        hours = base * cfg.severity_repair_multiplier[_severity_index(event.severity)]
        return hours * (cfg.roadside_repair_multiplier if roadside else 1.0)

    def _jobs_hours(self, jobs: Sequence[tuple[FailureSpec, bool]]) -> float:
        return sum(self.repair_hours(e, roadside) for e, roadside in jobs)

    def _parts_lead_hours(self, events: Sequence[FailureSpec]) -> float:
        """Wait for the parts of these repairs (the longest; parts of booked repairs are already in)."""
        return max((self.cfg.parts_lead_time_hours[_severity_index(e.severity)] for e in events), default=0.0)

    def _diagnose_and_repair(self, v: VehicleState, record: VisitRecord, ready: list[tuple[FailureSpec, bool]],
                             priority: int, inspect: bool) -> Generator[simpy.Event, object, tuple[list, list, bool]]:
        """One bay session: inspect; when no parts are awaited, repair in the same session.

        ``ready`` are jobs known on arrival (``(event, failed_on_the_road)``). Returns the jobs now known,
        the newly found degradations, and whether the jobs are already repaired.
        """
        def session() -> Generator[simpy.Event, object, tuple[list, list, bool]]:
            if math.isnan(record.first_bay_h):
                record.first_bay_h = self.env.now
            found = []
            if inspect:
                if self.cfg.inspection_hours > 0:
                    yield self.env.timeout(self.cfg.inspection_hours)
                record.technician_hours += self.cfg.inspection_hours
                found = self._inspect(v)
            jobs = [(e, False) for e in found] + ready
            lead = self._parts_lead_hours(found + [e for e, failed in ready if failed])
            if jobs and lead <= 0:
                self._mark_caught(v, found)
                hours = self._jobs_hours(jobs)
                yield self.env.timeout(hours)
                record.technician_hours += hours
                return jobs, found, True
            return jobs, found, False

        return (yield from self._holding_bay_and_technician(priority, session))

    def _visit(self, v: VehicleState, reason: str, towed: bool) -> Generator[simpy.Event, object, None]:
        record = VisitRecord(v.vehicle_id, reason, arrive_h=self.env.now, towed=towed)
        self.visits.append(record)
        if towed and self.cfg.tow_hours > 0:
            yield self.env.timeout(self.cfg.tow_hours)
        record.queued_h = self.env.now
        priority = 0 if reason == ROADSIDE else 1  # a stranded vehicle goes before planned work
        first_session = True
        while True:
            failed, v.failed_waiting = v.failed_waiting, []
            arrived, v.parts_arrived = v.parts_arrived, []
            arrived = [e for e in arrived if v.outcome.get(e.event_id) == CAUGHT_EARLY]
            ready = [(e, False) for e in arrived] + [(e, True) for e in failed]
            # Inspect on arrival (a booked repair was diagnosed at an earlier visit) and after any breakdown.
            inspect = bool(failed) or (first_session and reason != "repair")
            first_session = False
            jobs, found, repaired = yield from self._diagnose_and_repair(v, record, ready, priority, inspect)
            record.caught_early += len(found)
            record.booked_repairs += len(arrived)
            record.repaired_failures += len(failed)
            if jobs and not repaired:
                if not failed and not arrived and all(e.severity < 3 for e in found):
                    # Safe to drive: back on the road now, the repair is booked for when the parts arrive.
                    lead = self._parts_lead_hours(found)
                    for e in found:
                        v.booked[e.event_id] = e
                    self.env.process(self._booked_repair(v, found, lead))
                    jobs = []
                else:
                    self._mark_caught(v, found)  # kept off the road: it cannot fail in service any more
                    yield self.env.timeout(self._parts_lead_hours(found + failed))  # waits in the yard, bay free
                    hours = self._jobs_hours(jobs)
                    yield from self._work(hours, priority)
                    record.technician_hours += hours
            if jobs:
                self.policy.on_repair(self, v, [e for e, _ in jobs])
            if not v.failed_waiting and not v.parts_arrived:
                break
            priority = 0 if v.failed_waiting else priority  # a failure while here is now a breakdown repair
        record.released_h = self.env.now
        self._release(v)

    def _booked_repair(self, v: VehicleState, found: Sequence[FailureSpec],
                       lead_h: float) -> Generator[simpy.Event, object, None]:
        """Parts ordered at a planned visit arrive; the vehicle comes in for the repair."""
        yield self.env.timeout(lead_h)
        for e in found:
            v.booked.pop(e.event_id, None)
        due = [e for e in found if e.event_id not in v.outcome]  # the rest failed on the road meanwhile
        if not due:
            return
        self._mark_caught(v, due)  # from now the vehicle is off the road for this repair
        v.parts_arrived.extend(due)
        if v.in_service:
            self._take_out(v)
            self.env.process(self._visit(v, "repair", towed=False))
        # else: the vehicle is already in the workshop; that visit picks the repair up


def _severity_index(severity: int) -> int:
    return min(max(int(severity), 1), 3) - 1


def simulate(plans: Iterable[VehiclePlan], cfg: WhatIfConfig, *, horizon_days: float, start_ms: int, seed: int,
             policy: MaintenancePolicy | None = None) -> ModelRecords:
    """Run one replication of the model to the horizon and return its records."""
    model = FleetModel(simpy.Environment(), list(plans), cfg, horizon_days=horizon_days, start_ms=start_ms,
                       seed=seed, policy=policy)
    return model.run()
