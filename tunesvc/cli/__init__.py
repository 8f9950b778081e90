"""The ``tunesvc`` command: thin Typer commands over :mod:`tunesvc.service`.

Only this package prints or exits. A :class:`~tunesvc.TunesvcError` becomes one red line on
stderr and its exit code; anything else is a bug and keeps its traceback.
"""
