from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignalShare(_message.Message):
    __slots__ = ("name", "share")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    name: str
    share: float
    def __init__(self, name: _Optional[str] = ..., share: _Optional[float] = ...) -> None: ...

class HorizonRisk(_message.Message):
    __slots__ = ("horizon_days", "probability")
    HORIZON_DAYS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    horizon_days: int
    probability: float
    def __init__(self, horizon_days: _Optional[int] = ..., probability: _Optional[float] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("alert_id", "vehicle_id", "rule", "ts_ms", "seq", "score", "signals", "message", "mode", "severity", "risk", "lifecycle")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    VEHICLE_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    LIFECYCLE_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    vehicle_id: str
    rule: str
    ts_ms: int
    seq: int
    score: float
    signals: _containers.RepeatedCompositeFieldContainer[SignalShare]
    message: str
    mode: str
    severity: int
    risk: _containers.RepeatedCompositeFieldContainer[HorizonRisk]
    lifecycle: AlertLifecycle
    def __init__(self, alert_id: _Optional[str] = ..., vehicle_id: _Optional[str] = ..., rule: _Optional[str] = ..., ts_ms: _Optional[int] = ..., seq: _Optional[int] = ..., score: _Optional[float] = ..., signals: _Optional[_Iterable[_Union[SignalShare, _Mapping]]] = ..., message: _Optional[str] = ..., mode: _Optional[str] = ..., severity: _Optional[int] = ..., risk: _Optional[_Iterable[_Union[HorizonRisk, _Mapping]]] = ..., lifecycle: _Optional[_Union[AlertLifecycle, _Mapping]] = ...) -> None: ...

class AlertLifecycle(_message.Message):
    __slots__ = ("state", "assignee", "outcome", "mode", "note", "updated_ms", "updated_by")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ASSIGNEE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    state: str
    assignee: str
    outcome: str
    mode: str
    note: str
    updated_ms: int
    updated_by: str
    def __init__(self, state: _Optional[str] = ..., assignee: _Optional[str] = ..., outcome: _Optional[str] = ..., mode: _Optional[str] = ..., note: _Optional[str] = ..., updated_ms: _Optional[int] = ..., updated_by: _Optional[str] = ...) -> None: ...

class AlertAction(_message.Message):
    __slots__ = ("alert_id", "vehicle_id", "assignee", "outcome", "mode", "note")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    VEHICLE_ID_FIELD_NUMBER: _ClassVar[int]
    ASSIGNEE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    vehicle_id: str
    assignee: str
    outcome: str
    mode: str
    note: str
    def __init__(self, alert_id: _Optional[str] = ..., vehicle_id: _Optional[str] = ..., assignee: _Optional[str] = ..., outcome: _Optional[str] = ..., mode: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class AlertFilter(_message.Message):
    __slots__ = ("vehicle_id", "rule", "since_ms", "min_severity", "limit", "states")
    VEHICLE_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    vehicle_id: str
    rule: str
    since_ms: int
    min_severity: int
    limit: int
    states: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, vehicle_id: _Optional[str] = ..., rule: _Optional[str] = ..., since_ms: _Optional[int] = ..., min_severity: _Optional[int] = ..., limit: _Optional[int] = ..., states: _Optional[_Iterable[str]] = ...) -> None: ...

class AlertList(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...
