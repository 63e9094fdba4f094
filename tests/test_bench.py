"""bench/: the report is written from the results JSON alone, and the committed BENCHMARKS.md is that report."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_benchmarks_md_is_the_report_of_the_committed_json(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run([sys.executable, "-m", "bench.report", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == (REPO / "BENCHMARKS.md").read_text()


def test_the_report_changes_with_the_numbers(tmp_path):
    from bench.report import write_report

    results = json.loads((REPO / "bench" / "results" / "benchmarks.json").read_text())
    row = next(r for r in results["pyod"] if r.get("detector") == "IForest" and "roc_auc" in r)
    row["roc_auc"] = 0.123456
    write_report(tmp_path / "B.md", results, results.get("argv", []))
    text = (tmp_path / "B.md").read_text()
    assert "| PyOD IForest | defaults, pyod 3.6.7 | 0.1235 |" in text and "| 0.9478 |" not in text
