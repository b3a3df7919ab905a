"""tools/benchmark.py on the toy configuration: the report has every field (no timing asserted)."""

import json

import pytest
import torch
from torch import nn

from gsnet.modeling.fast_paths import conv2d_fft, fft_convolution_applies


def test_benchmark_reports_every_phase(load_tool, tmp_path, repo_root):
    benchmark = load_tool("benchmark")
    out = tmp_path / "bench.json"
    benchmark.main(
        [
            "--config",
            f"{repo_root}/configs/toy.yaml",
            "--quick",
            "--no-isolate",
            "--json",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert report["matmul_peak_flops"] > 0
    assert set(report["phases"]) == {"plain", "sliding", "train"}
    assert report["env"]["keep_freed_memory"] is True  # the tools' allocator policy (glibc)
    for result in report["phases"].values():
        assert result["median_s"] > 0 and result["flops"] > 0 and result["peak_memory_gib"] > 0
        assert result["floor_s"] > 0 and result["images_per_s"] > 0


def test_flop_count_of_a_convolution_does_not_depend_on_its_algorithm(load_tool):
    """The fusion's FFT convolution (forward and input gradient) counts as the direct one."""
    benchmark = load_tool("benchmark")
    conv = nn.Conv2d(8, 4, 7, padding=3)
    x = torch.randn(3, 8, 10, 10, requires_grad=True)
    if not fft_convolution_applies(x, conv):
        pytest.skip("NNPACK is not available in this PyTorch build")

    def step(forward):
        forward(x).sum().backward()

    direct = benchmark.count_flops(lambda: step(conv))
    assert direct == 3 * 2 * 3 * 10 * 10 * 4 * 8 * 49  # forward, input and weight gradients
    assert benchmark.count_flops(lambda: step(lambda x: conv2d_fft(conv, x))) == direct


def test_an_error_in_a_phase_process_is_one_line(load_tool, tmp_path, capfd):
    benchmark = load_tool("benchmark")
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--config", str(tmp_path / "missing.yaml"), "--quick"])
    assert exit_info.value.code == 2
    err = capfd.readouterr().err
    assert "benchmark.py: error: Config file not found" in err and "Traceback" not in err
