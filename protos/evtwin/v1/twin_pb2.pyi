from protos.evtwin.v1 import alerts_pb2 as _alerts_pb2
from protos.evtwin.v1 import telemetry_pb2 as _telemetry_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetTwinRequest(_message.Message):
    __slots__ = ("vehicle_id",)
    VEHICLE_ID_FIELD_NUMBER: _ClassVar[int]
    vehicle_id: str
    def __init__(self, vehicle_id: _Optional[str] = ...) -> None: ...

class BaselineStat(_message.Message):
    __slots__ = ("feature", "mean", "std")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    feature: str
    mean: float
    std: float
    def __init__(self, feature: _Optional[str] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ...) -> None: ...

class TwinSummary(_message.Message):
    __slots__ = ("vehicle_id", "applied_seq", "acked_seq", "last_ts_ms", "frames_applied", "windows_closed", "anomaly_score", "baseline", "risk", "open_alerts", "last_frame", "head_version", "sensor_faults", "fitted_sensors", "sensor_fault_episodes", "open_sensor_faults", "seq_epoch")
    VEHICLE_ID_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_TS_MS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_APPLIED_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_CLOSED_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_SCORE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    OPEN_ALERTS_FIELD_NUMBER: _ClassVar[int]
    LAST_FRAME_FIELD_NUMBER: _ClassVar[int]
    HEAD_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENSOR_FAULTS_FIELD_NUMBER: _ClassVar[int]
    FITTED_SENSORS_FIELD_NUMBER: _ClassVar[int]
    SENSOR_FAULT_EPISODES_FIELD_NUMBER: _ClassVar[int]
    OPEN_SENSOR_FAULTS_FIELD_NUMBER: _ClassVar[int]
    SEQ_EPOCH_FIELD_NUMBER: _ClassVar[int]
    vehicle_id: str
    applied_seq: int
    acked_seq: int
    last_ts_ms: int
    frames_applied: int
    windows_closed: int
    anomaly_score: float
    baseline: _containers.RepeatedCompositeFieldContainer[BaselineStat]
    risk: _containers.RepeatedCompositeFieldContainer[_alerts_pb2.HorizonRisk]
    open_alerts: _containers.RepeatedCompositeFieldContainer[_alerts_pb2.Alert]
    last_frame: _telemetry_pb2.Frame
    head_version: str
    sensor_faults: int
    fitted_sensors: _containers.RepeatedScalarFieldContainer[str]
    sensor_fault_episodes: int
    open_sensor_faults: _containers.RepeatedScalarFieldContainer[str]
    seq_epoch: int
    def __init__(self, vehicle_id: _Optional[str] = ..., applied_seq: _Optional[int] = ..., acked_seq: _Optional[int] = ..., last_ts_ms: _Optional[int] = ..., frames_applied: _Optional[int] = ..., windows_closed: _Optional[int] = ..., anomaly_score: _Optional[float] = ..., baseline: _Optional[_Iterable[_Union[BaselineStat, _Mapping]]] = ..., risk: _Optional[_Iterable[_Union[_alerts_pb2.HorizonRisk, _Mapping]]] = ..., open_alerts: _Optional[_Iterable[_Union[_alerts_pb2.Alert, _Mapping]]] = ..., last_frame: _Optional[_Union[_telemetry_pb2.Frame, _Mapping]] = ..., head_version: _Optional[str] = ..., sensor_faults: _Optional[int] = ..., fitted_sensors: _Optional[_Iterable[str]] = ..., sensor_fault_episodes: _Optional[int] = ..., open_sensor_faults: _Optional[_Iterable[str]] = ..., seq_epoch: _Optional[int] = ...) -> None: ...

class ListTwinsRequest(_message.Message):
    __slots__ = ("prefix", "limit")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    limit: int
    def __init__(self, prefix: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListTwinsResponse(_message.Message):
    __slots__ = ("vehicle_ids",)
    VEHICLE_IDS_FIELD_NUMBER: _ClassVar[int]
    vehicle_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, vehicle_ids: _Optional[_Iterable[str]] = ...) -> None: ...
