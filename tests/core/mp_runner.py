"""Runs the ``test_*`` functions of tests/core modules where pytest does not exist (MicroPython).

firmware/micropython/run.mjs imports this module inside the WebAssembly port and calls
``run_module`` once per test file, then ``print_summary``. It also works under CPython
(``python -m tests.core.mp_runner tests.core.test_bloom``), which is how its own test checks it.
A test passes by returning, is skipped by raising ``support.Skipped`` and fails by raising
anything else. Output ends with the plain ``N passed, N failed, N skipped`` line.
"""

import sys

_totals = [0, 0, 0]  # passed, failed, skipped


def _print_exception(exc):
    try:
        sys.print_exception(exc)  # MicroPython
    except AttributeError:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stdout)


def _skip_reason(exc):
    # pytest's Skipped (CPython) and support.Skipped (MicroPython) share the class name.
    if type(exc).__name__ in ("Skipped", "Skip"):
        return str(exc.args[0]) if exc.args else "skipped"
    return None


def run_module(name):
    """Import module ``name``, call each top-level test_* function; return the failure count."""
    try:
        mod = __import__(name)
    except Exception as exc:  # a module-level skip (a core module that does not exist yet)
        reason = _skip_reason(exc)
        if reason is None:
            raise
        _totals[2] += 1
        print("SKIP %s: %s" % (name, reason))
        return 0
    for part in name.split(".")[1:]:
        mod = getattr(mod, part)
    names = sorted(n for n in dir(mod) if n.startswith("test_") and callable(getattr(mod, n)))
    failed = 0
    for n in names:
        label = "%s::%s" % (name, n)
        try:
            getattr(mod, n)()
        except BaseException as exc:  # noqa: B036 - a runner reports every outcome
            if isinstance(exc, KeyboardInterrupt):
                raise
            reason = _skip_reason(exc)
            if reason is not None:
                _totals[2] += 1
                print("SKIP %s: %s" % (label, reason))
                continue
            failed += 1
            _totals[1] += 1
            print("FAIL %s" % label)
            _print_exception(exc)
            continue
        _totals[0] += 1
        print("PASS %s" % label)
    return failed


def failed_count():
    """How many tests failed so far, over every module run."""
    return _totals[1]


def print_summary():
    """Print the closing ``N passed, N failed, N skipped`` line."""
    print("%d passed, %d failed, %d skipped" % tuple(_totals))


def main(argv):
    failed = 0
    for name in argv:
        failed += run_module(name)
    print_summary()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
