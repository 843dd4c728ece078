"""benchmarks/report.py and readme_tables.py on a small recorded JSON: the CSV has a row per
record, the charts the lines and bars the records call for (and PNG files), the README tables
the figures of the records, and every script's --help its whole description."""

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SMALL = Path(__file__).resolve().parent / "data" / "bench-small.json"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402
import readme_tables  # noqa: E402
import report  # noqa: E402

# Only for the imports above: left on the path, the folder's scripts (common.py, report.py,
# text.py, ...) would shadow any installed module of the same name in later tests.
sys.path[:] = [entry for entry in sys.path if entry != str(BENCHMARKS)]


@pytest.fixture
def records():
    return report.read(SMALL)["records"]


def test_csv_has_a_row_per_record(records, tmp_path):
    path = report.write_csv(records, tmp_path / "out.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(records) == 30
    assert list(rows[0]) == ["bench", "system", "model", "batch", "threads", "clients", "requests", "seq", "vocab",
                             "value", "unit"]
    assert rows[0] == {"bench": "text", "system": "hf-generate", "model": "m", "batch": "1", "threads": "2",
                       "clients": "", "requests": "", "seq": "", "vocab": "", "value": "36.84", "unit": "tokens/s"}
    assert [float(r["value"]) for r in rows] == [r["value"] for r in records]


def test_records_save_writes_json_csv_and_charts(records, tmp_path):
    saved = common.Records({"cpu": "test"}, records)
    saved.save(argparse.Namespace(json=str(tmp_path / "run.json"), csv=None, plot=None))
    assert report.read(tmp_path / "run.json")["records"] == records
    assert len((tmp_path / "run.csv").read_text().splitlines()) == 31  # beside the JSON, a header and 30 rows
    saved.save(argparse.Namespace(json=None, csv=str(tmp_path / "elsewhere.csv"), plot=None))
    assert (tmp_path / "elsewhere.csv").is_file()


def test_charts_follow_the_records(records):
    found = {chart.name: chart for chart in report.charts(records)}
    assert set(found) == {"text-tokens-s-by-batch-model-m-threads-2",
                          "images-images-s-by-batch-model-digits-gan-threads-2", "serve-requests-s-by-clients-model-m",
                          "serve-tokens-s-by-clients-model-m", "serve-latency-percentiles-by-clients-model-m",
                          "kernel-ratios"}
    assert found["text-tokens-s-by-batch-model-m-threads-2"].series == {
        "hf-generate": [(1, 36.84), (8, 102.2)], "aigc-native-float32": [(1, 55.4), (8, 2264.4)]}
    latency = found["serve-latency-percentiles-by-clients-model-m"].series
    assert latency["aigc serve (HTTP, streamed): ttft p99"] == [(1, 0.009), (16, 0.041)]
    assert len(latency) == 4
    bars = dict(found["kernel-ratios"].series["ratio"])
    assert bars == {"attention_prefill (seq 512)\naigc fp32 vs torch SDPA fp32": 2.0,  # a rate: ours / theirs
                    "sample (batch 64, vocab 50257)\naigc sample vs torch top-k first": 4.0}  # a time: theirs / ours


def test_plot_writes_a_png_per_chart(records, tmp_path):
    pytest.importorskip("matplotlib")
    written = report.plot(records, tmp_path / "charts")
    assert sorted(p.name for p in written) == sorted(f"{c.name}.png" for c in report.charts(records))
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 5000


def test_readme_tables(records):
    made = readme_tables.tables(records)
    assert set(made) == {"images", "text m", "serve", "kernels"}
    assert made["images"].splitlines() == [
        "| model | batch | PyTorch eager | onnxruntime | aigc_engine | vs torch | vs onnxruntime |",
        "|---|---|---|---|---|---|---|",
        "| digits-gan | 1 | 3,788 | 7,036 | 7,445 | 1.97× | 1.06× |",
        "| digits-gan | 64 | 53,892 | 74,851 | 77,682 | 1.44× | 1.04× |"]
    assert made["text m"].splitlines() == [
        "| system | batch 1 | batch 8 |", "|---|---|---|",
        "| Hugging Face `generate` (PyTorch eager) | 36.8 (1.00×) | 102 (1.00×) |",
        "| **aigc_engine native, float32** | 55.4 (1.50×) | 2,264 (22.16×) |"]
    assert made["serve"].splitlines()[2:] == [
        "| 1 | 4 | 26.3 | 1,681 | 4,450 | 0.38 | 7 ms | 9 ms | 0.03 s | 0.06 s | 0 |",
        "| 16 | 64 | 63.2 | 4,047 | 6,168 | 0.66 | 34 ms | 41 ms | 0.25 s | 0.29 s | 0 |"]
    assert made["kernels"].splitlines()[2:] == [
        "| attention_prefill | seq 512 | aigc fp32 200 GFLOP/s | torch SDPA fp32 100 GFLOP/s | 2.00× |",
        "| sample | batch 64, vocab 50257 | aigc sample 1.2 ms | torch top-k first 4.8 ms | 4.00× |"]


def test_readme_tables_replaces_the_marked_tables(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Speed\n<!-- bench-table images -->\n| old |\n|---|\n<!-- /bench-table -->\nprose stays\n"
                      "<!-- bench-table text other -->\n| untouched |\n<!-- /bench-table -->\n")
    result = subprocess.run([sys.executable, BENCHMARKS / "readme_tables.py", SMALL, "--readme", readme],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = readme.read_text()
    assert "| old |" not in text and "| digits-gan | 64 | 53,892 | 74,851 | 77,682 | 1.44× | 1.04× |" in text
    assert "prose stays" in text and "| untouched |" in text
    assert "replaced images; no marked table for text m, serve, kernels" in result.stderr


def test_gemm_peak_needs_a_thread_count_it_can_set(monkeypatch):
    pytest.importorskip("threadpoolctl")
    assert common.gemm_peak_flops(2, size=64) > 0
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    assert common.gemm_peak_flops(2, size=64) is None
    assert common.peak_share(50e9, None) == "-" and common.peak_share(50e9, 200e9) == "25.0%"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")  # the scripts, not their modules
                                          if 'if __name__ == "__main__":' in p.read_text()))
def test_help_shows_the_whole_description(script):
    result = subprocess.run([sys.executable, BENCHMARKS / script, "--help"], capture_output=True, text=True,
                            timeout=120, cwd=BENCHMARKS)
    assert result.returncode == 0, result.stderr
    first_paragraph = (BENCHMARKS / script).read_text().split('"""')[1].split("\n\n")[0]
    assert first_paragraph in result.stdout
    if script != "readme_tables.py":
        assert "--csv" in result.stdout and "--plot" in result.stdout


def test_the_readme_marks_the_tables_the_script_makes(records):
    readme = (ROOT / "README.md").read_text()
    made = readme_tables.tables(records)
    for key in ("images", "serve"):
        block = readme.split(f"<!-- bench-table {key} -->\n", 1)[1].split("<!-- /bench-table -->", 1)[0]
        assert block.splitlines()[:2] == made[key].splitlines()[:2]  # same columns
    for model in ("gpt2-small", "pycode-gpt"):
        assert f"<!-- bench-table text {model} -->\n| system | batch 1 | batch 8 | batch 32 |" in readme
