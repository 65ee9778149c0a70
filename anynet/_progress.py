"""Progress bars: tqdm's when asked for and installed (the `progress` extra), else nothing at all."""

from __future__ import annotations

import sys


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        pass

    def set_postfix_str(self, text):
        pass


def progress_bar(show: bool | None, **options):
    """A tqdm bar (``show`` None: only when stderr is a terminal), or a stand-in with the same methods."""
    if show is None:
        show = sys.stderr.isatty()
    if show:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return _NoBar()
        return tqdm(file=sys.stderr, **options)
    return _NoBar()
