"""tools/prepare_ld50k.py on split zip archives written by the test itself.

A split archive (PKWARE APPNOTE, "split" zip): the byte stream is a split signature
(0x08074b50) followed by the local headers and data of every entry, cut into parts of a fixed
size (name.z01, name.z02, ...); the last part (name.zip) holds the rest of the stream, the
central directory and the end records. Every central-directory record gives the part ("disk")
holding its local header and the header's offset within that part; the end record gives the
number of the last disk, and the disk and in-disk offset of the central directory.
"""

import io
import os
import shutil
import struct
import subprocess
import sys
import zipfile

import pytest

SPLIT_SIGNATURE = b"PK\x07\x08"


def write_split_zip(folder, files, *, part_size=700, zip64=False, stem="LD50KSplit"):
    """Write ``files`` ({name: bytes}) as a split archive; return the parts in disk order.

    Entries alternate between deflate and stored. With ``zip64``, the central directory keeps
    each entry's disk and offset in a ZIP64 extra field and the end record is ZIP64.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, (name, data) in enumerate(files.items()):
            method = zipfile.ZIP_DEFLATED if i % 2 == 0 else zipfile.ZIP_STORED
            archive.writestr(name, data, compress_type=method)
    raw = buffer.getvalue()
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        infos = archive.infolist()
        local_end = archive.start_dir
    stream = SPLIT_SIGNATURE + raw[:local_end]
    chunks = [stream[i : i + part_size] for i in range(0, len(stream), part_size)]
    last_disk = len(chunks) - 1

    central = b""
    for info in infos:
        disk, offset = divmod(info.header_offset + len(SPLIT_SIGNATURE), part_size)
        name = info.filename.encode()
        extra = b""
        if zip64:
            extra = struct.pack("<2HQL", 0x0001, 12, offset, disk)
            disk, offset = 0xFFFF, 0xFFFFFFFF
        central += (
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                info.flag_bits,
                info.compress_type,
                0,
                0,
                info.CRC,
                info.compress_size,
                info.file_size,
                len(name),
                len(extra),
                0,
                disk,
                0,
                0,
                offset,
            )
            + name
            + extra
        )
    last = chunks[-1]
    cd_offset = len(last)
    end = b""
    count = len(infos)
    if zip64:
        zip64_offset = cd_offset + len(central)
        end += struct.pack(
            "<4sQ2H2L4Q",
            b"PK\x06\x06",
            44,
            45,
            45,
            last_disk,
            last_disk,
            count,
            count,
            len(central),
            cd_offset,
        )
        end += struct.pack("<4sLQL", b"PK\x06\x07", last_disk, zip64_offset, last_disk + 1)
        end += struct.pack(
            "<4s4H2LH", b"PK\x05\x06", 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0
        )
    else:
        end += struct.pack(
            "<4s4H2LH",
            b"PK\x05\x06",
            last_disk,
            last_disk,
            count,
            count,
            len(central),
            cd_offset,
            0,
        )
    parts = [folder / f"{stem}.z{i + 1:02d}" for i in range(last_disk)] + [folder / f"{stem}.zip"]
    for part, chunk in zip(parts[:-1], chunks[:-1]):
        part.write_bytes(chunk)
    parts[-1].write_bytes(last + central + end)
    return parts


def dataset_files(prefix="LD50KSplit/", count=4):
    """Pairs of (pseudo-)images and labels, compressible and not, spanning several parts."""
    files = {}
    for i in range(count):
        files[f"{prefix}TR_Image/img_{i}.png"] = bytes((i * 7 + j * j) % 256 for j in range(900))
        files[f"{prefix}GT_ID/img_{i}.png"] = bytes([i]) * 500
    return files


@pytest.fixture
def tool(load_tool):
    return load_tool("prepare_ld50k")


def extracted(root):
    base = root / "LandDiscover50K"
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


@pytest.mark.parametrize("zip64", [False, True])
def test_extracts_a_split_archive(tool, tmp_path, capsys, zip64):
    files = dataset_files()
    parts = write_split_zip(tmp_path, files, zip64=zip64)
    assert len(parts) >= 5
    assert tool.main([str(parts[-1]), "--root", str(tmp_path / "out")]) == 0
    expected = {name.removeprefix("LD50KSplit/"): data for name, data in files.items()}
    assert extracted(tmp_path / "out") == expected
    out = capsys.readouterr().out
    assert "LD50KSplit/" in out and "4 image/label pairs" in out
    assert "WARNING: the full LandDiscover50K has 51846 pairs, found 4" in out


def test_archive_without_top_folder(tool, tmp_path):
    write_split_zip(tmp_path, dataset_files(prefix=""))
    assert tool.main([str(tmp_path), "--root", str(tmp_path / "out")]) == 0
    assert "TR_Image/img_3.png" in extracted(tmp_path / "out")


def test_missing_parts_are_named(tool, tmp_path, capsys):
    parts = write_split_zip(tmp_path, dataset_files())
    parts[1].unlink()
    parts[3].unlink()
    with pytest.raises(SystemExit) as raised:
        tool.main([str(parts[-1]), "--root", str(tmp_path / "out")])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "Missing 2 of the" in err and "LD50KSplit.z02, LD50KSplit.z04" in err
    assert not (tmp_path / "out").exists()


def test_corrupted_data_fails_the_crc(tool, tmp_path, capsys):
    files = {
        "TR_Image/a.png": b"a" * 300,
        "TR_Image/b.png": bytes(range(256)) * 2,
        "GT_ID/a.png": b"1" * 40,
        "GT_ID/b.png": b"2" * 40,
    }
    parts = write_split_zip(tmp_path, files, part_size=100_000)
    data = bytearray(parts[-1].read_bytes())
    position = data.index(bytes(range(256)))  # b.png is stored: corrupt its data
    data[position + 10] ^= 0xFF
    parts[-1].write_bytes(bytes(data))
    assert tool.main([str(parts[-1]), "--root", str(tmp_path / "out")]) == 1
    assert "TR_Image/b.png: CRC/size check failed" in capsys.readouterr().err
    image_dir = tmp_path / "out/LandDiscover50K/TR_Image"
    assert sorted(p.name for p in image_dir.iterdir()) == ["a.png"]


def test_existing_files_are_kept_unless_overwrite(tool, tmp_path, capsys):
    parts = write_split_zip(tmp_path, dataset_files())
    out = tmp_path / "out"
    assert tool.main([str(parts[-1]), "--root", str(out)]) == 0
    target = out / "LandDiscover50K/GT_ID/img_0.png"
    target.write_bytes(b"mine")
    assert tool.main([str(parts[-1]), "--root", str(out)]) == 1
    assert "exists with different content (use --overwrite)" in capsys.readouterr().err
    assert target.read_bytes() == b"mine"
    assert tool.main([str(parts[-1]), "--root", str(out), "--overwrite"]) == 0
    assert target.read_bytes() == bytes([0]) * 500


def test_resumed_run_skips_complete_files(tool, tmp_path, capsys):
    parts = write_split_zip(tmp_path, dataset_files())
    out = tmp_path / "out"
    tool.main([str(parts[-1]), "--root", str(out)])
    (out / "LandDiscover50K/TR_Image/img_2.png").unlink()
    capsys.readouterr()
    assert tool.main([str(parts[-1]), "--root", str(out)]) == 0
    assert "Extracted 1 file(s); 7 already present" in capsys.readouterr().out


def test_unpaired_files_are_reported(tool, tmp_path, capsys):
    files = dataset_files()
    del files["LD50KSplit/GT_ID/img_1.png"]
    parts = write_split_zip(tmp_path, files)
    assert tool.main([str(parts[-1]), "--root", str(tmp_path / "out")]) == 1
    assert "1 images without a label: img_1.png" in capsys.readouterr().err


def test_archive_without_the_dataset_folders(tool, tmp_path, capsys):
    parts = write_split_zip(tmp_path, {"photos/a.png": b"x" * 10, "notes.txt": b"y"})
    with pytest.raises(SystemExit) as raised:
        tool.main([str(parts[-1]), "--root", str(tmp_path / "out")])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "found no" in err and "notes.txt, photos/" in err


def test_unsafe_paths_are_refused(tool, tmp_path, capsys):
    parts = write_split_zip(tmp_path, {"TR_Image/../../evil.png": b"x", "GT_ID/a.png": b"y"})
    with pytest.raises(SystemExit) as raised:
        tool.main([str(parts[-1]), "--root", str(tmp_path / "out")])
    assert raised.value.code == 2
    assert "unsafe path" in capsys.readouterr().err
    assert not (tmp_path / "evil.png").exists()


@pytest.mark.skipif(shutil.which("zip") is None, reason="Info-ZIP's zip is not installed")
def test_reads_an_info_zip_split_archive(tool, tmp_path):
    source = tmp_path / "src"
    files = {name: os.urandom(30_000) for name in dataset_files()}
    for name, data in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    subprocess.run(
        ["zip", "-q", "-r", "-s", "64k", str(tmp_path / "LD50KSplit.zip"), "LD50KSplit"],
        cwd=source,
        check=True,
    )
    assert (tmp_path / "LD50KSplit.z01").is_file()
    assert tool.main([str(tmp_path / "LD50KSplit.zip"), "--root", str(tmp_path / "out")]) == 0
    expected = {name.removeprefix("LD50KSplit/"): data for name, data in files.items()}
    assert extracted(tmp_path / "out") == expected


def test_entries_outside_the_dataset_folders_are_skipped(tool, tmp_path, capsys):
    files = {**dataset_files(), "__MACOSX/LD50KSplit/._img_0.png": b"fork", "README.txt": b"hi"}
    parts = write_split_zip(tmp_path, files)
    assert tool.main([str(parts[-1]), "--root", str(tmp_path / "out")]) == 0
    assert sorted(extracted(tmp_path / "out")) == sorted(
        name.removeprefix("LD50KSplit/") for name in dataset_files()
    )
    assert "2 file(s) outside them skipped: __MACOSX/LD50KSplit/._img_0.png, README.txt" in (
        capsys.readouterr().out
    )


def _write_unseekable_zip(path, files, method):
    """A zip written to a pipe-like stream: sizes and CRCs follow the data (data descriptors)."""

    class Unseekable(io.RawIOBase):
        def __init__(self, out):
            self.out = out

        def writable(self):
            return True

        def write(self, data):
            return self.out.write(data)

    with open(path, "wb") as out, zipfile.ZipFile(Unseekable(out), "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data, compress_type=method)


def test_a_plain_zip_with_data_descriptors_is_extracted(tool, tmp_path):
    files = dataset_files()
    _write_unseekable_zip(tmp_path / "LD50K.zip", files, zipfile.ZIP_DEFLATED)
    assert tool.main([str(tmp_path / "LD50K.zip"), "--root", str(tmp_path / "out")]) == 0
    expected = {name.removeprefix("LD50KSplit/"): data for name, data in files.items()}
    assert extracted(tmp_path / "out") == expected


def test_stored_entries_with_data_descriptors_name_7zip(tool, tmp_path, capsys):
    _write_unseekable_zip(tmp_path / "LD50K.zip", dataset_files(), zipfile.ZIP_STORED)
    with pytest.raises(SystemExit) as raised:
        tool.main([str(tmp_path / "LD50K.zip"), "--root", str(tmp_path / "out")])
    assert raised.value.code == 2
    assert "cannot be read as a stream; extract the archive with 7-Zip" in capsys.readouterr().err


def test_a_truncated_part_is_reported(tool, tmp_path, capsys):
    parts = write_split_zip(tmp_path, dataset_files())
    parts[2].write_bytes(parts[2].read_bytes()[:300])
    assert tool.main([str(parts[-1]), "--root", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "differ in size (LD50KSplit.z01 700, LD50KSplit.z02 700, LD50KSplit.z03 300" in (
        captured.out
    )
    assert "TR_Image/img_2.png: CRC/size check failed" in captured.err
    assert "extraction stopped at this entry" in captured.err
    assert not list((tmp_path / "out").rglob("*.part"))


def test_without_stream_unzip_the_fix_is_named(tool, tmp_path, capsys, monkeypatch):
    parts = write_split_zip(tmp_path, dataset_files())
    monkeypatch.setitem(sys.modules, "stream_unzip", None)
    with pytest.raises(SystemExit) as raised:
        tool.main([str(parts[-1]), "--root", str(tmp_path / "out")])
    assert raised.value.code == 2
    assert "pip install -e '.[data]'" in capsys.readouterr().err


def test_a_part_from_another_archive_is_reported(tool, tmp_path, capsys):
    parts = write_split_zip(tmp_path, dataset_files())
    parts[0].write_bytes(SPLIT_SIGNATURE + bytes(len(parts[0].read_bytes()) - 4))
    with pytest.raises(SystemExit) as raised:
        tool.main([str(parts[-1]), "--root", str(tmp_path / "out")])
    assert raised.value.code == 2
    assert "cannot be read at its first entry (UnexpectedSignatureError)" in (
        capsys.readouterr().err
    )


def test_an_unwritable_root_is_one_line(tool, tmp_path, capsys):
    parts = write_split_zip(tmp_path, dataset_files())
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as raised:
        tool.main([str(parts[-1]), "--root", str(tmp_path / "a_file" / "root")])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "prepare_ld50k.py: error: Cannot write " in err and "Traceback" not in err
