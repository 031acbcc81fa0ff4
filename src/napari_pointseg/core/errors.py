"""Errors the interfaces (CLI, widgets) turn into one clear message instead of a traceback."""


class InputError(ValueError):
    """Bad user input: a missing or malformed file, inconsistent shapes, too few classes...

    The message is meant to be shown to the user as is.
    """
