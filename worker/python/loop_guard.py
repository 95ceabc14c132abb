"""Keeps a request's event-loop work inside the request.

Pyodide's event loop runs callbacks from JavaScript timers, which fire between requests too:
a callback that a request left scheduled (`loop.call_later(1, spy)`) would run after the reset,
before or during a later request. And asyncio lets KeyboardInterrupt and SystemExit out of a
callback: Pyodide's loop re-raises them into the timer, where they would end the Web Worker.

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


def _interruptible(callback):
    def run(*args):
        try:
            _live["interrupts"](True)
        except KeyboardInterrupt:
            # Taken as the opening call returned, before the callback began: it must still
            # run (a task's step, skipped, would leave the task pending for good), and the
            # request is stopped through its task instead.
            _live["cancel"]()
        try:
            return callback(*args)
        finally:
            _live["interrupts"](False)

    return run


def _tracked_call_later(delay, callback, *args, context=None):
    handle = _live["call_later"](delay, _interruptible(callback), *args, context=context)
    _scheduled.add(handle)
    return handle


def _stop_request(_exit_code=None):
    _live["cancel"]()


def install(cancel_request, set_interrupts):
    """Hooks the loop; `cancel_request` cancels the running request's task, if any;
    `set_interrupts(on)` opens or closes the run to interrupts (only while a run is open)."""
    loop = asyncio.get_event_loop()
    _live.update(
        loop=loop,
        call_later=type(loop).call_later.__get__(loop),
        cancel=cancel_request,
        interrupts=set_interrupts,
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
