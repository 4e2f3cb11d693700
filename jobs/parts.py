"""Committing a Ray Data stream as resumable part files.

A stage's work is cut into parts whose membership is decided before the run (e.g. images 0-511 are
`part-00000`). Every row of the Ray dataset carries its `part`; the driver consumes the stream, and once all
rows of a part have arrived it hands them to `commit`, which writes that part's files atomically. A part that
exists on disk is finished work and is left out of the next run, so a killed job loses only parts in flight.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import ray
from tqdm import tqdm


class IncompleteParts(RuntimeError):
    """The stream ended before every row of some parts arrived (work was lost with a node): run again."""


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def chunk(items: list, size: int) -> list[tuple[str, list]]:
    """Cut `items` into consecutive parts of `size`: [(part name, items)]."""
    return [(part_name(i // size), items[i : i + size]) for i in range(0, len(items), size)]


def commit_parts(
    ds: ray.data.Dataset,
    expected: dict[str, int],
    commit: Callable[[str, pa.Table], None],
    desc: str,
    unit: str,
    key: str,
) -> int:
    """Consume `ds` (rows with a `part` column), calling `commit(part, rows)` as each part completes.

    `key` names the column that identifies an item (image source, feature id): a row whose key already
    arrived, or whose part is already committed, is dropped, so that work Ray runs twice (a task retried
    after its node died, a block rebuilt from lineage) is committed exactly once. Returns the number of
    rows committed."""
    buffers: dict[str, list[pa.Table]] = defaultdict(list)
    seen: dict[str, set] = defaultdict(set)
    committed: set[str] = set()
    done = 0
    with tqdm(total=sum(expected.values()), desc=desc, unit=unit, dynamic_ncols=True) as bar:
        for batch in _batches(ds):
            for part in pc.unique(batch.column("part")).to_pylist():
                if part in committed or part not in expected:
                    continue
                rows = batch.filter(pc.equal(batch.column("part"), part))
                got = seen[part]
                fresh = []
                for k in rows.column(key).to_pylist():
                    fresh.append(k not in got)
                    got.add(k)
                if not all(fresh):
                    rows = rows.filter(pa.array(fresh))
                buffers[part].append(rows)
                bar.update(rows.num_rows)
                if len(seen[part]) == expected[part]:
                    # rows in key order: a part's file does not depend on the order its batches arrived in
                    commit(part, pa.concat_tables(buffers.pop(part)).sort_by(key))
                    committed.add(part)
                    done += expected[part]
                    del seen[part]
    missing = {p: n - len(seen.get(p, ())) for p, n in expected.items() if p not in committed}
    if missing:
        raise IncompleteParts(f"{desc}: parts did not complete (rows missing per part: {missing})")
    return done


def _batches(ds: ray.data.Dataset) -> Iterable[pa.Table]:
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        yield batch if isinstance(batch, pa.Table) else pa.Table.from_pydict(batch)
