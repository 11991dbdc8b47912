"""One way for every `python -m reset.*` command to end: exit codes, error lines, provenance sidecars.

    if __name__ == "__main__":
        sys.exit(run_cli(main))

Exit codes (docs/design.md#exit-codes):
  0  success
  1  the run failed (a runtime failure of our own, `RunFailure`), or an unexpected error,
     which keeps its traceback
  2  bad usage or bad input: argparse errors, a missing file, text that is not JSON, a
     `ValueError` raised by this package (its message names the file, line, key or dataset),
     `InputError`
  3  a paid judge step was refused by its budget (`python -m reset.judge`, its `estimate`,
     `python -m reset.evaluate score`)
An error class may name its own code in an `exit_code` attribute (the judge's errors do).
130  interrupted (Ctrl-C)

An expected error prints one line, `<prog>: error: <message>`, on stderr. On success the job's
provenance sidecar is written beside its output (reset/sidecar.py).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


class InputError(ValueError):
    """Bad input or settings given to a command (exit code 2)."""


class RunFailure(RuntimeError):
    """The command could not finish its work although its input was fine (exit code 1)."""


def _raised_here(err: BaseException) -> bool:
    """Whether the innermost frame of `err`'s traceback is code of this package."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)


def exit_code(err: BaseException) -> int | None:
    """The exit code of an expected error; None for an unexpected one (its traceback is shown)."""
    if isinstance(getattr(err, "exit_code", None), int):   # an error class that names its code
        return err.exit_code
    if isinstance(err, (InputError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return 2
    if isinstance(err, RunFailure):
        return 1
    if isinstance(err, json.JSONDecodeError) or (isinstance(err, ValueError) and _raised_here(err)):
        return 2
    return None


def _prog() -> str:
    """`reset.<module>`: the module run with -m (a package's __main__ counts as the package)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None:
        return Path(sys.argv[0]).stem if sys.argv else "reset"
    return spec.name.removesuffix(".__main__")


def message(err: BaseException) -> str:
    text = str(err)
    if isinstance(err, json.JSONDecodeError):
        return f"not valid JSON: {text}"
    if isinstance(err, OSError) and err.strerror is None and text and not any(c.isspace() for c in text):
        return f"no such file or directory: {text}"  # raised with the bare path (pandas, pyarrow)
    return text


def run_cli(main, argv=None, *, prog: str | None = None, sidecar: bool = True) -> int:
    """Run `main(argv)`, turning expected errors into one stderr line and an exit code."""
    from reset import sidecar as sidecars

    prog = prog or _prog()
    with sidecars.job(prog) if sidecar else contextlib.nullcontext() as job:
        try:
            code = main(argv)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except SystemExit as err:  # argparse and `raise SystemExit("message")`
            if isinstance(err.code, str):
                print(f"{prog}: error: {err.code.removeprefix('error: ')}", file=sys.stderr)
                return 2
            return err.code if isinstance(err.code, int) else 0
        except Exception as err:
            code = exit_code(err)
            if code is None:
                raise
            print(f"{prog}: error: {message(err)}", file=sys.stderr)
            return code
        code = 0 if code is None else int(code)
        if code == 0 and job is not None:
            job.write()
        return code
