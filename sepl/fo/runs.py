"""Runs recorded the FiftyOne way, and leased in the database so runs never mix.

A run key ``sepl_<field>`` records which command made a field and with which parameters
(``dataset.list_runs()``, ``dataset.get_run_info(key)``); its config also lists the runs
that wrote into the field (``runs``: pid, host, view, samples written, status), see
``run_history``. One field holds the output of ONE parameter set:

- a rerun with the same parameters resumes (only samples still missing the field);
- another parameter set on an existing field is refused unless ``overwrite``; overwrite
  replaces only what the view covers, and is refused when the view does not cover every
  sample holding the field (the field would mix two parameter sets);
- a run that wrote nothing leaves nothing behind (no field, no run record); arguments are
  validated by the writers before ``start_run``, and nothing is changed before the run's
  first claim (``Run.commit``), so a run failing on its model or checkpoint changes nothing.

Concurrent runs: ``start_run`` takes a lease on the field in the ``sepl_leases`` collection
of FiftyOne's database (one atomic ``find_one_and_update``). A second run with other
parameters is refused at start; an identical one joins, and samples are shared out by
per-sample claims in ``sepl_claims`` (atomic upserts), so none is computed twice. Leases and
claims carry an expiry that a heartbeat thread extends every ``ttl / 3`` seconds; a killed
run's lease expires after ``SEPL_LEASE_TTL`` seconds (default 120) and a rerun proceeds (at
once on the same machine, where the holder's pid is seen to be gone).
A writer decorated with ``@recorded`` releases its runs when it returns or raises.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..errors import SeplError

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"[^A-Za-z0-9_]")
LEASES = "sepl_leases"
CLAIMS = "sepl_claims"
_DUPLICATE = 11000
# runs listed per field (the oldest are dropped)
_HISTORY = 200
_indexed = False


def run_key(field: str) -> str:
    """The run key that records how ``field`` was produced."""
    return "sepl_" + _KEY_RE.sub("_", field)


def lease_ttl() -> float:
    """Seconds a lease or claim lives without a heartbeat (``$SEPL_LEASE_TTL``, default 120)."""
    return max(0.5, float(os.environ.get("SEPL_LEASE_TTL", "120")))


def _now() -> datetime:
    # naive UTC: what pymongo gives back, so comparisons work both sides
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _db():
    import fiftyone.core.odm as foo

    global _indexed
    db = foo.get_db_conn()
    if not _indexed:  # heartbeats and releases find a run's claims by owner
        db[CLAIMS].create_index("owner")
        db[CLAIMS].create_index("lease")
        _indexed = True
    return db


_pruned = False


def prune_leases(db=None) -> int:
    """Delete the lease records (history included) and claims of datasets that no longer
    exist; returns how many. Leases are listed before datasets, so a dataset created
    meanwhile, whose lease can only come after it, is never taken for a deleted one."""
    db = _db() if db is None else db
    leases = [d["_id"] for d in db[LEASES].find({}, {"_id": 1})]
    if not leases:
        return 0
    alive = {str(d["_id"]) for d in db["datasets"].find({}, {"_id": 1})}
    stale = [k for k in leases if str(k).split(":", 1)[0] not in alive]
    if stale:
        db[LEASES].delete_many({"_id": {"$in": stale}})
        db[CLAIMS].delete_many({"lease": {"$in": stale}})
    return len(stale)


def _dead_here(holder: Dict[str, Any]) -> bool:
    """A holder on this machine whose process is gone (a killed run)."""
    if holder.get("host") != socket.gethostname() or not holder.get("pid"):
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def _same(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    return {k: a.get(k) for k in b} == b


def _diff(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    keys = [k for k in new if k not in ("fields",) and old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:6]) or "other fields"


def _hash(params: Dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def _describe(view) -> str:
    """The view a run covered, short: "dataset" or its stages."""
    if view is None or view is getattr(view, "_dataset", None):
        return "dataset"
    name = getattr(view, "name", None)
    stages = repr(view._stages) if hasattr(view, "_stages") else str(view)
    text = (f"saved view '{name}': " if name else "") + stages
    return text if len(text) <= 300 else text[:297] + "..."


# ---------------------------------------------------------------------------------------
# argument checks: writers call these before start_run, so bad arguments create nothing


def check_fraction(name: str, value: Optional[float]) -> None:
    """A threshold in [0, 1] (None passes: "not used")."""
    if value is None:
        return
    try:
        ok = 0.0 <= float(value) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise SeplError(f"{name} must be in [0, 1], got {value!r}", hint=f"pass a {name} between 0 and 1")


def check_positive(name: str, value: Any) -> None:
    """An integer >= 1 (batch sizes, counts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SeplError(f"{name} must be an integer >= 1, got {value!r}", hint=f"pass {name} of 1 or more")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise SeplError(f"unknown {name} {value!r}", hint=f"use one of {', '.join(map(str, choices))}")


def check_file(name: str, path: Optional[str]) -> None:
    """An existing file (None passes: "not given")."""
    if path is None:
        return
    if not os.path.isfile(os.fspath(path)):
        raise SeplError(f"{name} '{path}' does not exist", hint=f"pass the path of an existing {name} file")


# ---------------------------------------------------------------------------------------
# runs

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("sepl_active_runs", default=None)


class Run:
    """A run writing ``fields`` of ``dataset``: its lease, its plan and its claims.

    Attributes:
        resumed: True when samples already holding the field are kept (resume or join).
        pending: the samples of the view still to compute.
        leader: True for the run that created the lease (it records and clears); False for
            an identical run that joined it.
    """

    def __init__(self, dataset, field: str, fields: List[str], params: Dict[str, Any], view, shared: bool):
        self.dataset = dataset
        self.field = field
        self.fields = fields
        self.key = run_key(field)
        self.params = params
        self.view = view if view is not None else dataset
        self.shared = shared
        self.owner = uuid.uuid4().hex
        self.lease_id = f"{dataset._doc.id}:{field}"
        self.leader = False
        self.resumed = False
        self.pending = self.view
        self.committed = False
        self.closed = False
        self.lost = False
        self.started = _now()
        self._register = False  # leader: (re)create the run record at commit
        self._clear = False  # leader: clear the view's values at commit (overwrite)
        self._fresh = False  # the field held nothing before this run
        self._before = 0
        self._claimed: List[str] = []
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None

    # -- lease -------------------------------------------------------------------------

    def _holder(self, now: datetime) -> Dict[str, Any]:
        return {"owner": self.owner, "pid": os.getpid(), "host": socket.gethostname(), "since": now,
                "expires": now + timedelta(seconds=lease_ttl())}

    def _acquire(self) -> None:
        from pymongo import ReturnDocument
        from pymongo.errors import DuplicateKeyError

        global _pruned
        if not _pruned:  # once per process: records of deleted datasets would pile up
            _pruned = True
            try:
                prune_leases()
            except Exception as e:  # housekeeping only: never stops a run
                log.debug("could not prune leases: %s", e)
        leases = _db()[LEASES]
        h = _hash(self.params)
        waited = False
        while True:
            now = _now()
            leases.update_one({"_id": self.lease_id}, {"$pull": {"holders": {"expires": {"$lt": now}}}})
            try:
                leases.find_one_and_update(
                    {"_id": self.lease_id, "holders": {"$size": 0}},
                    {"$set": {"hash": h, "method": self.params.get("method"), "params": json.dumps(self.params, default=str),
                              "shared": self.shared, "state": "starting", "dataset": self.dataset.name,
                              "field": self.field},
                     "$push": {"holders": self._holder(now)}},
                    upsert=True, return_document=ReturnDocument.AFTER)
                self.leader = True
                return
            except DuplicateKeyError:
                pass
            doc = leases.find_one({"_id": self.lease_id})
            live = [x for x in (doc or {}).get("holders", []) if x["expires"] > now]
            dead = [x for x in live if _dead_here(x)]
            if dead:  # killed on this machine: no need to wait for its lease to expire
                for x in dead:
                    leases.update_one({"_id": self.lease_id}, {"$pull": {"holders": {"owner": x["owner"]}}})
                    _db()[CLAIMS].delete_many({"owner": x["owner"]})
                continue
            if not live:
                continue
            other = live[0]
            who = f"pid {other.get('pid')} on {other.get('host')}, since {other.get('since'):%Y-%m-%d %H:%M:%S} UTC"
            if doc.get("hash") != h:
                old = json.loads(doc.get("params") or "{}")
                raise SeplError(
                    f"field '{self.field}' on dataset '{self.dataset.name}' is being written right now by another "
                    f"'{doc.get('method')}' run with other parameters ({_diff(old, self.params)}; {who})",
                    hint=f"wait for it to finish (a killed run's lease expires {lease_ttl():.0f} s after it stopped), "
                         "or write to another field")
            if not (self.shared and doc.get("shared")):
                raise SeplError(
                    f"an identical '{doc.get('method')}' run is writing field '{self.field}' on dataset "
                    f"'{self.dataset.name}' right now ({who}); this command cannot share its samples",
                    hint="wait for it to finish: rerunning afterwards resumes with anything it left")
            if doc.get("state") == "running":
                joined = leases.find_one_and_update(
                    {"_id": self.lease_id, "hash": h, "state": "running", "holders.0": {"$exists": True}},
                    {"$push": {"holders": self._holder(now)}})
                if joined is not None:
                    self.resumed = True
                    return
                continue
            if not waited:
                log.info("waiting for the identical run on '%s' (%s) to start", self.field, who)
                waited = True
            time.sleep(0.2)

    def _heartbeat(self) -> None:
        while not self._stop.wait(lease_ttl() / 3):
            try:
                self.beat()
            except Exception as e:  # a missed beat is retried; the lease lives ttl seconds
                log.warning("lease heartbeat for '%s' failed: %s", self.field, e)

    def beat(self) -> None:
        """Extend this run's lease and claims by one ttl (the heartbeat thread calls it)."""
        db = _db()
        until = _now() + timedelta(seconds=lease_ttl())
        res = db[LEASES].update_one({"_id": self.lease_id, "holders.owner": self.owner},
                                    {"$set": {"holders.$.expires": until}})
        if res.matched_count == 0 and not self.closed:
            self.lost = True
            log.error("the lease on '%s' was lost (this process stalled longer than %.0f s)", self.field,
                      lease_ttl())
        db[CLAIMS].update_many({"owner": self.owner}, {"$set": {"expires": until}})

    def _start_heartbeat(self) -> None:
        self._beat = threading.Thread(target=self._heartbeat, name=f"sepl-lease-{self.field}", daemon=True)
        self._beat.start()

    # -- plan ---------------------------------------------------------------------------

    def _plan(self, overwrite: bool) -> None:
        """Leader: decide resume / fresh / overwrite from the record; raise to refuse."""
        ds, field = self.dataset, self.field
        previous = ds.get_run_info(self.key).config.serialize() if ds.has_run(self.key) else None
        same = previous is not None and _same(previous, self.params)
        exists = [f for f in self.fields if ds.has_field(f)]
        if not exists:
            self._register, self._fresh = True, True
            return
        if not overwrite:
            if same:
                self.resumed = True
                self.pending = pending_view(self.view, field, True)
                return
            made_by = (f"by an earlier '{previous.get('method')}' run with other parameters "
                       f"({_diff(previous, self.params)})") if previous else "elsewhere"
            raise SeplError(f"field '{field}' already exists on dataset '{ds.name}' (made {made_by})",
                            hint="choose another output field, or pass overwrite (--overwrite in the CLI)")
        outside = self._held_outside(exists)
        if outside and not same:
            what = (f"made by '{previous.get('method')}' with other parameters ({_diff(previous, self.params)})"
                    if previous else "made elsewhere")
            raise SeplError(
                f"overwrite on this view would mix two parameter sets in '{field}': {outside} sample(s) outside "
                f"the view keep values {what}",
                hint="overwrite on the whole dataset (no view), rerun with the field's parameters, "
                     "or write to another field")
        self._register = not same
        self._clear = True
        self._fresh = not outside

    def _held_outside(self, fields: List[str]) -> int:
        """Samples of the dataset outside the view that hold a value of any of ``fields``."""
        if self.view is self.dataset:
            return 0
        import bson

        inside = [bson.ObjectId(i) for i in self.view.values("id")]
        query = {"_id": {"$nin": inside}, "$or": [{f: {"$ne": None}} for f in fields]}
        return self.dataset._sample_collection.count_documents(query)

    # -- commit, claims ------------------------------------------------------------------

    def commit(self) -> None:
        """Apply the plan before the first sample is computed: (re)create the run record and,
        for an overwrite, clear the values the view covers. Idempotent; joiners do nothing."""
        if self.committed:
            return
        self.committed = True
        if not self.leader:
            return
        ds = self.dataset
        if self._register:
            if ds.has_run(self.key):
                ds.delete_run(self.key)
            ds.register_run(self.key, ds.init_run(**dict(self.params, runs=[])))
            _db()[LEASES].update_one({"_id": self.lease_id}, {"$set": {"history": []}})
        if self._clear:
            present = [f for f in self.fields if ds.has_field(f)]
            if present:
                target = ds if self.view is ds else ds.select(self.view.values("id"))
                target.clear_sample_fields(present)
        self._before = self._count()
        db = _db()
        db[CLAIMS].delete_many({"lease": self.lease_id, "expires": {"$lt": _now()}})  # left by killed runs
        db[LEASES].update_one({"_id": self.lease_id}, {"$set": {"state": "running"}})

    def claim(self, ids: Sequence[str]) -> List[str]:
        """The ``ids`` this run computes now: claimed for it, and still without the field.

        Commits on first use. For a shared run each id is claimed by one atomic upsert (one
        bulk write per call); ids another live run holds, or that meanwhile got the field,
        are left out."""
        self.commit()
        if self.lost:
            raise SeplError(f"this run lost its lease on '{self.field}' (it stalled longer than "
                            f"{lease_ttl():.0f} s), so another run may be writing it",
                            hint="rerun the same command: it resumes with the missing samples")
        ids = [str(i) for i in ids]
        if not ids or not self.shared:
            return ids
        import bson
        from pymongo import UpdateOne
        from pymongo.errors import BulkWriteError

        now = _now()
        until = now + timedelta(seconds=lease_ttl())
        keys = [f"{self.lease_id}:{i}" for i in ids]
        ops = [UpdateOne({"_id": k, "$or": [{"owner": self.owner}, {"expires": {"$lt": now}}]},
                         {"$set": {"owner": self.owner, "lease": self.lease_id, "expires": until}}, upsert=True)
               for k in keys]
        taken = set()
        try:
            _db()[CLAIMS].bulk_write(ops, ordered=False)
        except BulkWriteError as e:
            for err in e.details.get("writeErrors", []):
                if err.get("code") != _DUPLICATE:
                    raise
                taken.add(err["index"])
        mine = [i for k, i in enumerate(ids) if k not in taken]
        if not mine:
            return []
        # a sample another run finished (and released) since our pending query has the field now
        done = {str(d["_id"]) for d in self.dataset._sample_collection.find(
            {"_id": {"$in": [bson.ObjectId(i) for i in mine]}, self.field: {"$ne": None}}, {"_id": 1})}
        mine = [i for i in mine if i not in done]
        self._claimed.extend(mine)
        return mine

    def _count(self, ids: Optional[List[str]] = None) -> int:
        import bson

        query: Dict[str, Any] = {self.field: {"$ne": None}}
        if ids is not None:
            query["_id"] = {"$in": [bson.ObjectId(i) for i in ids]}
        return self.dataset._sample_collection.count_documents(query)

    # -- finish ----------------------------------------------------------------------------

    def finish(self, error: Optional[BaseException] = None, keep: bool = False) -> None:
        """Release the lease and claims; record this run in the history, or, when the field
        holds nothing and no other run holds the lease, remove the field and the record
        (``keep``: leave an empty committed field and its record, e.g. for queued shards)."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        db = _db()
        leases, claims = db[LEASES], db[CLAIMS]
        try:
            if not self.committed:
                # nothing was changed: just let go
                return
            written = self._count(self._claimed) if self.shared else max(0, self._count() - self._before)
            others = leases.find_one({"_id": self.lease_id, "holders": {
                "$elemMatch": {"owner": {"$ne": self.owner}, "expires": {"$gt": _now()}}}})
            if not keep and others is None and self._fresh and self._count() == 0:
                self._remove()
                return
            status = "done" if error is None else (
                "interrupted" if isinstance(error, KeyboardInterrupt) else f"failed: {error}"[:300])
            entry = {"pid": os.getpid(), "host": socket.gethostname(), "view": _describe(self.view),
                     "samples": int(written), "started": self.started.isoformat(timespec="seconds"),
                     "finished": _now().isoformat(timespec="seconds"), "status": status,
                     "joined": not self.leader, "resumed": self.resumed}
            doc = leases.find_one_and_update(
                {"_id": self.lease_id}, {"$push": {"history": {"$each": [entry], "$slice": -_HISTORY}}},
                return_document=True)
            try:
                self._mirror((doc or {}).get("history", [entry]))
            except Exception as e:  # the samples are stored; only the listing in the record lags
                log.warning("could not copy the run history into record '%s': %s", self.key, e)
        finally:
            leases.update_one({"_id": self.lease_id}, {"$pull": {"holders": {"owner": self.owner}}})
            claims.delete_many({"owner": self.owner})
            if self.leader and not self.committed:
                leases.delete_one({"_id": self.lease_id, "holders": {"$size": 0}, "history": {"$exists": False}})

    def _mirror(self, history: List[Dict[str, Any]]) -> None:
        """Copy the history into the FiftyOne run record (what ``get_run_info`` shows)."""
        ds = self.dataset
        if not ds.has_run(self.key):
            return
        config = ds.get_run_info(self.key).config.serialize()
        config = {k: v for k, v in config.items() if k not in ("type", "cls")}
        config["runs"] = history
        ds.update_run_config(self.key, ds.init_run(**config))

    def _remove(self) -> None:
        """The run wrote nothing into a field that held nothing: leave no trace."""
        ds = self.dataset
        if ds.has_run(self.key):
            ds.delete_run(self.key)
        for f in self.fields:
            if ds.has_field(f):
                ds.delete_sample_field(f)
        if any(f in ds.mask_targets for f in self.fields):
            ds.mask_targets = {k: v for k, v in ds.mask_targets.items() if k not in self.fields}
            ds.save()
        _db()[LEASES].delete_one({"_id": self.lease_id, "holders": {"$not": {
            "$elemMatch": {"owner": {"$ne": self.owner}}}}})

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, typ, err, tb) -> None:
        self.finish(err)


def start_run(dataset, field: str, method: str, params: Dict[str, Any], overwrite: bool = False,
              extra_fields: Optional[List[str]] = None, view=None, shared: bool = True) -> Run:
    """Lease ``field`` (and ``extra_fields``) for a run of ``method`` with ``params`` on ``view``.

    Returns a ``Run``: ``run.resumed`` tells whether samples holding the field are kept,
    ``run.pending`` are the samples of ``view`` to compute. Call ``run.claim(ids)`` before
    computing ids (or ``run.commit()`` once, for writers that cannot share samples:
    ``shared=False``), and ``run.finish()`` at the end (``@recorded`` writers do it).

    Raises SeplError (changing nothing) when another run with other parameters is writing
    the field, when the field exists and was not made by an identical run (unless
    ``overwrite``), or when an overwrite on ``view`` would leave samples outside it made
    with other parameters. ``params`` must be JSON-serialisable.
    """
    fields = [field] + [f for f in (extra_fields or []) if f != field]
    run = Run(dataset, field, fields, dict(params, method=method, fields=fields), view, shared)
    run._acquire()
    try:
        if run.leader:
            run._plan(overwrite)
        else:
            if overwrite:
                log.warning("an identical run is writing '%s': joining it, nothing is overwritten", field)
            run.pending = pending_view(run.view, field, True)
            run.committed = True
    except BaseException:
        run.finish()
        raise
    run._start_heartbeat()
    active = _ACTIVE.get()
    if active is not None:
        active.append(run)
    return run


def recorded(fn: Callable) -> Callable:
    """Decorate a writer: every run it starts is finished when it returns or raises."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        token = _ACTIVE.set([])
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            for run in reversed(_ACTIVE.get()):
                try:
                    run.finish(e)
                except Exception as e2:  # the writer's error is the one to show
                    log.error("could not release the run on '%s': %s", run.field, e2)
            raise
        else:
            for run in reversed(_ACTIVE.get()):
                run.finish()
            return result
        finally:
            _ACTIVE.reset(token)

    return wrapper


def pending_view(view, field: str, resume) -> Any:
    """The samples of ``view`` still lacking ``field`` when resuming, else all of ``view``.
    ``resume`` is a bool or a ``Run``."""
    if isinstance(resume, Run):
        return resume.pending
    if resume and view._dataset.has_field(field):
        return view.exists(field, False)
    return view


def run_history(dataset, field: str) -> List[Dict[str, Any]]:
    """The runs that wrote ``field`` (oldest first): pid, host, view, samples, status, ..."""
    key = run_key(field)
    if not dataset.has_run(key):
        return []
    return list(dataset.get_run_info(key).config.serialize().get("runs") or [])


def delete_run(dataset, field: str, delete_fields: bool = True) -> None:
    """Delete the run that produced ``field`` and, by default, the fields it made."""
    key = run_key(field)
    if not dataset.has_run(key):
        raise SeplError(f"no sepl run produced field '{field}' on dataset '{dataset.name}'",
                        hint=f"runs here: {dataset.list_runs()}")
    fields = dataset.get_run_info(key).config.serialize().get("fields", [field])
    dataset.delete_run(key)
    lease_id = f"{dataset._doc.id}:{field}"
    _db()[LEASES].delete_one({"_id": lease_id})
    _db()[CLAIMS].delete_many({"lease": lease_id})
    if delete_fields:
        for f in fields:
            if dataset.has_field(f):
                dataset.delete_sample_field(f)
