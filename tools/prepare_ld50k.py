#!/usr/bin/env python
"""Unpack LandDiscover50K's split zip archive into <root>/LandDiscover50K/{TR_Image,GT_ID}.

The GSNet authors release LandDiscover50K as a split zip archive: LD50KSplit.z01 ..
LD50KSplit.z13 and LD50KSplit.zip (the last part, which holds the central directory).
Concatenating the parts with ``cat`` does NOT give a valid zip: the first part starts with a
split signature, and every entry's offset is relative to the part (the "disk") that holds it.
This tool needs no zip/7z program: it reads the central directory from the .zip (ZIP64
aware), maps each entry's (disk number, offset) to its part, and extracts stored and deflated
entries, checking every CRC-32.

Layout: the archive's folder that holds TR_Image/ and GT_ID/ (whatever its name, e.g.
LD50KSplit/) becomes <root>/LandDiscover50K/; entries outside it keep their path under
LandDiscover50K/ and __MACOSX/ entries are skipped. Existing files are never overwritten unless
--overwrite: a file of the entry's size is taken as already extracted (so an interrupted run can
be resumed), a file of another size is reported. Files are written under a temporary name and
renamed once their CRC is verified. At the end the image/label pairs are counted (51,846 for
the full set).

    python tools/prepare_ld50k.py /downloads/LD50KSplit.zip --root datasets
"""

import argparse
import os
import re
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from gsnet.data.datasets import dataset_root_from_env, get_dataset_spec, list_image_label_pairs
from gsnet.errors import InputFileError, add_debug_flag, reporting_user_errors

EXPECTED_PAIRS = 51_846
SPEC = get_dataset_spec("LandDiscover_50K")
DATASET_DIR = SPEC.image_dir.split("/")[0]  # "LandDiscover50K"
ARCHIVE_FOLDERS = tuple(d.split("/")[-1] for d in (SPEC.image_dir, SPEC.label_dir))
SKIPPED_TOP_FOLDERS = ("__MACOSX",)  # resource forks added by macOS' archiver

# PKWARE APPNOTE signatures and record layouts (little-endian).
SPLIT_SIGNATURE = b"PK\x07\x08"  # at the start of the first part of a split archive
EOCD = (b"PK\x05\x06", struct.Struct("<4s4H2LH"))  # end of central directory
ZIP64_LOCATOR = (b"PK\x06\x07", struct.Struct("<4sLQL"))
ZIP64_EOCD = (b"PK\x06\x06", struct.Struct("<4sQ2H2L4Q"))
CENTRAL_HEADER = (b"PK\x01\x02", struct.Struct("<4s6H3L5H2L"))
LOCAL_HEADER = (b"PK\x03\x04", struct.Struct("<4s5H3L2H"))
ZIP64_EXTRA_ID = 0x0001
MAX_COMMENT = 0xFFFF
FLAG_ENCRYPTED = 0x1
FLAG_UTF8 = 0x800
STORED, DEFLATED = 0, 8
CHUNK = 1 << 20


class ArchiveError(InputFileError):
    """The archive cannot be read; the message says what and how to fix it."""


@dataclass
class Entry:
    """One central-directory record (sizes and offsets after ZIP64 extension)."""

    name: str
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    disk: int
    offset: int

    @property
    def is_dir(self):
        return self.name.endswith("/")


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


def read_end_record(zip_path):
    """Read the end-of-central-directory record (and the ZIP64 locator) of the last part.

    Returns:
        dict: cd_disk, num_entries, cd_size, cd_offset (the central directory's first disk,
        entry count, size and offset in that disk), zip64_locator ((disk, offset) of the ZIP64
        end record, which then supersedes those values, or None) and num_disks.
    """
    signature, layout = EOCD
    size = zip_path.stat().st_size
    with open(zip_path, "rb") as f:
        tail_start = max(0, size - layout.size - MAX_COMMENT)
        f.seek(tail_start)
        tail = f.read()
    position = tail.rfind(signature)
    while position >= 0:
        fits = position + layout.size <= len(tail)
        fields = layout.unpack_from(tail, position) if fits else None
        if fields and position + layout.size + fields[7] == len(tail):
            break
        position = tail.rfind(signature, 0, position)
    else:
        raise ArchiveError(
            f"{zip_path} has no end-of-central-directory record: it is not the last part of a "
            "zip archive, or it is truncated (download it again)."
        )
    _, this_disk, cd_disk, _, num_entries, cd_size, cd_offset, _ = fields
    end = {
        "cd_disk": cd_disk,
        "num_entries": num_entries,
        "cd_size": cd_size,
        "cd_offset": cd_offset,
        "zip64_locator": None,
        "num_disks": this_disk + 1,
    }
    locator_signature, locator_layout = ZIP64_LOCATOR
    locator_position = position - locator_layout.size
    if locator_position >= 0 and tail[locator_position : locator_position + 4] == locator_signature:
        _, disk, offset, num_disks = locator_layout.unpack_from(tail, locator_position)
        end["zip64_locator"] = (disk, offset)
        end["num_disks"] = num_disks
    elif 0xFFFF in (this_disk, cd_disk, num_entries) or 0xFFFFFFFF in (cd_size, cd_offset):
        raise ArchiveError(
            f"{zip_path} needs a ZIP64 end record, which is missing: the part is damaged or "
            "truncated (download it again)."
        )
    return end


def find_parts(zip_path, num_disks):
    """The parts in disk order; ArchiveError listing the missing ones."""
    parts, missing = [], []
    for disk in range(num_disks - 1):
        candidates = [_part_path(zip_path, disk), _part_path(zip_path, disk, upper=True)]
        part = next((c for c in candidates if c.is_file()), None)
        if part is None:
            missing.append(candidates[0].name)
        parts.append(part)
    if missing:
        expected = zip_path.name
        if num_disks > 1:
            first, last = _part_path(zip_path, 0).name, _part_path(zip_path, num_disks - 2).name
            expected = f"{first} .. {last} and {zip_path.name}"
        raise ArchiveError(
            f"Missing {len(missing)} of the {num_disks} parts in {zip_path.parent}: "
            f"{', '.join(missing)}. The archive consists of {expected}; download the missing "
            "parts into the same folder."
        )
    return parts + [zip_path]


class SplitArchive:
    """The parts of a split archive, read as one byte stream addressed by (disk, offset)."""

    def __init__(self, parts):
        self.parts = list(parts)
        sizes = [p.stat().st_size for p in self.parts]
        self.starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.total = sum(sizes)
        self._files = [open(p, "rb") for p in self.parts]  # closed by close()

    def close(self):
        for f in self._files:
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def position(self, disk, offset):
        """The stream position of (disk, offset), checked to lie inside the archive."""
        if not 0 <= disk < len(self.parts) or self.starts[disk] + offset > self.total:
            raise ArchiveError(
                f"The central directory points at disk {disk}, offset {offset}, outside the "
                f"{len(self.parts)} parts: a part is truncated or from another archive."
            )
        return self.starts[disk] + offset

    def chunks(self, position, size):
        """Yield ``size`` bytes from ``position`` on, across part boundaries."""
        while size > 0:
            disk = max(i for i, start in enumerate(self.starts) if start <= position)
            f = self._files[disk]
            f.seek(position - self.starts[disk])
            data = f.read(min(size, CHUNK))
            if not data:
                raise ArchiveError(
                    f"Unexpected end of data in {self.parts[disk].name}: a part is truncated "
                    "(download it again)."
                )
            position += len(data)
            size -= len(data)
            yield data

    def read(self, position, size):
        return b"".join(self.chunks(position, size))


def _zip64_values(extra, wanted):
    """Values of the ZIP64 extra field, for the ``wanted`` (name, byte size) fields in order."""
    position = 0
    while position + 4 <= len(extra):
        header_id, data_size = struct.unpack_from("<2H", extra, position)
        if header_id == ZIP64_EXTRA_ID:
            data, values, cursor = extra[position + 4 : position + 4 + data_size], {}, 0
            for name, size in wanted:
                values[name] = int.from_bytes(data[cursor : cursor + size], "little")
                cursor += size
            return values
        position += 4 + data_size
    raise ArchiveError("A ZIP64 entry lacks its ZIP64 extra field: the archive is damaged.")


def read_central_directory(archive, end):
    """All entries of the central directory (ZIP64 aware)."""
    cd_disk, num_entries, cd_size, cd_offset = (
        end["cd_disk"],
        end["num_entries"],
        end["cd_size"],
        end["cd_offset"],
    )
    if end["zip64_locator"] is not None:
        signature, layout = ZIP64_EOCD
        record = archive.read(archive.position(*end["zip64_locator"]), layout.size)
        if record[:4] != signature:
            raise ArchiveError("The ZIP64 end record is not where its locator says: damaged.")
        _, _, _, _, _, cd_disk, _, num_entries, cd_size, cd_offset = layout.unpack(record)
    data = archive.read(archive.position(cd_disk, cd_offset), cd_size)
    signature, layout = CENTRAL_HEADER
    entries, position = [], 0
    for _ in range(num_entries):
        if data[position : position + 4] != signature:
            raise ArchiveError(
                f"Central directory record {len(entries)} is damaged (bad signature)."
            )
        fields = layout.unpack_from(data, position)
        flags, method, crc, csize, size, name_len, extra_len, comment_len, disk = (
            fields[3],
            fields[4],
            fields[7],
            fields[8],
            fields[9],
            fields[10],
            fields[11],
            fields[12],
            fields[13],
        )
        offset = fields[16]
        start = position + layout.size
        raw_name = data[start : start + name_len]
        extra = data[start + name_len : start + name_len + extra_len]
        wanted = [
            (key, width)
            for key, value, limit, width in (
                ("size", size, 0xFFFFFFFF, 8),
                ("compressed_size", csize, 0xFFFFFFFF, 8),
                ("offset", offset, 0xFFFFFFFF, 8),
                ("disk", disk, 0xFFFF, 4),
            )
            if value == limit
        ]
        values = _zip64_values(extra, wanted) if wanted else {}
        name = raw_name.decode("utf-8" if flags & FLAG_UTF8 else "cp437").replace("\\", "/")
        entries.append(
            Entry(
                name=name,
                flags=flags,
                method=method,
                crc=crc,
                compressed_size=values.get("compressed_size", csize),
                size=values.get("size", size),
                disk=values.get("disk", disk),
                offset=values.get("offset", offset),
            )
        )
        position = start + name_len + extra_len + comment_len
    return entries


def _safe_parts(name):
    parts = name.rstrip("/").split("/")
    if (
        name.startswith("/")
        or re.match(r"^[A-Za-z]:", name)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ArchiveError(f"Entry {name!r} has an unsafe path; refusing to extract it.")
    return parts


def plan_destinations(entries, output_root):
    """Where each entry goes.

    Returns:
        (dict[str, Path], str): entry name -> destination, and a sentence describing the mapping.
    """
    prefixes, top_level = set(), set()
    for entry in entries:
        parts = _safe_parts(entry.name)
        top_level.add(parts[0] + ("/" if len(parts) > 1 or entry.is_dir else ""))
        folders = parts if entry.is_dir else parts[:-1]
        for folder in ARCHIVE_FOLDERS:
            if folder in folders:
                prefixes.add(tuple(folders[: folders.index(folder)]))
    if len(prefixes) != 1:
        found = "no" if not prefixes else " and ".join("/".join(p) + "/" for p in sorted(prefixes))
        raise ArchiveError(
            f"Expected one folder holding {' and '.join(ARCHIVE_FOLDERS)} in the archive, found "
            f"{found}. Top-level entries: {', '.join(sorted(top_level))}."
        )
    prefix = prefixes.pop()
    dataset_dir = Path(output_root) / DATASET_DIR
    destinations = {}
    for entry in entries:
        parts = _safe_parts(entry.name)
        if parts[0] in SKIPPED_TOP_FOLDERS:
            continue
        if tuple(parts[: len(prefix)]) == prefix:
            parts = parts[len(prefix) :]
        destinations[entry.name] = dataset_dir.joinpath(*parts) if parts else dataset_dir
    source = "/".join(prefix) + "/" if prefix else "the archive's top level"
    mapping = (
        f"The archive's top-level entries: {', '.join(sorted(top_level))}. "
        f"{' and '.join(ARCHIVE_FOLDERS)} are in {source}, extracted into {dataset_dir}/."
    )
    return destinations, mapping


def _entry_problem(entry):
    if entry.flags & FLAG_ENCRYPTED:
        return f"{entry.name}: encrypted entries are not supported"
    if entry.method not in (STORED, DEFLATED):
        return (
            f"{entry.name}: compression method {entry.method} is not supported (only stored "
            "and deflate); extract this entry with 7-Zip"
        )
    return None


def _extract_entry(archive, entry, destination, progress):
    """Write one file entry to ``destination`` (via a temporary file); None or a problem."""
    signature, layout = LOCAL_HEADER
    position = archive.position(entry.disk, entry.offset)
    header = archive.read(position, layout.size)
    if header[:4] != signature:
        return f"{entry.name}: no local header at disk {entry.disk}, offset {entry.offset}"
    name_len, extra_len = layout.unpack(header)[-2:]
    data_start = position + layout.size + name_len + extra_len
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS) if entry.method == DEFLATED else None
    temporary = destination.with_name(destination.name + ".part")
    destination.parent.mkdir(parents=True, exist_ok=True)
    crc, written = 0, 0
    with open(temporary, "wb") as out:
        for chunk in archive.chunks(data_start, entry.compressed_size):
            data = decompressor.decompress(chunk) if decompressor else chunk
            out.write(data)
            crc = zlib.crc32(data, crc)
            written += len(data)
            progress.update(len(data))
        if decompressor:
            data = decompressor.flush()
            out.write(data)
            crc = zlib.crc32(data, crc)
            written += len(data)
    if written != entry.size or crc != entry.crc:
        temporary.unlink()
        return (
            f"{entry.name}: CRC/size check failed ({written} bytes, CRC {crc:08x}; expected "
            f"{entry.size} bytes, CRC {entry.crc:08x}): a part is damaged, download it again"
        )
    os.replace(temporary, destination)
    return None


def extract(archive, entries, destinations, overwrite):
    """Extract every planned entry.

    Returns:
        dict: counts "extracted", "skipped" and lists "conflicts", "errors".
    """
    result = {"extracted": 0, "skipped": 0, "conflicts": [], "errors": []}
    files = [e for e in entries if e.name in destinations and not e.is_dir]
    for entry in entries:
        if entry.is_dir and entry.name in destinations:
            destinations[entry.name].mkdir(parents=True, exist_ok=True)
    with tqdm(total=sum(e.size for e in files), unit="B", unit_scale=True, desc="extract") as bar:
        for entry in files:
            destination = destinations[entry.name]
            problem = _entry_problem(entry)
            if problem is None and destination.exists() and not overwrite:
                if destination.is_file() and destination.stat().st_size == entry.size:
                    result["skipped"] += 1
                    bar.update(entry.size)
                    continue
                problem = f"{destination} exists with different content (use --overwrite)"
                result["conflicts"].append(problem)
                continue
            problem = problem or _extract_entry(archive, entry, destination, bar)
            if problem:
                result["errors"].append(problem)
            else:
                result["extracted"] += 1
    return result


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
        zip_path = find_last_part(args.archive)
        end = read_end_record(zip_path)
        parts = find_parts(zip_path, end["num_disks"])
        print(f"Archive: {len(parts)} part(s), last {zip_path}")
        sizes = {p.stat().st_size for p in parts[:-1]}
        if len(sizes) > 1:
            print(
                "WARNING: the parts before the last differ in size "
                f"({', '.join(f'{p.name} {p.stat().st_size}' for p in parts[:-1])}); "
                "a smaller one may be an incomplete download."
            )
        with SplitArchive(parts) as archive:
            entries = read_central_directory(archive, end)
            destinations, mapping = plan_destinations(entries, args.root)
            print(f"{len(entries)} entries. {mapping}")
            result = extract(archive, entries, destinations, args.overwrite)
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
