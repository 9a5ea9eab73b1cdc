from protos.evtwin.v1 import alerts_pb2 as _alerts_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Frame(_message.Message):
    __slots__ = ("vehicle_id", "ts", "seq", "pack_voltage", "pack_current", "soc", "soh", "cell_voltage_min", "cell_voltage_max", "cell_temp_min", "cell_temp_max", "cell_temp_avg", "internal_resistance", "insulation_resistance", "coolant_temp_in", "coolant_temp_out", "coolant_flow", "pump_speed", "hvac_power", "motor_speed", "motor_torque", "motor_temp", "inverter_temp", "speed", "odometer", "tyre_pressure_fl", "tyre_pressure_fr", "tyre_pressure_rl", "tyre_pressure_rr", "brake_pad_wear", "brake_temp", "aux_battery_voltage", "dcdc_current", "charger_state", "charge_power", "ambient_temp", "latitude", "longitude")
    VEHICLE_ID_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PACK_VOLTAGE_FIELD_NUMBER: _ClassVar[int]
    PACK_CURRENT_FIELD_NUMBER: _ClassVar[int]
    SOC_FIELD_NUMBER: _ClassVar[int]
    SOH_FIELD_NUMBER: _ClassVar[int]
    CELL_VOLTAGE_MIN_FIELD_NUMBER: _ClassVar[int]
    CELL_VOLTAGE_MAX_FIELD_NUMBER: _ClassVar[int]
    CELL_TEMP_MIN_FIELD_NUMBER: _ClassVar[int]
    CELL_TEMP_MAX_FIELD_NUMBER: _ClassVar[int]
    CELL_TEMP_AVG_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_RESISTANCE_FIELD_NUMBER: _ClassVar[int]
    INSULATION_RESISTANCE_FIELD_NUMBER: _ClassVar[int]
    COOLANT_TEMP_IN_FIELD_NUMBER: _ClassVar[int]
    COOLANT_TEMP_OUT_FIELD_NUMBER: _ClassVar[int]
    COOLANT_FLOW_FIELD_NUMBER: _ClassVar[int]
    PUMP_SPEED_FIELD_NUMBER: _ClassVar[int]
    HVAC_POWER_FIELD_NUMBER: _ClassVar[int]
    MOTOR_SPEED_FIELD_NUMBER: _ClassVar[int]
    MOTOR_TORQUE_FIELD_NUMBER: _ClassVar[int]
    MOTOR_TEMP_FIELD_NUMBER: _ClassVar[int]
    INVERTER_TEMP_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    ODOMETER_FIELD_NUMBER: _ClassVar[int]
    TYRE_PRESSURE_FL_FIELD_NUMBER: _ClassVar[int]
    TYRE_PRESSURE_FR_FIELD_NUMBER: _ClassVar[int]
    TYRE_PRESSURE_RL_FIELD_NUMBER: _ClassVar[int]
    TYRE_PRESSURE_RR_FIELD_NUMBER: _ClassVar[int]
    BRAKE_PAD_WEAR_FIELD_NUMBER: _ClassVar[int]
    BRAKE_TEMP_FIELD_NUMBER: _ClassVar[int]
    AUX_BATTERY_VOLTAGE_FIELD_NUMBER: _ClassVar[int]
    DCDC_CURRENT_FIELD_NUMBER: _ClassVar[int]
    CHARGER_STATE_FIELD_NUMBER: _ClassVar[int]
    CHARGE_POWER_FIELD_NUMBER: _ClassVar[int]
    AMBIENT_TEMP_FIELD_NUMBER: _ClassVar[int]
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    vehicle_id: str
    ts: int
    seq: int
    pack_voltage: float
    pack_current: float
    soc: float
    soh: float
    cell_voltage_min: float
    cell_voltage_max: float
    cell_temp_min: float
    cell_temp_max: float
    cell_temp_avg: float
    internal_resistance: float
    insulation_resistance: float
    coolant_temp_in: float
    coolant_temp_out: float
    coolant_flow: float
    pump_speed: float
    hvac_power: float
    motor_speed: float
    motor_torque: float
    motor_temp: float
    inverter_temp: float
    speed: float
    odometer: float
    tyre_pressure_fl: float
    tyre_pressure_fr: float
    tyre_pressure_rl: float
    tyre_pressure_rr: float
    brake_pad_wear: float
    brake_temp: float
    aux_battery_voltage: float
    dcdc_current: float
    charger_state: int
    charge_power: float
    ambient_temp: float
    latitude: float
    longitude: float
    def __init__(self, vehicle_id: _Optional[str] = ..., ts: _Optional[int] = ..., seq: _Optional[int] = ..., pack_voltage: _Optional[float] = ..., pack_current: _Optional[float] = ..., soc: _Optional[float] = ..., soh: _Optional[float] = ..., cell_voltage_min: _Optional[float] = ..., cell_voltage_max: _Optional[float] = ..., cell_temp_min: _Optional[float] = ..., cell_temp_max: _Optional[float] = ..., cell_temp_avg: _Optional[float] = ..., internal_resistance: _Optional[float] = ..., insulation_resistance: _Optional[float] = ..., coolant_temp_in: _Optional[float] = ..., coolant_temp_out: _Optional[float] = ..., coolant_flow: _Optional[float] = ..., pump_speed: _Optional[float] = ..., hvac_power: _Optional[float] = ..., motor_speed: _Optional[float] = ..., motor_torque: _Optional[float] = ..., motor_temp: _Optional[float] = ..., inverter_temp: _Optional[float] = ..., speed: _Optional[float] = ..., odometer: _Optional[float] = ..., tyre_pressure_fl: _Optional[float] = ..., tyre_pressure_fr: _Optional[float] = ..., tyre_pressure_rl: _Optional[float] = ..., tyre_pressure_rr: _Optional[float] = ..., brake_pad_wear: _Optional[float] = ..., brake_temp: _Optional[float] = ..., aux_battery_voltage: _Optional[float] = ..., dcdc_current: _Optional[float] = ..., charger_state: _Optional[int] = ..., charge_power: _Optional[float] = ..., ambient_temp: _Optional[float] = ..., latitude: _Optional[float] = ..., longitude: _Optional[float] = ...) -> None: ...

class FrameBatch(_message.Message):
    __slots__ = ("batch_id", "vehicle_ids", "vehicle_index", "ts", "seq", "frames", "pack_voltage", "pack_current", "soc", "soh", "cell_voltage_min", "cell_voltage_max", "cell_temp_min", "cell_temp_max", "cell_temp_avg", "internal_resistance", "insulation_resistance", "coolant_temp_in", "coolant_temp_out", "coolant_flow", "pump_speed", "hvac_power", "motor_speed", "motor_torque", "motor_temp", "inverter_temp", "speed", "odometer", "tyre_pressure_fl", "tyre_pressure_fr", "tyre_pressure_rl", "tyre_pressure_rr", "brake_pad_wear", "brake_temp", "aux_battery_voltage", "dcdc_current", "charger_state", "charge_power", "ambient_temp", "latitude", "longitude")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    VEHICLE_IDS_FIELD_NUMBER: _ClassVar[int]
    VEHICLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    PACK_VOLTAGE_FIELD_NUMBER: _ClassVar[int]
    PACK_CURRENT_FIELD_NUMBER: _ClassVar[int]
    SOC_FIELD_NUMBER: _ClassVar[int]
    SOH_FIELD_NUMBER: _ClassVar[int]
    CELL_VOLTAGE_MIN_FIELD_NUMBER: _ClassVar[int]
    CELL_VOLTAGE_MAX_FIELD_NUMBER: _ClassVar[int]
    CELL_TEMP_MIN_FIELD_NUMBER: _ClassVar[int]
    CELL_TEMP_MAX_FIELD_NUMBER: _ClassVar[int]
    CELL_TEMP_AVG_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_RESISTANCE_FIELD_NUMBER: _ClassVar[int]
    INSULATION_RESISTANCE_FIELD_NUMBER: _ClassVar[int]
    COOLANT_TEMP_IN_FIELD_NUMBER: _ClassVar[int]
    COOLANT_TEMP_OUT_FIELD_NUMBER: _ClassVar[int]
    COOLANT_FLOW_FIELD_NUMBER: _ClassVar[int]
    PUMP_SPEED_FIELD_NUMBER: _ClassVar[int]
    HVAC_POWER_FIELD_NUMBER: _ClassVar[int]
    MOTOR_SPEED_FIELD_NUMBER: _ClassVar[int]
    MOTOR_TORQUE_FIELD_NUMBER: _ClassVar[int]
    MOTOR_TEMP_FIELD_NUMBER: _ClassVar[int]
    INVERTER_TEMP_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    ODOMETER_FIELD_NUMBER: _ClassVar[int]
    TYRE_PRESSURE_FL_FIELD_NUMBER: _ClassVar[int]
    TYRE_PRESSURE_FR_FIELD_NUMBER: _ClassVar[int]
    TYRE_PRESSURE_RL_FIELD_NUMBER: _ClassVar[int]
    TYRE_PRESSURE_RR_FIELD_NUMBER: _ClassVar[int]
    BRAKE_PAD_WEAR_FIELD_NUMBER: _ClassVar[int]
    BRAKE_TEMP_FIELD_NUMBER: _ClassVar[int]
    AUX_BATTERY_VOLTAGE_FIELD_NUMBER: _ClassVar[int]
    DCDC_CURRENT_FIELD_NUMBER: _ClassVar[int]
    CHARGER_STATE_FIELD_NUMBER: _ClassVar[int]
    CHARGE_POWER_FIELD_NUMBER: _ClassVar[int]
    AMBIENT_TEMP_FIELD_NUMBER: _ClassVar[int]
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    vehicle_ids: _containers.RepeatedScalarFieldContainer[str]
    vehicle_index: _containers.RepeatedScalarFieldContainer[int]
    ts: _containers.RepeatedScalarFieldContainer[int]
    seq: _containers.RepeatedScalarFieldContainer[int]
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    pack_voltage: _containers.RepeatedScalarFieldContainer[float]
    pack_current: _containers.RepeatedScalarFieldContainer[float]
    soc: _containers.RepeatedScalarFieldContainer[float]
    soh: _containers.RepeatedScalarFieldContainer[float]
    cell_voltage_min: _containers.RepeatedScalarFieldContainer[float]
    cell_voltage_max: _containers.RepeatedScalarFieldContainer[float]
    cell_temp_min: _containers.RepeatedScalarFieldContainer[float]
    cell_temp_max: _containers.RepeatedScalarFieldContainer[float]
    cell_temp_avg: _containers.RepeatedScalarFieldContainer[float]
    internal_resistance: _containers.RepeatedScalarFieldContainer[float]
    insulation_resistance: _containers.RepeatedScalarFieldContainer[float]
    coolant_temp_in: _containers.RepeatedScalarFieldContainer[float]
    coolant_temp_out: _containers.RepeatedScalarFieldContainer[float]
    coolant_flow: _containers.RepeatedScalarFieldContainer[float]
    pump_speed: _containers.RepeatedScalarFieldContainer[float]
    hvac_power: _containers.RepeatedScalarFieldContainer[float]
    motor_speed: _containers.RepeatedScalarFieldContainer[float]
    motor_torque: _containers.RepeatedScalarFieldContainer[float]
    motor_temp: _containers.RepeatedScalarFieldContainer[float]
    inverter_temp: _containers.RepeatedScalarFieldContainer[float]
    speed: _containers.RepeatedScalarFieldContainer[float]
    odometer: _containers.RepeatedScalarFieldContainer[float]
    tyre_pressure_fl: _containers.RepeatedScalarFieldContainer[float]
    tyre_pressure_fr: _containers.RepeatedScalarFieldContainer[float]
    tyre_pressure_rl: _containers.RepeatedScalarFieldContainer[float]
    tyre_pressure_rr: _containers.RepeatedScalarFieldContainer[float]
    brake_pad_wear: _containers.RepeatedScalarFieldContainer[float]
    brake_temp: _containers.RepeatedScalarFieldContainer[float]
    aux_battery_voltage: _containers.RepeatedScalarFieldContainer[float]
    dcdc_current: _containers.RepeatedScalarFieldContainer[float]
    charger_state: _containers.RepeatedScalarFieldContainer[int]
    charge_power: _containers.RepeatedScalarFieldContainer[float]
    ambient_temp: _containers.RepeatedScalarFieldContainer[float]
    latitude: _containers.RepeatedScalarFieldContainer[float]
    longitude: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, batch_id: _Optional[int] = ..., vehicle_ids: _Optional[_Iterable[str]] = ..., vehicle_index: _Optional[_Iterable[int]] = ..., ts: _Optional[_Iterable[int]] = ..., seq: _Optional[_Iterable[int]] = ..., frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ..., pack_voltage: _Optional[_Iterable[float]] = ..., pack_current: _Optional[_Iterable[float]] = ..., soc: _Optional[_Iterable[float]] = ..., soh: _Optional[_Iterable[float]] = ..., cell_voltage_min: _Optional[_Iterable[float]] = ..., cell_voltage_max: _Optional[_Iterable[float]] = ..., cell_temp_min: _Optional[_Iterable[float]] = ..., cell_temp_max: _Optional[_Iterable[float]] = ..., cell_temp_avg: _Optional[_Iterable[float]] = ..., internal_resistance: _Optional[_Iterable[float]] = ..., insulation_resistance: _Optional[_Iterable[float]] = ..., coolant_temp_in: _Optional[_Iterable[float]] = ..., coolant_temp_out: _Optional[_Iterable[float]] = ..., coolant_flow: _Optional[_Iterable[float]] = ..., pump_speed: _Optional[_Iterable[float]] = ..., hvac_power: _Optional[_Iterable[float]] = ..., motor_speed: _Optional[_Iterable[float]] = ..., motor_torque: _Optional[_Iterable[float]] = ..., motor_temp: _Optional[_Iterable[float]] = ..., inverter_temp: _Optional[_Iterable[float]] = ..., speed: _Optional[_Iterable[float]] = ..., odometer: _Optional[_Iterable[float]] = ..., tyre_pressure_fl: _Optional[_Iterable[float]] = ..., tyre_pressure_fr: _Optional[_Iterable[float]] = ..., tyre_pressure_rl: _Optional[_Iterable[float]] = ..., tyre_pressure_rr: _Optional[_Iterable[float]] = ..., brake_pad_wear: _Optional[_Iterable[float]] = ..., brake_temp: _Optional[_Iterable[float]] = ..., aux_battery_voltage: _Optional[_Iterable[float]] = ..., dcdc_current: _Optional[_Iterable[float]] = ..., charger_state: _Optional[_Iterable[int]] = ..., charge_power: _Optional[_Iterable[float]] = ..., ambient_temp: _Optional[_Iterable[float]] = ..., latitude: _Optional[_Iterable[float]] = ..., longitude: _Optional[_Iterable[float]] = ...) -> None: ...

class VehicleAck(_message.Message):
    __slots__ = ("vehicle_id", "seq", "ts")
    VEHICLE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    vehicle_id: str
    seq: int
    ts: int
    def __init__(self, vehicle_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts: _Optional[int] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("vehicle_id", "seq", "code", "message")
    VEHICLE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    vehicle_id: str
    seq: int
    code: str
    message: str
    def __init__(self, vehicle_id: _Optional[str] = ..., seq: _Optional[int] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("batch_id", "acks", "frames", "duplicates", "sensor_faults", "rejected")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    SENSOR_FAULTS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    acks: _containers.RepeatedCompositeFieldContainer[VehicleAck]
    frames: int
    duplicates: int
    sensor_faults: int
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, batch_id: _Optional[int] = ..., acks: _Optional[_Iterable[_Union[VehicleAck, _Mapping]]] = ..., frames: _Optional[int] = ..., duplicates: _Optional[int] = ..., sensor_faults: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class StreamReply(_message.Message):
    __slots__ = ("ack", "alert")
    ACK_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    ack: Ack
    alert: _alerts_pb2.Alert
    def __init__(self, ack: _Optional[_Union[Ack, _Mapping]] = ..., alert: _Optional[_Union[_alerts_pb2.Alert, _Mapping]] = ...) -> None: ...
