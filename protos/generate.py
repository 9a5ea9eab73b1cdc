"""Generate the Python modules for every .proto under protos/evtwin/v1 (one script, never hand-edit the output).

    .venv/bin/python protos/generate.py            # regenerate in place
    .venv/bin/python protos/generate.py --out DIR  # generate into DIR/protos/evtwin/v1 (the test compares)

The include root is the repository root, so a proto imports ``protos/evtwin/v1/alerts.proto`` and the
generated modules import ``protos.evtwin.v1.alerts_pb2``: the same package path the code uses.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "protos" / "evtwin" / "v1"


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_root: Path = REPO_ROOT) -> list[Path]:
    """Run protoc (from grpcio-tools) over every proto; returns the files it wrote."""
    import grpc_tools
    from grpc_tools import protoc  # imported here: generation is a build step, not a runtime dependency

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    relative = [str(p.relative_to(REPO_ROOT)) for p in proto_files()]
    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *relative,
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code} on {relative}")
    generated_dir = out_root / "protos" / "evtwin" / "v1"
    return sorted(p for p in generated_dir.iterdir() if p.name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="output root (default: the repository)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
