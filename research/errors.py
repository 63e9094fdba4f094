"""User-facing input errors: one line that names the file or key and the problem."""


class InputError(Exception):
    """Bad input a user can fix (missing file, wrong shape, NaNs, unknown key).

    The CLI prints ``error: <message>`` and exits with status 2, with no traceback.
    """

