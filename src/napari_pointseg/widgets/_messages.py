"""How the widgets tell the user something: napari notifications and error texts.

Callers use ``_messages.notify(...)`` through the module (not ``from ... import notify``) so
that tests can replace `notify` in one place and see every message of both widgets.
"""

from __future__ import annotations

from ..core.errors import InputError


def notify(kind: str, msg: str) -> None:
    """Show ``msg`` as a napari notification; ``kind``: "error", "warning" or "info"."""
    from napari.utils import notifications

    {
        "error": notifications.show_error,
        "warning": notifications.show_warning,
        "info": notifications.show_info,
    }[kind](msg)


def error_text(exc: BaseException) -> str:
    """What the user reads for ``exc``: an InputError's own words, else its type and text."""
    if isinstance(exc, InputError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
