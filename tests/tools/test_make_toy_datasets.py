"""tools/make_toy_datasets.py: an unusable --root is a one-line error."""

import pytest


@pytest.mark.parametrize("problem", ["other data", "cannot create"])
def test_the_tool_reports_an_unusable_root_in_one_line(load_tool, tmp_path, capsys, problem):
    if problem == "other data":
        (tmp_path / "FloodNet").mkdir()
        root, message = tmp_path, "refusing to overwrite what may be real data"
    else:
        (tmp_path / "a_file").write_text("")
        root, message = tmp_path / "a_file" / "root", "Cannot create the dataset root"
    with pytest.raises(SystemExit) as exit_info:
        load_tool("make_toy_datasets").main(["--root", str(root), "--num-train", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("make_toy_datasets.py: error: ") and message in err
    assert "Traceback" not in err
