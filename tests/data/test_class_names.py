"""Reading class-name JSON files: the published lists and clear errors for broken files."""

import json

import pytest

from gsnet.data.class_names import CLASS_JSON_DIR, load_class_names, resolve_config_path


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "file, count, first",
    [
        ("landdiscover.json", 40, "background"),
        ("floodnet.json", 10, "Background"),
        ("flair.json", 12, "building"),
        ("fast.json", 37, "A220"),
        ("potsdam.json", 5, "impervious surface"),
    ],
)
def test_published_lists_load(file, count, first):
    names = load_class_names(CLASS_JSON_DIR / file)
    assert len(names) == count
    assert names[0] == first


def test_published_typos_are_kept():
    names = load_class_names(CLASS_JSON_DIR / "landdiscover.json")
    assert "expresswalltoll station" in names


def test_missing_file_lists_places_looked_at(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json") as info:
        load_class_names(tmp_path / "nope.json")
    assert "Looked at" in str(info.value)


def test_invalid_json_gives_line_and_column(tmp_path):
    file = write(tmp_path / "bad.json", '["a",\n "b" "c"]')
    with pytest.raises(ValueError, match=r"line 2, column 6") as info:
        load_class_names(file)
    assert str(file) in str(info.value)


def test_not_a_list(tmp_path):
    with pytest.raises(ValueError, match="dict, not a list"):
        load_class_names(write(tmp_path / "d.json", json.dumps({"a": 1})))


def test_empty_list(tmp_path):
    with pytest.raises(ValueError, match="empty list"):
        load_class_names(write(tmp_path / "e.json", "[]"))


@pytest.mark.parametrize("entries, index", [(["a", 3], 1), (["a", "b", ""], 2), (["  "], 0)])
def test_entries_must_be_non_empty_strings(tmp_path, entries, index):
    with pytest.raises(ValueError, match=f"entry {index} is"):
        load_class_names(write(tmp_path / "n.json", json.dumps(entries)))


@pytest.mark.parametrize("entries", [["tree", "road", "tree"], ["Tree", "road", "tree"]])
def test_duplicates_are_refused(tmp_path, entries):
    with pytest.raises(ValueError, match="entry 2 .* repeats entry 0"):
        load_class_names(write(tmp_path / "dup.json", json.dumps(entries)))


def test_relative_path_falls_back_to_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("datasets/potsdam.json") == CLASS_JSON_DIR / "potsdam.json"
    assert load_class_names("datasets/potsdam.json")[-1] == "car"


def test_relative_path_prefers_current_directory(tmp_path, monkeypatch):
    (tmp_path / "datasets").mkdir()
    write(tmp_path / "datasets" / "potsdam.json", '["only"]')
    monkeypatch.chdir(tmp_path)
    assert load_class_names("datasets/potsdam.json") == ["only"]
