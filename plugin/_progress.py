"""Running one library call from an operator with live progress, immediate or delegated."""

import queue
import threading


def run_with_progress(ctx, fn):
    """Generator: run ``fn(progress)`` where ``progress(fraction, label)`` reports progress.

    Delegated: progress goes to ``ctx.set_progress`` (the run's record). Immediate: ``fn``
    runs in a worker thread and this generator yields ``set_progress`` triggers for the
    App as they come; an exception in ``fn`` is re-raised here. Use it as
    ``result = yield from run_with_progress(ctx, fn)``.
    """
    if ctx.delegated:
        return fn(lambda f, label: ctx.set_progress(progress=f, label=label))
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
    while True:
        item = updates.get()
        if item is None:
            break
        yield ctx.trigger("set_progress", dict(progress=item[0], label=item[1]))
    worker.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")
