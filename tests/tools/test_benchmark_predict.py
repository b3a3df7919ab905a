"""tools/benchmark_predict.py on the toy configuration: the report has every field (no timing
asserted), and bad arguments are one-line errors."""

import json

import pytest


def test_the_report_has_a_row_per_scene_size(load_tool, tmp_path, repo_root, capsys):
    tool = load_tool("benchmark_predict")
    out = tmp_path / "report.json"
    argv = ["--config", f"{repo_root}/configs/toy.yaml", "--sizes", "96", "--json", str(out)]
    assert tool.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["tile_size"] > 0 and report["startup_s"] > 0
    (result,) = report["results"]
    assert result["side"] == 96 and result["megapixels"] == pytest.approx(96 * 96 / 1e6)
    assert result["wall_s"] > 0 and result["peak_rss_mib"] > 0
    assert "| 96 x 96 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--sizes", "8"], "--sizes must be at least 64 pixels"),
        (["--config", "missing.yaml"], "--config missing.yaml: no such file"),
        (["--json", "no/such/folder/r.json"], "its folder does not exist"),
        (["MODEL.NOT_A_KEY", "1"], "benchmark_predict.py: error: The config does not load"),
    ],
)
def test_bad_arguments_are_one_line_errors(load_tool, capsys, arguments, message):
    tool = load_tool("benchmark_predict")
    with pytest.raises(SystemExit) as exit_info:
        tool.main(arguments)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_failing_predict_run_is_named_with_its_error(load_tool, tmp_path, repo_root, capsys):
    failing = tmp_path / "predict.py"
    failing.write_text(
        "import sys\nsys.stderr.write('predict.py: error: the scene is unreadable\\n')\n"
        "sys.exit(2)\n"
    )
    tool = load_tool("benchmark_predict")
    argv = ["--config", f"{repo_root}/configs/toy.yaml", "--predict-script", str(failing)]
    with pytest.raises(SystemExit) as exit_info:
        tool.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "benchmark_predict.py: error: predict.py failed on tiny.tif: "
        "predict.py: error: the scene is unreadable"
    )
