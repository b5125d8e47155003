"""Domain errors with stable codes; the API maps them to HTTP statuses in one place."""

from __future__ import annotations


class KilnError(Exception):
    """Base of every error a caller can act on."""

    code = "kiln_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(KilnError):
    code = "not_found"


class Conflict(KilnError):
    code = "conflict"


class InvalidSpec(KilnError):
    """The job spec is well-formed JSON but describes a network or setup that cannot work."""

    code = "invalid_spec"


class InvalidInput(KilnError):
    """A prediction input does not match the version's signature."""

    code = "invalid_input"


class NotAcceptable(KilnError):
    """The response cannot be given in the media type the request accepts."""

    code = "not_acceptable"


class InvalidDataset(KilnError):
    """An upload Kiln cannot read; `field` names the row, column or file."""

    code = "invalid_dataset"


class PayloadTooLarge(KilnError):
    code = "payload_too_large"


class Unavailable(KilnError):
    """A backing service (database, broker) cannot be reached right now."""

    code = "unavailable"


class Overloaded(Unavailable):
    """A model already holds KILN_MAX_QUEUED_ROWS rows: a 503 to retry after `retry_after_s`, not a pile-up."""

    code = "overloaded"
    retry_after_s = 1


class TrainingFailed(KilnError):
    """Training, export or the parity check failed; the message is shown on the job."""

    code = "training_failed"
