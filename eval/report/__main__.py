"""`python -m eval.report [MANIFEST | SCORES_DIR] [--out reports/NAME.html] [--baseline OTHER]`.

With no run, builds and reports the built-in demo (reports/demo.html)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.report import build_report
from eval.report.gates import DEFAULT_GATES_FILE, GatesFileError
from eval.report.run import RunError
from eval.review.export import ReviewsError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", type=Path, help="run manifest (JSONL) or scores folder; default: the demo")
    parser.add_argument("--out", type=Path, help="HTML file to write (default: reports/<run name>.html)")
    parser.add_argument("--baseline", type=Path, help="another run to compare with")
    parser.add_argument("--system", help="the candidate system (default: the only one, or 'ideal' in the demo)")
    parser.add_argument("--baseline-system", help="the baseline's system (default: the candidate's name, or its only one)")
    parser.add_argument("--gates", type=Path, default=DEFAULT_GATES_FILE, help="gates file (default: %(default)s)")
    parser.add_argument("--calibration", type=Path, help="calibration JSON (eval.calibrate) for thresholds and ROC")
    parser.add_argument("--reviews", type=Path,
                        help="human-review export folder (python -m eval.review export) for the Human review section")
    parser.add_argument("--governance", type=Path,
                        help="governance config (default: $GOVERNANCE_CONFIG, else ./governance.toml)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = build_report(args.run, out=args.out, baseline=args.baseline, system=args.system,
                           baseline_system=args.baseline_system,
                           gates_file=args.gates, calibration=args.calibration, governance=args.governance,
                           reviews=args.reviews)
    except (RunError, GatesFileError, ReviewsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the report itself cannot be written
        print(f"error: {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
