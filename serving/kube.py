"""Entry points named by the KubeRay manifest (``deploy/rayservice.yaml``).

Serve calls an application builder named in ``serveConfigV2`` with the ``args`` mapping of the manifest.
"""
from __future__ import annotations

from typing import Any

from serving.deployments import build_app


def models_app(args: dict[str, Any]) -> Any:
    """The model services application for ``serveConfigV2`` (``args: {run_dir, auth_secret_path}``).

    With ``auth_secret_path`` the gRPC ingress checks the front door's tokens on every Predict/Severity call.
    """
    secret = args.get("auth_secret_path")
    return build_app(run_dir=str(args["run_dir"]), auth_secret_path=str(secret) if secret else None)
