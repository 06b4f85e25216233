"""The one exception type the CLI turns into a one-line error message and a non-zero exit."""


class LesionPLError(Exception):
    """A problem with the user's input (data, config, run folder) that a message can explain."""
