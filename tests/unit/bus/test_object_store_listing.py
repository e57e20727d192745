"""The object store's listings: a folder of files is listed from its sorted names and
cached elements, and that gives exactly what the general walk gives, page by page,
through writes and deletes."""

from __future__ import annotations

import random
from pathlib import Path

from databus.standins.object_store import ObjectFiles, _contents

BUCKET = "tansu"
FOLDER = "clusters/c/topics/t/partitions/0000000000/records/"


def _walked(files: ObjectFiles, prefix: str, after: str, max_keys: int) -> tuple[list[str], bool]:
    objects, _prefixes, truncated = files.list(BUCKET, prefix, None, after, max_keys)
    return [_contents(o.key, o.size, o.mtime) for o in objects], truncated


def _pages(files: ObjectFiles, prefix: str, max_keys: int) -> list[str]:
    """Every element of a listing, page after page as a client pages through it."""
    out: list[str] = []
    after = ""
    while True:
        elements, _prefixes, last = files.listing(BUCKET, prefix, None, after, max_keys)
        walked, truncated = _walked(files, prefix, after, max_keys)
        assert list(elements) == walked
        assert (last is not None) == truncated
        out += elements
        if last is None:
            return out
        after = last


def test_a_folder_listing_equals_the_walk_through_writes_and_deletes(tmp_path: Path) -> None:
    files = ObjectFiles(tmp_path)
    rng = random.Random(7)
    keys = [f"{FOLDER}{offset:020d}.batch" for offset in range(0, 4000, 40)]
    for key in keys[:60]:
        files.put(BUCKET, key, b"x" * rng.randrange(1, 50))
    assert len(_pages(files, FOLDER, 7)) == 60  # the first listing reads and sorts
    for key in keys[60:]:  # appended after the folder was listed
        files.put(BUCKET, key, b"y")
    for key in rng.sample(keys, 25):  # trimmed, anywhere
        files.delete(BUCKET, key)
    files.put(BUCKET, keys[3], b"rewritten")  # a key written again, maybe gone before
    listed = _pages(files, FOLDER, 9)
    kept = sorted(k for k in keys if (tmp_path / BUCKET / k).exists())
    assert [e.split("<Key>")[1].split("</Key>")[0] for e in listed] == kept
    # a start after the whole folder, and before it
    assert files.listing(BUCKET, FOLDER, None, FOLDER + "~", 10)[0] == []
    assert len(files.listing(BUCKET, FOLDER, None, "a", 1000)[0]) == len(kept)


def test_a_prefix_over_subfolders_still_walks(tmp_path: Path) -> None:
    files = ObjectFiles(tmp_path)
    for p in range(3):
        files.put(BUCKET, f"topics/t/partitions/{p}/records/{p:020d}.batch", b"z")
    elements, prefixes, last = files.listing(BUCKET, "topics/t/", None, "", 1000)
    assert len(elements) == 3 and list(prefixes) == [] and last is None
    elements, prefixes, last = files.listing(BUCKET, "topics/t/partitions/", "/", "", 2)
    assert list(elements) == [] and len(prefixes) == 2 and last is not None
