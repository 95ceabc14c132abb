"""Namespaces that outlive a request: server-held sessions, and namespaces pickled to bytes
for client-held state and for moving sessions to a new worker.

A namespace is pickled name by name: what cannot be pickled (functions and classes defined
by the code itself, open files, generators) is dropped and named, and modules are kept as
names to import again. Unpickling client-provided bytes runs code, which is no more than the
client's own code may do in the same sandbox.
"""

import base64
import builtins
import importlib
import pickle
import types

_sessions = {}


def fresh_namespace():
    return {"__name__": "__main__", "__builtins__": builtins}


def session_namespace(session_id):
    """The namespace of a server-held session, created on first use."""
    namespace = _sessions.get(session_id)
    if namespace is None:
        namespace = _sessions[session_id] = fresh_namespace()
    return namespace


def drop_session(session_id):
    return _sessions.pop(session_id, None) is not None


def session_ids():
    return sorted(_sessions)


def dump(namespace):
    """Pickles a namespace; returns (base64 text, names that could not be kept)."""
    values, modules, dropped = {}, {}, []
    for name, value in namespace.items():
        if name.startswith("__") and name.endswith("__"):
            continue
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
            continue
        try:
            values[name] = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - anything unpicklable is dropped and named
            dropped.append(name)
    data = pickle.dumps({"values": values, "modules": modules}, protocol=pickle.HIGHEST_PROTOCOL)
    return base64.b64encode(data).decode("ascii"), sorted(dropped)


def load(encoded):
    """A fresh namespace filled from `dump` output; raises ValueError if it is not one."""
    try:
        data = pickle.loads(base64.b64decode(encoded, validate=True))
        values, modules = data["values"], data["modules"]
    except Exception as exc:  # noqa: BLE001 - report any malformed state the same way
        raise ValueError(f"session_bytes is not a pyodide-pool session state: {exc}") from None
    namespace = fresh_namespace()
    for name, module in modules.items():
        namespace[name] = importlib.import_module(module)
    for name, value in values.items():
        namespace[name] = pickle.loads(value)
    return namespace


def export_sessions():
    """Every session pickled, for a worker that is being replaced."""
    exported = {}
    for session_id, namespace in _sessions.items():
        encoded, dropped = dump(namespace)
        exported[session_id] = {"session_bytes": encoded, "dropped": dropped}
    return exported


def import_sessions(exported):
    """Restores sessions from `export_sessions`; returns those that could not be restored, with
    why."""
    failed = {}
    for session_id, entry in exported.items():
        try:
            _sessions[session_id] = load(entry["session_bytes"])
        except Exception as exc:  # noqa: BLE001 - a session that cannot be restored is reported
            failed[session_id] = f"could not be restored on the worker that replaced its own: {exc}"
    return failed
