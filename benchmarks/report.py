"""REPORT.md from a latency run (benchmarks.latency) and its export's export_report.json.

Example:
  python -m benchmarks.report --export_dir exports/p --latency reports/latency.json \
      --output_dir reports/

Writes --output_dir/REPORT.md (the machine, one table row per latency result, the acceptance
ratios, the published reference numbers beside ours) and two plots it links: mIoU against
latency and size against latency (benchmarks.report_lib).
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from benchmarks.report_lib import load_latency, write_report
from deploy.report import ExportReport
from icnet import exits

flags.DEFINE_string("latency", None, "benchmarks.latency's JSON output.")
flags.DEFINE_string("export_dir", None, "The export that was benchmarked (default: the one "
                    "recorded in --latency).")
flags.DEFINE_string("output_dir", "reports", "Output directory for REPORT.md and the plots.")
flags.DEFINE_integer("ratio_threads", 2, "Thread count of the acceptance ratios.")
FLAGS = flags.FLAGS


def _main() -> None:
    if not FLAGS.latency:
        raise exits.OptionError("latency", "is required")
    if FLAGS.ratio_threads < 1:
        raise exits.OptionError("ratio_threads", f"must be >= 1, got {FLAGS.ratio_threads}")
    latency = load_latency(FLAGS.latency)
    export_dir = FLAGS.export_dir or (latency.get("settings") or {}).get("export_dir")
    if not export_dir:
        raise exits.OptionError("export_dir", "is required (--latency records none)")
    if not os.path.isdir(export_dir):
        raise exits.OptionError("export_dir", f"{export_dir}: no such directory")
    path = write_report(latency, ExportReport.read(export_dir), FLAGS.output_dir,
                        FLAGS.ratio_threads)
    logging.info("wrote %s", path)


if __name__ == "__main__":
    app.run(lambda argv: exits.run(_main))
