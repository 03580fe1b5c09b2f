"""Generate the Python gRPC code from ``protos/`` into ``router/api/gen``.

    python -m router.api.protogen           # write the generated files
    python -m router.api.protogen --check   # exit 1 if the checked-in files differ

The generated grpc module imports its messages as ``ttc_router.v1``; the import is
rewritten to the package path ``router.api.gen.ttc_router.v1`` so no ``sys.path`` tricks
are needed.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "protos"
GEN_DIR = Path(__file__).resolve().parent / "gen"
PROTOS = ["ttc_router/v1/router.proto"]
PACKAGES = ["", "ttc_router", "ttc_router/v1"]


def generate(out: Path) -> None:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(PROTO_DIR / p) for p in PROTOS],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for pkg in PACKAGES:
        init = out / pkg / "__init__.py"
        init.write_text('"""Generated from protos/ by `python -m router.api.protogen`."""\n')
    for path in out.rglob("*_pb2_grpc.py"):
        text = path.read_text()
        text = text.replace("from ttc_router.v1 import", "from router.api.gen.ttc_router.v1 import")
        path.write_text(text)


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(
        p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    files_b = sorted(
        p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    if files_a != files_b:
        return False
    return all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    ns = parser.parse_args(argv)
    if ns.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            if not _same_tree(Path(tmp), GEN_DIR):
                print(
                    "router/api/gen is out of date with protos/: "
                    "run `python -m router.api.protogen`",
                    file=sys.stderr,
                )
                return 1
        print("generated code matches protos/")
        return 0
    if GEN_DIR.exists():
        shutil.rmtree(GEN_DIR)
    generate(GEN_DIR)
    print(f"wrote {GEN_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
