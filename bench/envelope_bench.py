"""The Foundation envelope benchmarks: `files` (bench.seal_files) and `small`
(bench.small_envelopes), or `all` for both with their default options.

    .venv/bin/python -m bench.envelope_bench files [--repeat 5] [--gib] [--dir PATH]
    .venv/bin/python -m bench.envelope_bench small [--seconds 0.2]
    .venv/bin/python -m bench.envelope_bench all
"""

from __future__ import annotations

import sys

from bench import seal_files, small_envelopes

USAGE = "usage: python -m bench.envelope_bench {files,small,all} [options of that benchmark]"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in {"files", "small", "all"}:
        sys.exit(f"{USAGE}\n\n{__doc__}")
    which, rest = args[0], args[1:]
    if which in {"files", "all"}:
        seal_files.main(rest if which == "files" else [])
    if which in {"small", "all"}:
        small_envelopes.main(rest if which == "small" else [])


if __name__ == "__main__":
    main()
