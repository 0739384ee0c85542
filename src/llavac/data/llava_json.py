"""The format stage's library: each split's pairs as the LLaVA repository's conversation JSON.

One file per part of each split, ``<out>/<K>/{train,val,test}.json``: a JSON array of
:func:`llavac.prompt.llava_record` records, the format the LLaVA repository's ``train.py`` reads
(``--data_path``), and what our own training and prediction read too.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from llavac.data.protocols import PARTS
from llavac.files import folder_written_whole, write_json
from llavac.prompt import ImagePosition, Modalities, llava_record
from llavac.split_folders import split_folder, split_folders, split_number


def format_splits(
    splits_dir: Path, out_dir: Path, image_position: ImagePosition, modalities: Modalities = "both"
) -> dict[str, int]:
    """Write ``<out_dir>/<K>/<part>.json`` for every split folder K under ``splits_dir``; return
    the record count of each ``"<K>/<part>"``. The folder is written aside and put in place whole.
    `modalities` (`llava_record`) applies to every part: train, val and test."""
    folders = split_folders(splits_dir, "split")
    counts = {}
    with folder_written_whole(out_dir) as staging:
        for folder in folders:
            number = split_number(folder)
            for part in PARTS:
                pairs = pd.read_parquet(folder / f"{part}.parquet")
                records = [llava_record(row, image_position, modalities) for row in pairs.to_dict("records")]
                write_json(split_folder(staging, number) / f"{part}.json", records, indent=1, ensure_ascii=False)
                counts[f"{number}/{part}"] = len(records)
    return counts
