"""Checks shared by the tests of committed results folders (results/quickstart, results/cpu_study)."""
import subprocess
from pathlib import Path

from amod_bench.report.build import ReportOptions, build_report

ROOT = Path(__file__).resolve().parents[1]


def assert_report_regenerates(committed: Path, tmp_path: Path) -> None:
    """The folder is committed without checkpoints, and its report's tables regenerate byte for byte."""
    assert (committed / "index.json").exists(), f"{committed.relative_to(ROOT)} is not committed"
    tracked = subprocess.run(["git", "ls-files", str(committed)], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked and not [f for f in tracked if f.endswith((".safetensors", ".pt"))], \
        "checkpoints must not be committed"
    report = build_report([committed], tmp_path / "report", ReportOptions(figures=False))
    for table in sorted((committed / "report" / "tables").glob("*.csv")):
        assert (report.out / "tables" / table.name).read_text() == table.read_text(), table.name
