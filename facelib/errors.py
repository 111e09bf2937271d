"""The one exception type the command line turns into a single clear error line."""


class FacelibError(Exception):
    """A problem with the user's input (a file, a field, an option), stated in one line."""
