"""Keeps a request's event-loop work inside the request.

Pyodide's event loop runs callbacks from JavaScript timers, which fire between requests too:
a callback that a request left scheduled (`loop.call_later(1, spy)`) would run after the reset,
before or during a later request. And asyncio lets KeyboardInterrupt and SystemExit out of a
callback: Pyodide's loop re-raises them into the timer, where they would end the Python thread.

So every callback scheduled on the loop is recorded, and `end_request` (part of the reset)
cancels those still pending. An interrupt or `sys.exit()` that reaches a callback cancels the
request's own task instead, and the request ends as stopped. The loop's hooks are put back at
every reset, since a request can reach the loop object and change them.

While a run awaits, Python takes interrupts only inside its callbacks: one taken in the loop's
own code around them (Pyodide's `run_handle`, outside its `try`) escaped into the JavaScript
timer and ended the worker, or lost the task's next step, which then never finished.
"""

import asyncio
import weakref

# Mutable state lives in this dict: the reset puts this module's globals back as they were.
_live = {"loop": None, "call_later": None, "cancel": None, "interrupts": None, "hooks": {}}
# Pending handles are also held by their JavaScript timers; finished ones drop out.
_scheduled = weakref.WeakSet()


# Steps run per task, for `_retry_if_lost`.
_steps = weakref.WeakKeyDictionary()


def _task_of(callback):
    """The task whose step `callback` is, if it is one (asyncio's C step wrapper)."""
    return callback.__self__ if type(callback).__name__ == "TaskStepMethWrapper" else None


def _interruptible(callback):
    task = _task_of(callback)

    def run(*args):
        if task is not None:
            _steps[task] = _steps.get(task, 0) + 1
        inside = True
        try:
            try:
                _live["interrupts"](1)
            except KeyboardInterrupt:
                # Taken as the opening call returned, before the callback began: it must
                # still run (a task's step, skipped, would leave the task pending for good),
                # and the request is stopped through its task instead.
                _live["cancel"]()
            return callback(*args)
        except KeyboardInterrupt:
            _live["interrupts"](-1)
            inside = False
            if task is not None and not task.done():
                # Taken, maybe, while the step scheduled the next one (the loop's call_soon
                # is Python code): that step is then lost. Steps run in the order they were
                # scheduled, so a check scheduled now runs after it, if it exists.
                check = _live["call_later"](0, _retry_if_lost, task, callback, _steps[task])
                _scheduled.add(check)
            raise
        finally:
            if inside:
                _live["interrupts"](-1)

    return run


def _retry_if_lost(task, step, steps_then):
    """Runs `step` again if the task has taken no step since and waits for nothing: its
    cancellation (the interrupt's) then ends it."""
    if not task.done() and task._fut_waiter is None and _steps.get(task) == steps_then:
        _tracked_call_later(0, step)


def _tracked_call_later(delay, callback, *args, context=None):
    handle = _live["call_later"](delay, _interruptible(callback), *args, context=context)
    _scheduled.add(handle)
    return handle


def _stop_request(_exit_code=None):
    _live["cancel"]()


def install(cancel_request, interrupts_in_callbacks):
    """Hooks the loop; `cancel_request` cancels the running request's task, if any;
    `interrupts_in_callbacks(delta)` counts the callbacks running (+1, -1): an open async run
    takes interrupts only while one does."""
    loop = asyncio.get_event_loop()
    _live.update(
        loop=loop,
        call_later=type(loop).call_later.__get__(loop),
        cancel=cancel_request,
        interrupts=interrupts_in_callbacks,
        hooks={
            # call_soon and call_at go through call_later in Pyodide's loop.
            "call_later": _tracked_call_later,
            "_keyboard_interrupt_handler": _stop_request,
            "_system_exit_handler": _stop_request,
        },
    )
    end_request()


def end_request():
    """Cancels the callbacks the request left pending, and puts the loop's hooks back."""
    for handle in list(_scheduled):
        handle.cancel()
    _scheduled.clear()
    loop = _live["loop"]
    for name, hook in _live["hooks"].items():
        if loop.__dict__.get(name) is not hook:
            setattr(loop, name, hook)
