"""The bulk data path: every feature of ``sepl.fo`` that writes fields per sample uses it.

Per chunk of ``chunk_size`` samples (bounded memory), the path reads only the fields a step
needs, as the documents FiftyOne stores (``values(..., _raw=True)``: no mongoengine
document is built per sample), computes, and writes the chunk with one unordered
``bulk_write`` of ``$set`` updates on the sample collection. Never a full-document load +
save per sample.

- ``fill_rows``: the fast path. ``work(row)`` is a picklable function of a row (see
  ``sepl.labels.rows``) returning ``{field: document}``; it runs on ``num_workers``
  processes (``sepl.labels.pool``), results identical for any count, and the next chunk is
  read while the current one computes.
- ``fill_field``: the same loop for steps that need ``fo.Sample``-like objects (models,
  FiftyOne helpers): ``compute(sample)`` sees a view of the chunk with only ``fields``.

Shared behaviour: a sample whose work raises SeplError is reported by name and left as it
was while the others are written (``raise_failures``); each chunk is written before the next
is computed, so an interrupted run loses at most one chunk and a rerun resumes
(``runs.pending_view``); ``progress(fraction, label)`` is called after each chunk.

In-memory samples: after its own bulk writes FiftyOne reloads every in-memory ``fo.Sample``
of the written ids from the database, one query each (~0.5 s per sample with 200 instance
masks, in a process that still holds the samples it added). This path writes through the
collection instead and sets the written values on the in-memory samples it finds, from the
documents it just wrote: no reload.

Documents over MongoDB's 16 MB limit: a sample whose update would not fit has its masks
written as PNGs (``mask_path``) under the field's mask folder, with a warning naming it;
one that still does not fit is a reported failure, never a crash mid-run.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import weakref
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import SeplError
from ..labels import raw
from ..labels.pool import RowPool, resolve_workers
from ..labels.rows import row_name
from .convert import sample_name

log = logging.getLogger(__name__)

Progress = Optional[Callable[[float, str], None]]
Failures = List[Tuple[str, str]]
Claim = Callable[[List[str]], List[str]]

# how many failures an error message lists by name before summarising
_LISTED = 5
# samples per chunk: bounds memory (a chunk of 100-mask samples is ~10-30 MB of documents)
DEFAULT_CHUNK = 64
# MongoDB's document limit, and the size above which an update is moved to disk first
DOC_LIMIT = 16 * 1024 * 1024
_SAFE = DOC_LIMIT - 512 * 1024
_TOO_LARGE_CODES = (10334, 17419, 17420)
_MIN_ROWS_PER_WORKER = 8
# all cores by default: the first rows are timed in this process, and worker processes start
# only when the rest of the run would save more than this (starting two spawned workers costs
# ~0.15-0.5 s: a 100-sample, 10-mask refine took 5.0 ms/sample on 2 workers, 3.5 on one)
_PROBE_ROWS = 8
_SPAWN_PAYS_S = 0.5


def _message(e: SeplError) -> str:
    return e.message + (f" (fix: {e.hint})" if e.hint else "")


# ---------------------------------------------------------------------------------------
# reading


def read_rows(view, ids: Sequence[str], fields: Sequence[str]) -> List[Dict[str, Any]]:
    """Rows (``sepl.labels.rows``) of the samples ``ids`` of ``view``, in that order, with
    the stored documents of ``fields`` (the view's filters apply)."""
    cv = view.select(list(ids), ordered=True)
    paths = ["_id", "filepath", "metadata"] + list(fields)
    values = cv.values(paths, _raw=True)
    return [_row(sid, values[1][k], values[2][k], {f: values[3 + j][k] for j, f in enumerate(fields)})
            for k, sid in enumerate(values[0])]


def _row(sid, filepath: Optional[str], metadata: Optional[dict], fields: Dict[str, Any]) -> Dict[str, Any]:
    md = metadata or {}
    shape = (int(md["height"]), int(md["width"])) if md.get("height") and md.get("width") else None
    return {"id": str(sid), "filepath": filepath, "shape": shape, "fields": fields}


def _get(doc: Dict[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of a stored document, None where it is missing."""
    value = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def iter_rows(view, fields: Sequence[str], chunk_size: int = DEFAULT_CHUNK):
    """Lists of at most ``chunk_size`` rows of every sample of ``view``, in the view's order,
    from one database cursor (for steps that read every sample: no id list, no per-chunk
    query; memory stays bounded by the chunk)."""
    project = {"_id": 1, "filepath": 1, "metadata.height": 1, "metadata.width": 1}
    project.update({f: 1 for f in fields})
    chunk: List[Dict[str, Any]] = []
    for doc in view._aggregate(pipeline=[{"$project": project}]):
        chunk.append(_row(doc["_id"], doc.get("filepath"), doc.get("metadata"),
                          {f: _get(doc, f) for f in fields}))
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---------------------------------------------------------------------------------------
# writing


def _label_class(name: str):
    import fiftyone.core.labels as fol

    return getattr(fol, name, None)


def _to_doc(value: Any) -> Any:
    """A ``fo.Label`` as the document FiftyOne stores; documents and plain values as they are."""
    to_mongo = getattr(value, "to_mongo", None)
    if to_mongo is not None and hasattr(value, "_fields"):
        return to_mongo()
    return value


def _from_doc(value: Any, source: Optional[Dict[Any, Any]] = None) -> Any:
    """The ``fo.Label`` of a stored document (plain values as they are); ``source``
    (``_source_masks``) lends the decoded masks of detections this one copies."""
    if isinstance(value, dict) and "_cls" in value:
        cls = _label_class(value["_cls"])
        if cls is not None:
            dets = value.get("detections")
            if value["_cls"] == "Detections" and isinstance(dets, list) and len(dets) > 1:
                shell = cls._from_son(dict(value, detections=[]))
                shell.detections = _detections(dets, source)  # as mongoengine sets a list: each knows its parent
                shell._changed_fields = []
                return shell
            return cls._from_son(_decoded(value))
    return value


# dynamic attribute values a held detection can take from its stored document as they are
_PLAIN = (bool, int, float, str, type(None))


def _detections(docs: List[Any], source: Optional[Dict[Any, Any]] = None) -> List[Any]:
    """``fo.Detection`` objects of stored detection documents, for held samples.

    mongoengine builds each one attribute by attribute (a field object per dynamic
    attribute, change tracking, validation: ~0.3 ms each, 30 ms for a 100-mask decisions
    field). Detections with the same keys as the one before are copied from its state
    instead (``_Like``); any other shape (nested values) is built normally.
    ``tests/test_bulk.py`` checks the copies against ``_from_son``. Masks ``source`` holds
    are copied from it, not inflated (``_source_masks``)."""
    import fiftyone.core.labels as fol

    out: List[Any] = []
    like, keys = None, None
    for d in docs:
        if not isinstance(d, dict):
            out.append(d)
            continue
        d = _decoded(d, source)
        k = tuple(d)
        if like is not None and k == keys:
            out.append(like(d))
            continue
        det = fol.Detection._from_son(dict(d))
        out.append(det)
        like, keys = (_Like(det), k) if _plain(det._data, det._dynamic_fields) else (None, None)
    return out


def _plain(data: Dict[str, Any], names) -> bool:
    """Whether the values of ``names`` in ``data`` can be taken as they are stored."""
    return all(isinstance(data.get(n), _PLAIN) for n in names)


@functools.lru_cache(maxsize=None)
def _slots(cls) -> Tuple[str, ...]:
    """The ``__slots__`` of ``cls`` and its bases that hold instance state (mongoengine keeps
    its state there; a slot a class attribute shadows, e.g. ``_db_field_map``, holds none)."""
    import types

    names = []
    for c in cls.__mro__:
        for n in getattr(c, "__slots__", ()):
            if n not in names and isinstance(getattr(cls, n, None), types.MemberDescriptorType):
                names.append(n)
    return tuple(names)


def _converter(field) -> Callable[[Any], Any]:
    """``field.to_python``, with the stored values it returns unchanged passed as they are:
    a list of floats / strs (``bounding_box``, ``tags``: mongoengine converts item by item,
    3-5 us), an empty dict (``attributes``), a str."""
    import mongoengine.fields as mef

    to_python = field.to_python
    inner = getattr(type(getattr(field, "field", None)), "to_python", None)  # None: a list of anything
    if isinstance(field, mef.ListField) and inner in (mef.FloatField.to_python, mef.StringField.to_python):
        kind = float if inner is mef.FloatField.to_python else str
        return lambda value: list(value) if type(value) is list and all(type(v) is kind for v in value) else to_python(value)
    if isinstance(field, mef.DictField):
        return lambda value: {} if type(value) is dict and not value else to_python(value)
    if type(field).to_python is mef.StringField.to_python:
        return lambda value: value if type(value) is str else to_python(value)
    return to_python


class _Like:
    """Detections in the state of one built by mongoengine (same keys, plain dynamic values),
    as its own unpickling makes them (``BaseDocument.__setstate__``): values converted by the
    same fields, a fresh change list and dynamic-field map, the other slots shared."""

    def __init__(self, template):
        cls = self.cls = type(template)
        fields = cls._fields
        self.plan = []
        for name in template._data:
            field = fields.get(name)
            self.plan.append((name, name, None) if field is None else (name, field.db_field, _converter(field)))
        self.dynamic = template._dynamic_fields
        fresh = ("_changed_fields", "_data", "_dynamic_fields")
        self.slots = [(n, getattr(template, n)) for n in _slots(cls) if n not in fresh and hasattr(template, n)]
        self.state = dict(template.__dict__)

    def __call__(self, d: Dict[str, Any]):
        data = {}
        for name, key, convert in self.plan:
            value = d.get(key)
            data[name] = value if value is None or convert is None else convert(value)
        dynamic = self.dynamic
        if not _plain(data, dynamic):
            return self.cls._from_son(dict(d))
        obj = self.cls.__new__(self.cls)
        setattr_ = object.__setattr__
        setattr_(obj, "_changed_fields", [])
        setattr_(obj, "_data", data)
        setattr_(obj, "_dynamic_fields", _son_copy(dynamic))
        for n, v in self.slots:
            setattr_(obj, n, v)
        state = obj.__dict__
        state.update(self.state)
        for n in dynamic:
            state[n] = data[n]
        return obj


@functools.lru_cache(maxsize=None)
def _son_keeps_keys() -> bool:
    from bson import SON

    return isinstance(getattr(SON(), "_SON__keys", None), list)


def _son_copy(son):
    """A copy of a ``bson.SON`` (its own key order, so a new attribute stays on its label);
    ``SON(son)`` costs ~9 us per key, a third of a held detection."""
    from bson import SON

    keys = getattr(son, "_SON__keys", None)
    if not isinstance(keys, list) or not _son_keeps_keys():
        return SON(son)  # pragma: no cover - another bson: the plain copy
    out = SON.__new__(SON)
    dict.update(out, son)
    out._SON__keys = list(keys)
    return out


def _decoded(doc: Dict[str, Any], source: Optional[Dict[Any, Any]] = None) -> Dict[str, Any]:
    """A label document with its masks as (writable) arrays: FiftyOne would decode them with
    ``np.load``, a third of the cost of building 100 detections for a held sample."""

    def arrays(d):
        mask = d.get("mask")
        if not isinstance(mask, bytes):
            return d
        lent = source.get(str(d.get("_id"))) if source else None
        if lent is not None and raw.array_header(mask) == (lent.dtype, lent.shape):
            return dict(d, mask=lent.copy())
        return dict(d, mask=raw.decode_array(mask).copy())

    if isinstance(doc.get("detections"), list):
        return dict(doc, detections=[arrays(d) if isinstance(d, dict) else d for d in doc["detections"]])
    return arrays(doc)


class BulkWriter:
    """Writes ``{sample id: {field: value}}`` updates to a dataset in one bulk write.

    Values are ``fo.Label`` objects, their stored documents (dicts with ``_cls``) or plain
    values of declared fields. Label fields are declared on first use.

    Args:
        dataset: the ``fo.Dataset``.
        mask_dir: root of the folders oversize samples' masks go to
            (``sepl.fo.convert.mask_dir_for``).
        copies: ``{field: source field}``: the detections written to ``field`` are copies
            of ``source field``'s (same ``_id``, same mask bytes: refine's decisions), so a
            held sample's copies take their masks from its decoded source masks.
    """

    def __init__(self, dataset, mask_dir: Optional[str] = None, copies: Optional[Dict[str, str]] = None):
        self.dataset = dataset
        self.mask_dir = mask_dir
        self.copies = dict(copies or {})
        self.spilled: List[str] = []
        self._declared: set = set()

    def _declare(self, fields: Dict[str, Any]) -> None:
        """Declare the label fields among ``{field: document}`` the dataset lacks, with one
        schema update and dataset reload for all of them (~0.2 s each otherwise: 4 ms per
        sample of a 100-sample refine)."""
        new = {f: doc for f, doc in fields.items() if f not in self._declared}
        if not new:
            return
        ds = self.dataset
        import fiftyone.core.fields as fof

        add = {f: _label_class(doc["_cls"]) for f, doc in new.items()
               if isinstance(doc, dict) and "_cls" in doc and not ds.has_field(f)}
        create = getattr(ds._sample_doc_cls, "_create_field", None)
        merge = getattr(ds, "_merge_sample_field_schema", None)
        if add and create is not None and merge is not None:
            merge({f: create(f, fof.EmbeddedDocumentField, embedded_doc_type=cls) for f, cls in add.items()})
        else:  # pragma: no cover - FiftyOne without them: one update per field
            for f, cls in add.items():
                ds.add_sample_field(f, fof.EmbeddedDocumentField, embedded_doc_type=cls)
        self._declared.update(new)

    def _spill(self, sid: str, fields: Dict[str, Any], size: int) -> Dict[str, Any]:
        from .convert import mask_dir_for

        out = {}
        for f, doc in fields.items():
            if isinstance(doc, dict) and doc.get("_cls") in ("Segmentation", "Detections"):
                folder = mask_dir_for(self.dataset, f, self.mask_dir) / "oversize"
                doc = raw.spill_masks(doc, str(folder), sid)
                log.warning("sample %s: %.1f MB would exceed MongoDB's 16 MB document limit; the masks of '%s' "
                            "are stored as PNGs under %s (mask_path)", sid, size / 2 ** 20, f, folder)
            out[f] = doc
        self.spilled.append(sid)
        return out

    def write(self, updates: Dict[str, Dict[str, Any]], names: Optional[Dict[str, str]] = None) -> Failures:
        """Write ``updates``; returns [(sample name, message)] for samples that could not be
        stored even with their masks on disk (the others are written)."""
        import bson
        from pymongo import UpdateOne
        from pymongo.errors import BulkWriteError

        if not updates:
            return []
        names = names or {}
        docs: Dict[str, Dict[str, Any]] = {}
        for sid, fields in updates.items():
            fields = {f: _to_doc(v) for f, v in fields.items()}
            self._declare(fields)
            size = len(bson.encode(fields))
            if size > _SAFE:
                fields = self._spill(sid, fields, size)
            docs[sid] = fields
        failures: Failures = []
        order = list(docs)
        now = datetime.now(timezone.utc).replace(tzinfo=None)

        def ops(keys):
            return [UpdateOne({"_id": bson.ObjectId(k)}, {"$set": dict(docs[k], last_modified_at=now)}) for k in keys]

        coll = self.dataset._sample_collection
        try:
            coll.bulk_write(ops(order), ordered=False)
        except BulkWriteError as e:
            retry = []
            for err in e.details.get("writeErrors", []):
                sid = order[err["index"]]
                if err.get("code") in _TOO_LARGE_CODES:
                    retry.append(sid)
                else:
                    failures.append((names.get(sid, sid), f"database write failed: {err.get('errmsg')}"))
            for sid in retry:
                docs[sid] = self._spill(sid, docs[sid], DOC_LIMIT)
            if retry:
                try:
                    coll.bulk_write(ops(retry), ordered=False)
                except BulkWriteError as e2:
                    for err in e2.details.get("writeErrors", []):
                        sid = retry[err["index"]]
                        failures.append((names.get(sid, sid), "the sample exceeds MongoDB's 16 MB document limit even "
                                         "with its masks on disk (fix: store fewer fields on it, or fewer masks)"))
        bad = {n for n, _ in failures}
        self._patch_in_memory({k: v for k, v in docs.items() if names.get(k, k) not in bad}, now)
        return failures

    def _patch_in_memory(self, docs: Dict[str, Dict[str, Any]], now) -> None:
        """Set the written values on the in-memory samples of these ids (no reload)."""
        import fiftyone.core.sample as fos

        held = fos.Sample._instances.get(self.dataset._sample_collection_name)
        if not held:
            return
        with _gc_paused():
            self._patch(held, docs, now, self.copies)

    @staticmethod
    def _patch(held, docs: Dict[str, Dict[str, Any]], now, copies: Dict[str, str]) -> None:
        for sid, fields in docs.items():
            sample = held.get(sid)
            if sample is None:
                continue
            data = sample._doc._data
            for f, v in fields.items():
                source = _source_masks(sample._doc, copies[f]) if f in copies else None
                value = data[f] = _from_doc(v, source)
                if hasattr(type(value), "_instance"):  # an embedded label knows its sample, as when loaded
                    value._instance = weakref.proxy(sample._doc)
            if "last_modified_at" in data:
                data["last_modified_at"] = now


def _source_masks(doc, field: str) -> Optional[Dict[Any, Any]]:
    """``{detection id: mask array}`` of a held sample's ``field`` (``fo.Detections``) when
    it holds what is stored (no unsaved change to it), else None. A copy's mask is taken from
    here when its header (dtype, shape) agrees, instead of inflating the same bytes again
    (8-30 us per mask, by CPU: 0.8-3 ms of a held 100-mask sample's patch). A mask changed in
    place (never tracked, by FiftyOne either) is copied as the held sample shows it."""
    import numpy as np

    if any(c == field or c.startswith(field + ".") for c in getattr(doc, "_changed_fields", ()) or ()):
        return None
    value = doc._data.get(field)
    dets = getattr(value, "_data", {}).get("detections")
    if not isinstance(dets, list) or getattr(value, "_changed_fields", None):
        return None
    out = {}
    for det in dets:
        data = getattr(det, "_data", None)
        if data is None or getattr(det, "_changed_fields", None):
            continue
        mask, did = data.get("mask"), data.get("id")
        if isinstance(mask, np.ndarray) and did is not None:
            out[str(did)] = mask  # FiftyOne keeps label ids as str
    return out


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection inside: building ~100 detections per held sample
    allocates enough objects to start full collections over every object the process holds
    (its held samples), a fifth of the time of a patch (15-19 -> 12 ms/sample at N=100)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# ---------------------------------------------------------------------------------------
# the loops


def fill_rows(view, fields: Sequence[str], work: Callable[[Dict[str, Any]], Dict[str, Any]],
              progress: Progress = None, what: str = "samples", chunk_size: Optional[int] = None,
              num_workers: Optional[int] = 1, mask_dir: Optional[str] = None,
              claim: Optional[Claim] = None, copies: Optional[Dict[str, str]] = None) -> Tuple[int, Failures]:
    """Store ``work(row)`` (``{field: value}``) for every sample of ``view``.

    Args:
        fields: the stored fields ``work`` reads (``row["fields"][name]``).
        work: a picklable function of a row (top-level, in a module that does not import
            FiftyOne, when ``num_workers > 1``); raises SeplError for a sample it cannot
            process.
        chunk_size: samples read, computed and written together (default ``DEFAULT_CHUNK``).
        num_workers: processes (None / 0: all cores, where the rest of the run, timed on its
            first rows, would outlast starting them); outputs do not depend on it.
        mask_dir: root of the mask folders for oversize samples.
        claim: ``claim(ids) -> ids`` called before a chunk is read (``runs.Run.claim``):
            only the ids it returns are computed, so concurrent identical runs share samples.
        copies: ``{field: source field}`` of fields ``work`` fills with copies of detections
            it read (``BulkWriter``).

    Returns (number of samples written, [(sample name, error message), ...]).
    """
    ids = view.values("id")
    total = len(ids)
    size = max(1, int(chunk_size or DEFAULT_CHUNK))
    writer = BulkWriter(view._dataset, mask_dir, copies)
    done, failures = 0, []

    def finish(rows, handle) -> None:
        nonlocal done
        updates, names = {}, {}
        for row, (status, value) in zip(rows, handle.result()):
            name = row_name(row)
            if status == "ok":
                updates[row["id"]] = value
                names[row["id"]] = name
            else:
                msg, hint = value
                failures.append((name, msg + (f" (fix: {hint})" if hint else "")))
        bad = writer.write(updates, names)
        failures.extend(bad)
        done += len(updates) - len(bad)

    # a process pool only pays from a few samples per worker on (its results are the same)
    workers = min(resolve_workers(num_workers), max(1, total // _MIN_ROWS_PER_WORKER))
    probe = not num_workers and workers > 1
    with RowPool(workers) as pool:
        pending = None
        for start in range(0, total, size):
            chunk = ids[start:start + size] if claim is None else claim(ids[start:start + size])
            if not chunk:
                continue
            rows = read_rows(view, chunk, fields)
            if probe:
                probe = False
                head, seconds = _timed(work, rows[:_PROBE_ROWS])
                left = (total - start - len(head)) * seconds / max(1, len(head))
                if left * (1 - 1 / workers) < _SPAWN_PAYS_S:
                    pool.num_workers = 1  # before any process started
                handle = _Joined(head, pool.submit(work, rows[len(head):]))
            else:
                handle = pool.submit(work, rows)  # computes while the previous chunk is written
            if pending is not None:
                finish(*pending[:2])
                _report(progress, pending[2], total, what)
            pending = (rows, handle, min(start + size, total))
        if pending is not None:
            finish(*pending[:2])
            _report(progress, pending[2], total, what)
    return done, failures


def _timed(work, rows) -> Tuple[list, float]:
    """``run_rows(work, rows)`` in this process, and the seconds it took."""
    import time

    from ..labels.pool import run_rows

    t = time.perf_counter()
    out = run_rows(work, rows)
    return out, time.perf_counter() - t


class _Joined:
    """The outcomes of rows computed here, then of a pool handle's rows."""

    def __init__(self, head: list, rest):
        self.head, self.rest = head, rest

    def result(self) -> list:
        return self.head + self.rest.result()


def prefetched_batches(view, ids: Sequence[str], batch_size: int, fields: Sequence[str],
                       load: Callable[[Any], Any]):
    """For model steps (GPU): yields ``(samples, loaded)`` per batch of ``batch_size`` of
    ``ids``: the samples of ``view`` with only ``fields`` loaded, and ``load(sample)`` of each
    (e.g. the decoded image) computed on threads. The next batch is read and decoded while the
    caller runs the model on the current one. A ``load`` that raises SeplError gives that
    error in place of its value, so the caller reports the sample and goes on."""
    from concurrent.futures import ThreadPoolExecutor

    def safe(sample):
        try:
            return load(sample)
        except SeplError as e:
            return e

    starts = list(range(0, len(ids), batch_size))
    if not starts:
        return
    with ThreadPoolExecutor(max(1, batch_size)) as decode, ThreadPoolExecutor(1) as prefetch:
        def read(start):
            batch = list(view.select(ids[start:start + batch_size], ordered=True).select_fields(list(fields))
                         .iter_samples())
            return batch, list(decode.map(safe, batch))

        nxt = prefetch.submit(read, starts[0])
        for k in range(len(starts)):
            batch, loaded = nxt.result()
            if k + 1 < len(starts):
                nxt = prefetch.submit(read, starts[k + 1])
            yield batch, loaded


def _report(progress: Progress, n: int, total: int, what: str) -> None:
    if progress is not None:
        progress(n / max(total, 1), f"{what}: {n}/{total}")


def fill_field(view, field: str, compute: Callable, progress: Progress = None, what: str = "samples",
               every: int = 25, fields: Optional[Sequence[str]] = None, chunk_size: Optional[int] = None,
               mask_dir: Optional[str] = None, load: Optional[Callable] = None,
               loader_threads: Optional[int] = None, claim: Optional[Claim] = None) -> Tuple[int, Failures]:
    """Set ``sample[field] = compute(sample)`` on every sample of ``view``, chunk by chunk.

    ``compute`` returns the value to store (or a dict ``{field: value}`` to set several),
    or raises SeplError for a sample it cannot process: that sample is left as it was and
    reported. Samples are read-only views holding only ``fields`` (plus the default fields:
    id, filepath, metadata, ...) when given, else every field. ``progress(fraction, label)``
    is called after each chunk (``every`` is kept for callers; chunks set the pace).

    ``load(sample)`` (e.g. decode the image), when given, runs on ``loader_threads`` threads
    (default: all cores) for the whole chunk while ``compute(sample, loaded)`` works through
    it in order (a model on the GPU or on all cores). ``claim``: as in ``fill_rows``.

    Returns (number of samples written, [(sample name, error message), ...]).
    """
    from concurrent.futures import ThreadPoolExecutor

    ids = view.values("id")
    total = len(ids)
    size = max(1, int(chunk_size or DEFAULT_CHUNK))
    writer = BulkWriter(view._dataset, mask_dir)
    done, failures = 0, []
    loader = ThreadPoolExecutor(resolve_workers(loader_threads)) if load is not None else None

    def loaded(sample):
        try:
            return None, load(sample)
        except SeplError as e:
            return e, None
        except (OSError, ValueError) as e:  # unreadable file: that sample fails, not the run
            return SeplError(f"cannot read input: {e}", hint="fix or remove the file"), None

    try:
        for start in range(0, total, size):
            chunk = ids[start:start + size] if claim is None else claim(ids[start:start + size])
            if not chunk:
                _report(progress, min(start + size, total), total, what)
                continue
            cv = view.select(chunk, ordered=True)
            if fields is not None:
                cv = cv.select_fields(list(fields))
            samples = list(cv.iter_samples())
            inputs = [loader.submit(loaded, s) for s in samples] if loader is not None else None
            updates, names = {}, {}
            for k, sample in enumerate(samples):
                try:
                    if inputs is None:
                        value = compute(sample)
                    else:
                        err, data = inputs[k].result()
                        if err is not None:
                            raise err
                        value = compute(sample, data)
                except SeplError as e:
                    failures.append((sample_name(sample), _message(e)))
                    continue
                updates[sample.id] = dict(value) if isinstance(value, dict) else {field: value}
                names[sample.id] = sample_name(sample)
            bad = writer.write(updates, names)
            failures.extend(bad)
            done += len(updates) - len(bad)
            _report(progress, min(start + size, total), total, what)
    finally:
        if loader is not None:
            loader.shutdown(wait=True, cancel_futures=True)
    return done, failures


def raise_failures(failures: List[Tuple[str, str]], field: str, done: int) -> None:
    """Raise one SeplError naming the samples that failed (the others were written)."""
    if not failures:
        return
    lines = [f"{name}: {msg}" for name, msg in failures[:_LISTED]]
    more = f"; and {len(failures) - _LISTED} more" if len(failures) > _LISTED else ""
    raise SeplError(
        f"{len(failures)} sample(s) could not be processed for '{field}' ({done} written): "
        + "; ".join(lines) + more,
        hint="fix those inputs and rerun the same command: it resumes with the missing samples only",
    )


# Where label maps go: "db" (in the sample document) or "disk" (a PNG per sample,
# ``mask_path``). The default comes from benchmarks/bench_fo_storage.py (see README).
DEFAULT_STORAGE = "db"
STORAGES = ("db", "disk")


def storage_choice(storage: Optional[str]) -> str:
    """``storage``, else ``$SEPL_MASK_STORAGE``, else the default; validated."""
    choice = storage or os.environ.get("SEPL_MASK_STORAGE") or DEFAULT_STORAGE
    if choice not in STORAGES:
        raise SeplError(f"unknown mask storage '{choice}'", hint=f"use one of {STORAGES}")
    return choice


def make_segmentation(label, dataset, field: str, key: str, storage: Optional[str] = None,
                      mask_dir: Optional[str] = None):
    """A ``fo.Segmentation`` for the (H, W) uint8 ``label``: in the database, or written to
    ``<mask dir>/<field>/<key>.png`` when the storage is "disk"."""
    from .convert import mask_dir_for, to_segmentation

    if storage_choice(storage) == "db":
        return to_segmentation(label)
    return to_segmentation(label, mask_path=str(mask_dir_for(dataset, field, mask_dir) / f"{key}.png"))


def disk_dir(dataset, field: str, storage: Optional[str], mask_dir: Optional[str]) -> Optional[str]:
    """The folder a row worker writes ``field``'s label maps to, or None for the database."""
    from .convert import mask_dir_for

    if storage_choice(storage) == "db":
        return None
    return str(mask_dir_for(dataset, field, mask_dir))
