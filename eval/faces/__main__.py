"""Face analysis at a terminal.

    python -m eval.faces analyze IMAGE... [--json]
    python -m eval.faces compare A B [--json]

`analyze` exits 1 when any image failed (the others are still reported); `compare` exits 0 whether or
not the two are the same person, and non-zero only when a face could not be found or read.
"""
from __future__ import annotations

import argparse
import json
import sys

from eval.faces.analyzer import FaceAnalyzer
from eval.faces.recognizers import RECOGNIZERS
from eval.models import ModelNotFound


def _analyzer(args) -> FaceAnalyzer:
    files = {"arcface": args.arcface} if args.arcface else None
    recognizers = args.recognizers or ["sface", "dlib"] + (["arcface"] if args.arcface else [])
    return FaceAnalyzer(recognizers=recognizers, min_face_size=args.min_face_size, model_files=files)


def analyze(args) -> int:
    results = _analyzer(args).analyze(args.images, progress=len(args.images) > 8 and not args.json)
    if args.json:
        print(json.dumps([result.as_dict() for result in results], indent=2))
    else:
        print(f"{'image':40} {'faces':>5} {'yaw':>7} {'pitch':>7} {'roll':>7}  expression")
        for result in results:
            face = result.main_face
            if result.error:
                print(f"{result.image:40} ERROR: {result.error}")
                continue
            note = f"  ({len(result.faces)} faces: the largest is shown)" if result.multiple_faces else ""
            print(
                f"{result.image:40} {len(result.faces):>5} {face.pose.yaw:>7.1f} {face.pose.pitch:>7.1f} "
                f"{face.pose.roll:>7.1f}  {face.expression.label} ({face.expression.scores[face.expression.label]:.2f}){note}"
            )
    return 1 if any(result.error for result in results) else 0


def compare(args) -> int:
    analyzer = _analyzer(args)
    first, second = analyzer.analyze([args.a, args.b])
    failed = [result for result in (first, second) if not result.ok]
    for result in failed:
        print(f"error: {result.image}: {result.error}", file=sys.stderr)
    if failed:
        return 2
    for result in (first, second):
        if result.multiple_faces:
            print(f"note: {result.image} has {len(result.faces)} faces; comparing the largest", file=sys.stderr)
    verdicts = {}
    for name, recognizer in analyzer.recognizers.items():
        score = recognizer.similarity(first.main_face.embeddings[name], second.main_face.embeddings[name])
        verdicts[name] = {
            "similarity": round(score, 4),
            "threshold": round(recognizer.threshold, 4),
            "same_identity": bool(score >= recognizer.threshold),
        }
    if args.json:
        print(json.dumps(verdicts, indent=2))
    else:
        for name, verdict in verdicts.items():
            word = "same person" if verdict["same_identity"] else "different people"
            print(f"{name:8} similarity {verdict['similarity']:.3f} (threshold {verdict['threshold']:.3f}): {word}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.faces", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recognizers", nargs="+", choices=sorted(RECOGNIZERS), help="default: sface dlib (+ arcface when given)")
    parser.add_argument("--arcface", help="path to a user-supplied ArcFace ONNX (or set IDAVATAR_ARCFACE)")
    parser.add_argument("--min-face-size", type=int, default=40, help="smallest face side in pixels (default 40)")
    commands = parser.add_subparsers(dest="command", required=True)
    analyze_parser = commands.add_parser("analyze", help="detect faces, pose and expression")
    analyze_parser.add_argument("images", nargs="+")
    analyze_parser.add_argument("--json", action="store_true")
    compare_parser = commands.add_parser("compare", help="is the main face of A the same person as that of B?")
    compare_parser.add_argument("a")
    compare_parser.add_argument("b")
    compare_parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        return analyze(args) if args.command == "analyze" else compare(args)
    except ModelNotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
