"""The output folder of ``diffphys run`` and ``diffphys demo``: refuse a non-empty one unless asked to overwrite."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..io import TEMPORARY_PREFIX

__all__ = ["prepare_output_folder"]


def prepare_output_folder(out, outputs: Iterable[str], *, overwrite: bool) -> list[str]:
    """Check that ``out`` can take a new run's ``outputs``; with ``overwrite``, first remove the previous ones.

    A folder that does not exist or is empty is fine. A non-empty folder is refused (so that a run
    never mixes its files with another run's, nor replaces one silently) unless ``overwrite`` is
    true: then the files named in ``outputs`` and leftover temporaries of an interrupted write
    (``.tmp-*``) are removed, and every other file is kept.

    **Returns:** the names of the files removed.

    **Raises:** ``ValueError`` naming the folder, what it holds, and the ``--overwrite`` flag.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output folder {out} is a file; give a folder with --out")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not present:
        return []
    if not overwrite:
        shown = ", ".join(present[:6]) + (f" and {len(present) - 6} more" if len(present) > 6 else "")
        raise ValueError(
            f"the output folder {out}/ is not empty (it holds {shown}); give another folder with --out, or pass "
            f"--overwrite to replace the previous run's outputs"
        )
    names = set(outputs)
    removed = [name for name in present
               if (name in names or name.startswith(TEMPORARY_PREFIX)) and (out / name).is_file()]
    for name in removed:
        (out / name).unlink()
    return removed
