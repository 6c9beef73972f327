"""Running one library call from an operator: live progress, then its results shown.

FiftyOne drops what a generator ``execute`` returns, so results reach the user this way:

- immediate (in the App): ``execute`` returns a generator that yields ``set_progress``
  triggers while the work runs in a thread, then ``reload_dataset`` and finally
  ``ctx.ops.show_output(outputs, results)``, which puts the results in the operator's
  dialog (the same schema ``resolve_output`` gives);
- delegated: the work runs in the worker with ``ctx.set_progress``, and ``execute``
  returns the results dict, which FiftyOne stores on the run and shows through
  ``resolve_output`` in the Runs panel;
- immediate from Python (``fiftyone.operators.execute_operator``): ``execute`` returns
  the results dict, so ``execute_operator(...).result`` holds them (FiftyOne would
  exhaust a generator and drop its value).

The operator's config needs ``execute_as_generator=True`` so the App streams the messages.
"""

import queue
import threading

from ._util import require_library


def run_operator(ctx, work, outputs, reload=True):
    """The body of an operator's ``execute``.

    Args:
        work: ``work(progress) -> dict`` of JSON-able results, where ``progress(fraction,
            label)`` reports progress.
        outputs: ``outputs(results) -> types.Property``, the schema the results are shown in.
        reload: reload the App's dataset afterwards (the run wrote fields).
    """
    require_library()
    if ctx.delegated:
        return work(lambda f, label: ctx.set_progress(progress=f, label=label))
    if not from_app(ctx):
        results = work(lambda f, label: None)
        if reload:
            ctx.trigger("reload_dataset")
        return results
    return _immediate(ctx, work, outputs, reload)


# keys the App puts in every execution request (``current_sample`` may be null, but is
# always sent); ``execute_operator`` from Python sends only what its caller passes
_APP_KEYS = ("current_sample", "filters", "extended")


def from_app(ctx) -> bool:
    """Whether this immediate execution was requested by the App (which streams a
    generator's messages) rather than by ``execute_operator`` in Python."""
    params = ctx.request_params or {}
    return any(k in params for k in _APP_KEYS)


def _immediate(ctx, work, outputs, reload):
    results = yield from run_with_progress(ctx, work)
    if reload:
        yield ctx.trigger("reload_dataset")
    yield ctx.ops.show_output(outputs(results).to_json(), results)
    return results


def run_with_progress(ctx, fn):
    """Generator: run ``fn(progress)`` in a worker thread, yielding ``set_progress``
    triggers for the App as they come; an exception in ``fn`` is re-raised here. Use it
    as ``result = yield from run_with_progress(ctx, fn)``."""
    updates: "queue.Queue" = queue.Queue()
    out = {}

    def work():
        try:
            out["value"] = fn(lambda f, label: updates.put((f, label)))
        except BaseException as e:  # re-raised in the operator's thread
            out["error"] = e
        finally:
            updates.put(None)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    last = None
    while True:
        item = updates.get()
        if item is None:
            break
        # FiftyOne renders every trigger: skip repeats of the same percent
        key = (round(100 * float(item[0])), item[1])
        if key != last:
            last = key
            yield ctx.ops.set_progress(progress=float(item[0]), label=item[1])
    worker.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")
