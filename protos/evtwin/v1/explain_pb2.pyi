from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExplainRequest(_message.Message):
    __slots__ = ("alert_id", "max_causes", "max_similar")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_CAUSES_FIELD_NUMBER: _ClassVar[int]
    MAX_SIMILAR_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    max_causes: int
    max_similar: int
    def __init__(self, alert_id: _Optional[str] = ..., max_causes: _Optional[int] = ..., max_similar: _Optional[int] = ...) -> None: ...

class ExplainDriver(_message.Message):
    __slots__ = ("name", "weight", "fields", "sent")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    fields: _containers.RepeatedScalarFieldContainer[str]
    sent: bool
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ..., fields: _Optional[_Iterable[str]] = ..., sent: _Optional[bool] = ...) -> None: ...

class ExplainPassage(_message.Message):
    __slots__ = ("passage_id", "section", "text")
    PASSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SECTION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    passage_id: str
    section: str
    text: str
    def __init__(self, passage_id: _Optional[str] = ..., section: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ExplainSimilarAlert(_message.Message):
    __slots__ = ("alert_id", "vehicle_id", "outcome", "similarity")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    VEHICLE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    vehicle_id: str
    outcome: str
    similarity: float
    def __init__(self, alert_id: _Optional[str] = ..., vehicle_id: _Optional[str] = ..., outcome: _Optional[str] = ..., similarity: _Optional[float] = ...) -> None: ...

class ExplainCause(_message.Message):
    __slots__ = ("cause", "kind", "title", "support", "matched_fields", "passages", "similar", "recommended_check", "retrievers", "coverage")
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    SIMILAR_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDED_CHECK_FIELD_NUMBER: _ClassVar[int]
    RETRIEVERS_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    cause: str
    kind: str
    title: str
    support: float
    matched_fields: _containers.RepeatedScalarFieldContainer[str]
    passages: _containers.RepeatedCompositeFieldContainer[ExplainPassage]
    similar: _containers.RepeatedCompositeFieldContainer[ExplainSimilarAlert]
    recommended_check: str
    retrievers: _containers.RepeatedScalarFieldContainer[str]
    coverage: float
    def __init__(self, cause: _Optional[str] = ..., kind: _Optional[str] = ..., title: _Optional[str] = ..., support: _Optional[float] = ..., matched_fields: _Optional[_Iterable[str]] = ..., passages: _Optional[_Iterable[_Union[ExplainPassage, _Mapping]]] = ..., similar: _Optional[_Iterable[_Union[ExplainSimilarAlert, _Mapping]]] = ..., recommended_check: _Optional[str] = ..., retrievers: _Optional[_Iterable[str]] = ..., coverage: _Optional[float] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("alert_id", "vehicle_id", "rule", "supported", "min_support", "summary", "drivers", "causes", "similar", "min_coverage")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    VEHICLE_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_FIELD_NUMBER: _ClassVar[int]
    MIN_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    DRIVERS_FIELD_NUMBER: _ClassVar[int]
    CAUSES_FIELD_NUMBER: _ClassVar[int]
    SIMILAR_FIELD_NUMBER: _ClassVar[int]
    MIN_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    vehicle_id: str
    rule: str
    supported: bool
    min_support: float
    summary: str
    drivers: _containers.RepeatedCompositeFieldContainer[ExplainDriver]
    causes: _containers.RepeatedCompositeFieldContainer[ExplainCause]
    similar: _containers.RepeatedCompositeFieldContainer[ExplainSimilarAlert]
    min_coverage: float
    def __init__(self, alert_id: _Optional[str] = ..., vehicle_id: _Optional[str] = ..., rule: _Optional[str] = ..., supported: _Optional[bool] = ..., min_support: _Optional[float] = ..., summary: _Optional[str] = ..., drivers: _Optional[_Iterable[_Union[ExplainDriver, _Mapping]]] = ..., causes: _Optional[_Iterable[_Union[ExplainCause, _Mapping]]] = ..., similar: _Optional[_Iterable[_Union[ExplainSimilarAlert, _Mapping]]] = ..., min_coverage: _Optional[float] = ...) -> None: ...
