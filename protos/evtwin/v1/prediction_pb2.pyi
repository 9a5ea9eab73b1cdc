from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("feature_names", "vehicle_ids", "window_end_ms", "values", "top_k")
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    VEHICLE_IDS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_MS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    vehicle_ids: _containers.RepeatedScalarFieldContainer[str]
    window_end_ms: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    top_k: int
    def __init__(self, feature_names: _Optional[_Iterable[str]] = ..., vehicle_ids: _Optional[_Iterable[str]] = ..., window_end_ms: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., top_k: _Optional[int] = ...) -> None: ...

class Contribution(_message.Message):
    __slots__ = ("row", "feature", "value")
    ROW_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    row: int
    feature: str
    value: float
    def __init__(self, row: _Optional[int] = ..., feature: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("horizons_days", "risk", "modes", "mode_risk", "contributions", "model_version")
    HORIZONS_DAYS_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    MODES_FIELD_NUMBER: _ClassVar[int]
    MODE_RISK_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    horizons_days: _containers.RepeatedScalarFieldContainer[int]
    risk: _containers.RepeatedScalarFieldContainer[float]
    modes: _containers.RepeatedScalarFieldContainer[str]
    mode_risk: _containers.RepeatedScalarFieldContainer[float]
    contributions: _containers.RepeatedCompositeFieldContainer[Contribution]
    model_version: str
    def __init__(self, horizons_days: _Optional[_Iterable[int]] = ..., risk: _Optional[_Iterable[float]] = ..., modes: _Optional[_Iterable[str]] = ..., mode_risk: _Optional[_Iterable[float]] = ..., contributions: _Optional[_Iterable[_Union[Contribution, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class SeverityResponse(_message.Message):
    __slots__ = ("levels", "probabilities", "severity", "model_version")
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    levels: _containers.RepeatedScalarFieldContainer[int]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    severity: _containers.RepeatedScalarFieldContainer[int]
    model_version: str
    def __init__(self, levels: _Optional[_Iterable[int]] = ..., probabilities: _Optional[_Iterable[float]] = ..., severity: _Optional[_Iterable[int]] = ..., model_version: _Optional[str] = ...) -> None: ...
