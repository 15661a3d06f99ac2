"""Draw the results' charts from their committed JSON, next to it (PNG files are not committed).

The repository tracks no image files, so the charts the result pages link to (``encoders_*.png``, ``bench.png``)
are drawn on demand from the JSON each benchmark wrote beside its table:

    python benchmarks/plots.py                      # every results folder
    python benchmarks/plots.py benchmarks/results/intel-xeon-2cpu/encoders_ssl64.json

Needs matplotlib (the dev environment has it). A JSON file that is not a yardstick or a bench report is skipped
with a line saying so; one that cannot be read is named with the reason and the rest are still drawn.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoders import delta_plot  # noqa: E402

from dermedge.bench import _plot as bench_plot  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def has_paired_differences(rows: list[dict[str, Any]]) -> bool:
    """A yardstick report can be drawn when every row after the first carries its paired difference."""
    return len(rows) >= 2 and all("delta" in r for r in rows[1:])


def draw(path: Path) -> str:
    """Draw the chart for one JSON report beside it; return what was done, for the log line."""
    report: Any = json.loads(path.read_text())
    png = path.with_suffix(".png")
    if isinstance(report, dict) and path.name.startswith("encoders_") and isinstance(report.get("rows"), list):
        if not has_paired_differences(report["rows"]):
            return "skipped (no paired differences in this report: it predates them)"
        if not delta_plot(report["rows"], png):
            return "skipped (matplotlib is not installed)"
        return f"wrote {png}"
    if isinstance(report, dict) and path.name == "bench.json" and isinstance(report.get("results"), list):
        try:
            bench_plot(report["results"], str(png))
        except ImportError:
            return "skipped (matplotlib is not installed)"
        return f"wrote {png}"
    return "skipped (not a yardstick or bench report)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", nargs="*", type=Path, help="reports to draw (default: every results folder)")
    args = p.parse_args(argv)
    paths = args.json or sorted([*RESULTS.glob("*/encoders_*.json"), *RESULTS.glob("*/bench.json")])
    failed = 0
    for path in paths:
        try:
            print(f"{path}: {draw(path)}")
        except (OSError, ValueError, KeyError, TypeError) as e:
            failed += 1
            print(f"{path}: not drawn: {type(e).__name__}: {e}", file=sys.stderr)
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
