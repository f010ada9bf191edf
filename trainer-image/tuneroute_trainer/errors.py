"""Errors that name the offending config field; the CLI maps them to exit codes."""


class InputError(Exception):
    """Bad user input (config, model, data, output path): exit code 2."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was saved (exit code 143 so the Job retries and resumes)."""
