"""tools/benchmark.py on the toy configuration: the report has every field (no timing asserted)."""

import json


def test_benchmark_reports_every_phase(load_tool, tmp_path, repo_root):
    benchmark = load_tool("benchmark")
    out = tmp_path / "bench.json"
    benchmark.main([
        "--config", f"{repo_root}/configs/toy.yaml", "--quick", "--no-isolate",
        "--json", str(out),
    ])
    report = json.loads(out.read_text())
    assert report["matmul_peak_flops"] > 0
    assert set(report["phases"]) == {"plain", "sliding", "train"}
    for result in report["phases"].values():
        assert result["median_s"] > 0 and result["flops"] > 0 and result["peak_memory_gib"] > 0
        assert result["floor_s"] > 0 and result["images_per_s"] > 0
