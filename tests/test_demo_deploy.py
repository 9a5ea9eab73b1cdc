"""The deployment files: the RayService manifest validates against the real KubeRay CRD schema, and the pieces
it names (servicer function, application builder, CLI flags, config keys) exist in this code base."""
from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from configs.settings import load_config
from serving.cli import build_parser

ROOT = Path(__file__).parent.parent
CRD = ROOT.parent / "shared" / "kuberay-crd" / "ray.io_rayservices.yaml"
MANIFEST = ROOT / "deploy" / "rayservice.yaml"
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}


def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """The subset of OpenAPI v3 that CRDs use: type, properties, required, additionalProperties, items, enum,
    int-or-string, preserve-unknown-fields, pattern, minimum/maximum."""
    errors: list[str] = []
    if schema.get("x-kubernetes-int-or-string"):
        return [] if isinstance(value, (int, str)) else [f"{path}: expected int or string"]
    expected = schema.get("type")
    if expected:
        ok = isinstance(value, TYPES[expected]) and not (expected in ("integer", "number") and isinstance(value, bool))
        if not ok:
            return [f"{path}: expected {expected}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if "minimum" in schema and isinstance(value, (int, float)) and value < schema["minimum"]:
        errors.append(f"{path}: {value} < {schema['minimum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}.{name}: required")
        for name, child in value.items():
            if name in properties:
                errors += validate(child, properties[name], f"{path}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate(child, schema["additionalProperties"], f"{path}.{name}")
            elif properties and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{name}: unknown field")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    return errors


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def rayservice_schema() -> dict[str, Any]:
    if not CRD.exists():
        pytest.skip(f"KubeRay CRD not found at {CRD}")
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


def rayservice() -> dict[str, Any]:
    return next(d for d in documents() if d["kind"] == "RayService")


def test_the_validator_catches_unknown_fields_and_wrong_types() -> None:
    schema = rayservice_schema()
    broken = yaml.safe_load(yaml.safe_dump(rayservice()))
    broken["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParamz"] = {}
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    del broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]
    errors = validate(broken, schema)
    assert any("rayStartParamz: unknown field" in e for e in errors)
    assert any("replicas: expected integer" in e for e in errors)
    assert any("groupName: required" in e for e in errors)


def test_the_rayservice_manifest_follows_the_kuberay_crd() -> None:
    manifest = rayservice()
    assert manifest["apiVersion"] == "ray.io/v1"
    assert validate(manifest, rayservice_schema()) == []


def test_the_serve_config_names_code_that_exists() -> None:
    serve_config = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    for dotted in serve_config["grpc_options"]["grpc_servicer_functions"]:
        module, _, name = dotted.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), dotted
    for app in serve_config["applications"]:
        module, _, name = app["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), name)), app["import_path"]


def test_the_front_door_sidecar_arguments_parse_and_the_config_overrides_load() -> None:
    head = rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    sidecar = next(c for c in head["containers"] if c["name"] == "evtwin-frontdoor")
    args = build_parser().parse_args(sidecar["args"])
    assert args.command == "serve" and args.address == "127.0.0.1:6379"
    config = load_config(overrides=args.overrides)
    assert config.serving.tls_cert_path and config.serving.tls_key_path, "the exposed port must use TLS"
    assert "://" in config.twins.checkpoint_uri, "checkpoints must be reachable from every node"
    ray_tmp = {m["mountPath"] for c in head["containers"] for m in c.get("volumeMounts", []) if m["name"] == "ray-tmp"}
    assert ray_tmp == {"/tmp/ray"}, "the sidecar driver needs the head's /tmp/ray"


def test_only_the_grpc_port_is_exposed_and_the_dashboard_stays_local() -> None:
    service = next(d for d in documents() if d["kind"] == "Service")
    assert [p["port"] for p in service["spec"]["ports"]] == [50151]
    head = rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"


def test_the_dockerfile_installs_the_package_and_serves_by_default() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:2\.60\.0-py311", dockerfile, re.M)
    assert "pip install --no-cache-dir ." in dockerfile
    for package in ("configs", "protos", "simulation", "training", "twins", "serving"):
        assert f"COPY --chown=ray:users {package} ./{package}" in dockerfile
    assert 'ENTRYPOINT ["evtwin"]' in dockerfile
