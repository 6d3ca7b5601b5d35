"""Errors of the search that the CLI handles by class; this module imports nothing, so the CLI
can catch them without loading the search's dependencies."""


class SearchInterrupted(RuntimeError):
    """The search stopped before every trial finished (Ctrl-C, SIGUSR1); resumable."""
