"""``python -m classifier.embedder OUT.onnx [--int8]``: export the prompt embedder to a file."""

from __future__ import annotations

import argparse
from pathlib import Path

from classifier.embedder.export import export_embedder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m classifier.embedder", description="Export the prompt embedder to ONNX."
    )
    parser.add_argument("out", type=Path, help="where to write the .onnx file")
    parser.add_argument("--int8", action="store_true", help="dynamic int8 weights")
    args = parser.parse_args(argv)
    print(export_embedder(args.out, quantized=args.int8))


if __name__ == "__main__":
    main()
