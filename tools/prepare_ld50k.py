#!/usr/bin/env python
"""Unpack LandDiscover50K's split zip archive into <root>/LandDiscover50K/{TR_Image,GT_ID}.

The GSNet authors release LandDiscover50K as a split zip archive: LD50KSplit.z01 ..
LD50KSplit.z13 and LD50KSplit.zip, the last part. Read in order, after the split marker that
starts the first part, the parts hold every entry's local header and data one after the other.
stream-unzip (the ``data`` extra) reads that stream: it decompresses every entry (stored,
deflate, deflate64, ZIP64) and checks its CRC-32. This tool adds what it does not do:
- it finds the parts, and names the missing ones (from the count in the last part's end
  record) before anything is written;
- it lays the entries out as the dataset registration expects: everything under a folder
  TR_Image/ or GT_ID/ of the archive (wherever that folder is, e.g. LD50KSplit/TR_Image/) goes
  to <root>/LandDiscover50K/TR_Image/ or GT_ID/; other entries (__MACOSX/ resource forks,
  read-me files) are skipped and counted;
- it keeps what is already there: an existing file of the entry's size is taken as already
  extracted, so an interrupted run can be resumed (its data are still read through, to reach
  the next entry); a file of another size is reported and kept, unless --overwrite;
- it writes each file under a temporary name, renamed once its CRC-32 is verified;
- at the end it counts the image/label pairs (51,846 for the full set).

    python tools/prepare_ld50k.py /downloads/LD50KSplit.zip --root datasets
"""

import argparse
import os
import re
import struct
import sys
from pathlib import Path

from tqdm import tqdm

from gsnet.data.datasets import dataset_root_from_env, get_dataset_spec, list_image_label_pairs
from gsnet.errors import (
    InputFileError,
    add_debug_flag,
    output_write_errors,
    reporting_user_errors,
)

EXPECTED_PAIRS = 51_846
SPEC = get_dataset_spec("LandDiscover_50K")
DATASET_DIR = SPEC.image_dir.split("/")[0]  # "LandDiscover50K"
ARCHIVE_FOLDERS = tuple(d.split("/")[-1] for d in (SPEC.image_dir, SPEC.label_dir))

# PKWARE APPNOTE: the first part of a split archive starts with a split marker ("PK00" when
# the archive turned out to need one part only); the last part ends with the end record,
# preceded by the ZIP64 locator (which then holds the number of parts) in a ZIP64 archive.
SPLIT_MARKERS = (b"PK\x07\x08", b"PK00")
END_RECORD, END_RECORD_SIZE, MAX_COMMENT = b"PK\x05\x06", 22, 0xFFFF
ZIP64_LOCATOR, ZIP64_LOCATOR_SIZE = b"PK\x06\x07", 20
CHUNK = 1 << 20


class ArchiveError(InputFileError):
    """The archive cannot be read; the message says what and how to fix it."""


def _part_path(zip_path, disk, upper=False):
    """The part holding ``disk`` (0-based) of a split archive whose last part is ``zip_path``."""
    return zip_path.with_suffix(f".{'Z' if upper else 'z'}{disk + 1:02d}")


def find_last_part(archive):
    """The .zip part, given the .zip, any .zNN part, or the folder holding them."""
    archive = Path(archive)
    if archive.is_dir():
        zips = sorted(archive.glob("*.zip")) + sorted(archive.glob("*.ZIP"))
        if len(zips) != 1:
            found = ", ".join(z.name for z in zips) or "none"
            raise ArchiveError(
                f"{archive} must hold exactly one .zip part (found: {found}); pass the .zip "
                "part itself, e.g. LD50KSplit.zip."
            )
        return zips[0]
    if re.fullmatch(r"\.z\d+", archive.suffix, flags=re.IGNORECASE):
        archive = archive.with_suffix(".zip")
    if not archive.is_file():
        raise ArchiveError(
            f"{archive} does not exist. Pass the last part of the split archive "
            "(LD50KSplit.zip), with LD50KSplit.z01 .. .z13 in the same folder."
        )
    return archive


def count_parts(zip_path):
    """The number of parts, as the end record of the last part (or its ZIP64 locator) says."""
    size = zip_path.stat().st_size
    with open(zip_path, "rb") as f:
        f.seek(max(0, size - END_RECORD_SIZE - MAX_COMMENT))
        tail = f.read()
    position = tail.rfind(END_RECORD)
    if position < 0 or position + END_RECORD_SIZE > len(tail):
        raise ArchiveError(
            f"{zip_path} has no end-of-central-directory record: it is not the last part of a "
            "zip archive, or it is truncated (download it again)."
        )
    locator = position - ZIP64_LOCATOR_SIZE
    if locator >= 0 and tail.startswith(ZIP64_LOCATOR, locator):
        return struct.unpack_from("<L", tail, locator + 16)[0]
    return struct.unpack_from("<H", tail, position + 4)[0] + 1


def find_parts(zip_path, num_parts):
    """The parts in order; ArchiveError listing the missing ones."""
    parts, missing = [], []
    for disk in range(num_parts - 1):
        candidates = [_part_path(zip_path, disk), _part_path(zip_path, disk, upper=True)]
        part = next((c for c in candidates if c.is_file()), None)
        if part is None:
            missing.append(candidates[0].name)
        parts.append(part)
    if missing:
        expected = zip_path.name
        if num_parts > 1:
            first, last = _part_path(zip_path, 0).name, _part_path(zip_path, num_parts - 2).name
            expected = f"{first} .. {last} and {zip_path.name}"
        raise ArchiveError(
            f"Missing {len(missing)} of the {num_parts} parts in {zip_path.parent}: "
            f"{', '.join(missing)}. The archive consists of {expected}; download the missing "
            "parts into the same folder."
        )
    return parts + [zip_path]


def archive_stream(parts, progress):
    """The parts' bytes in order, less the split marker: what stream-unzip reads."""
    for index, part in enumerate(parts):
        with open(part, "rb") as f:
            if index > 0 or f.read(4) not in SPLIT_MARKERS:
                f.seek(0)
            while chunk := f.read(CHUNK):
                progress.update(len(chunk))
                yield chunk


def _safe_parts(name):
    parts = name.rstrip("/").split("/")
    if (
        name.startswith("/")
        or re.match(r"^[A-Za-z]:", name)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ArchiveError(f"Entry {name!r} has an unsafe path; refusing to extract it.")
    return parts


def place(name, dataset_dir):
    """(destination, the archive folder above TR_Image/ or GT_ID/) of an entry; (None, None)
    for a directory or an entry outside those folders."""
    parts = _safe_parts(name)
    if not name.endswith("/"):
        for depth, folder in enumerate(parts[:-1]):
            if folder in ARCHIVE_FOLDERS:
                return dataset_dir.joinpath(*parts[depth:]), "/".join(parts[:depth])
    return None, None


def _write(chunks, destination):
    """Write an entry's data to ``destination``, through a temporary file that only a
    complete, CRC-checked entry replaces it with."""
    temporary = destination.with_name(destination.name + ".part")
    fix = "Free space or choose another --root, then rerun: the files already extracted are kept."
    with output_write_errors(fix, path=destination):
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
            os.replace(temporary, destination)
        except BaseException:
            if temporary.exists():
                temporary.unlink()
            raise


def _drain(chunks):
    """Read an entry's data through (stream-unzip reads it before the next entry's header)."""
    return sum(len(chunk) for chunk in chunks)


def extract(stream, dataset_dir, overwrite):
    """Extract the entries of the dataset folders from ``stream`` (the parts' bytes).

    Returns:
        dict: counts "extracted", "skipped" (already present); lists "conflicts", "errors",
        "outside" (files not in the dataset folders), "top_level"; the set "folders" (the
        archive folders above TR_Image/ and GT_ID/).
    """
    import stream_unzip

    result = {"extracted": 0, "skipped": 0, "conflicts": [], "errors": [], "outside": []}
    top_level, folders, name = set(), set(), None
    try:
        for raw_name, _, chunks in stream_unzip.stream_unzip(stream):
            name = raw_name.decode("utf-8", errors="surrogateescape").replace("\\", "/")
            top_level.add(name.split("/")[0] + ("/" if "/" in name else ""))
            destination, folder = place(name, dataset_dir)
            if destination is None:
                if not name.endswith("/"):
                    result["outside"].append(name)
                _drain(chunks)
                continue
            folders.add(folder)
            if destination.exists() and not overwrite:
                size = _drain(chunks)
                if destination.is_file() and destination.stat().st_size == size:
                    result["skipped"] += 1
                else:
                    message = f"{destination} exists with different content (use --overwrite)"
                    result["conflicts"].append(message)
            else:
                _write(chunks, destination)
                result["extracted"] += 1
    except (stream_unzip.IntegrityError, stream_unzip.UncompressError) as error:
        result["errors"].append(
            f"{name}: CRC/size check failed ({type(error).__name__}): a part is damaged, "
            "download it again; extraction stopped at this entry"
        )
    except stream_unzip.UnzipError as error:
        raise ArchiveError(_stream_error_message(error, name)) from error
    result["top_level"], result["folders"] = sorted(top_level), folders
    return result


def _stream_error_message(error, name):
    after = f"after entry {name!r}" if name else "at its first entry"
    kind = type(error).__name__
    if "Password" in kind:
        return f"The archive is encrypted ({kind} {after}); decrypt it first (7-Zip)."
    if kind == "NotStreamUnzippable":
        return (
            f"Entry {error.args[0]!r} is stored with its size after its data, which cannot be "
            "read as a stream; extract the archive with 7-Zip (7z x LD50KSplit.zip)."
        )
    return (
        f"The archive cannot be read {after} ({kind}): a part is truncated, damaged or from "
        "another archive (compare the parts' sizes with the download page, download again)."
    )


def verify(output_root):
    """Count the images, labels and pairs of the extracted dataset.

    Returns:
        (list[str], list[str]): report lines and problems.
    """
    image_root = Path(output_root) / SPEC.image_dir
    label_root = Path(output_root) / SPEC.label_dir
    missing = [str(d) for d in (image_root, label_root) if not d.is_dir()]
    if missing:
        return [], [f"missing folder(s): {', '.join(missing)}"]
    listing = list_image_label_pairs(
        str(image_root), str(label_root), SPEC.image_ext, SPEC.label_ext
    )
    num_pairs = len(listing.pairs)
    lines = [
        f"{image_root}: {num_pairs + len(listing.images_without_label)} *.{SPEC.image_ext}",
        f"{label_root}: {num_pairs + len(listing.labels_without_image)} *.{SPEC.label_ext}",
        f"{num_pairs} image/label pairs",
    ]
    problems = []
    for what, names in (
        ("images without a label", listing.images_without_label),
        ("labels without an image", listing.labels_without_image),
    ):
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            problems.append(f"{len(names)} {what}: {shown}")
    if num_pairs != EXPECTED_PAIRS:
        lines.append(
            f"WARNING: the full LandDiscover50K has {EXPECTED_PAIRS} pairs, found {num_pairs} "
            "(fine for a subset; otherwise some files are missing from the archive)."
        )
    return lines, problems


def describe(result, dataset_dir):
    """What went where, in a sentence; ArchiveError when the dataset folders were not found."""
    folders = sorted(result["folders"])
    if not folders:
        raise ArchiveError(
            f"Expected {' and '.join(ARCHIVE_FOLDERS)} in the archive, found no such folder. "
            f"Top-level entries: {', '.join(result['top_level'])}."
        )
    source = " and ".join(
        f"{folder}/" if folder else "the archive's top level" for folder in folders
    )
    sentence = f"{' and '.join(ARCHIVE_FOLDERS)} of {source} extracted into {dataset_dir}/."
    if result["outside"]:
        shown = ", ".join(result["outside"][:3]) + (", ..." if len(result["outside"]) > 3 else "")
        sentence += f" {len(result['outside'])} file(s) outside them skipped: {shown}."
    return sentence


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "archive", help="LD50KSplit.zip (the last part), any part, or the folder holding them"
    )
    parser.add_argument(
        "--root",
        default=dataset_root_from_env(),
        help="dataset root to extract into (default: $DETECTRON2_DATASETS, else ./datasets)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace files that already exist")
    return add_debug_flag(parser).parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with reporting_user_errors("prepare_ld50k.py", debug=args.debug):
        try:
            import stream_unzip  # noqa: F401
        except ModuleNotFoundError as error:
            raise InputFileError(
                "prepare_ld50k.py reads the archive with stream-unzip, which is not installed: "
                "pip install -e '.[data]' (scripts/setup.sh installs it)."
            ) from error
        zip_path = find_last_part(args.archive)
        parts = find_parts(zip_path, count_parts(zip_path))
        print(f"Archive: {len(parts)} part(s), last {zip_path}")
        sizes = [part.stat().st_size for part in parts]
        if len(set(sizes[:-1])) > 1:
            listed = ", ".join(f"{part.name} {size}" for part, size in zip(parts, sizes[:-1]))
            print(
                f"WARNING: the parts before the last differ in size ({listed}); a smaller one "
                "may be an incomplete download."
            )
        dataset_dir = Path(args.root) / DATASET_DIR
        with tqdm(total=sum(sizes), unit="B", unit_scale=True, desc="extract") as progress:
            result = extract(archive_stream(parts, progress), dataset_dir, args.overwrite)
        print(describe(result, dataset_dir))
    print(
        f"Extracted {result['extracted']} file(s); {result['skipped']} already present "
        "(same size, kept)."
    )
    lines, problems = verify(args.root)
    print("\n".join(lines))
    problems = result["conflicts"] + result["errors"] + problems
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for problem in problems[:20]:
            print(f"  - {problem}", file=sys.stderr)
        if len(problems) > 20:
            print(f"  ... and {len(problems) - 20} more", file=sys.stderr)
        return 1
    print(
        f"LandDiscover50K is ready under {args.root}. Check it: "
        "python tools/check_datasets.py --only LandDiscover_50K"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
