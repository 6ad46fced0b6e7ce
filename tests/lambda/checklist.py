"""Runs checks in order, each free to use what earlier ones left; after a failure the rest
are skipped, since later checks build on earlier ones. Prints one line per check and
`<label>: N passed, M failed`. Python standard library only."""

import time
import traceback


class Checklist:
    def __init__(self, label):
        self.label = label
        self.checks = []

    def __call__(self, fn):
        """Decorator: adds `fn` as the next check."""
        self.checks.append(fn)
        return fn

    def run(self):
        """Runs every check; returns the process exit code."""
        passed = failed = skipped = 0
        broken = None
        for fn in self.checks:
            name = fn.__name__
            if broken:
                skipped += 1
                print(f"SKIP {name} (after {broken} failed)", flush=True)
                continue
            started = time.time()
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - every failure is reported the same way
                failed += 1
                broken = name
                print(f"FAIL {name} ({time.time() - started:.1f}s): {e}", flush=True)
                if not isinstance(e, AssertionError):
                    traceback.print_exc()
                continue
            passed += 1
            print(f"PASS {name} ({time.time() - started:.1f}s)", flush=True)
        print(f"{self.label}: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
        return 0 if failed == 0 and skipped == 0 else 1
