"""The real VOC train folder the FiftyOne benchmarks read, and its id list cut to ``--limit``."""

import tempfile
from pathlib import Path
from typing import Optional, Tuple

from sepl.paths import voc_train_dir


def voc_ids(limit: Optional[int] = None) -> Tuple[Optional[Path], Optional[str]]:
    """(``shared/data/voc2012_train``, path of an id list of its first ``limit`` ids), or
    (None, None) when the folder is absent."""
    root = voc_train_dir()
    if root is None:
        return None, None
    ids_file = root / "train.txt"
    if not limit:
        return root, str(ids_file)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as tmp:
        tmp.write("\n".join(ids_file.read_text().split()[:limit]))
    return root, tmp.name
