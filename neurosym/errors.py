"""The exceptions that mean "the user can fix this": the CLI prints them as one message, exit 2.

Every such error subclasses :class:`UserError`. This module imports nothing, so the CLI can catch
user errors without importing the training stack (each verb imports only what it runs).
"""


class UserError(Exception):
    """Bad input or a state the user can fix; the message says what, where and how."""


class RunDirError(UserError, RuntimeError):
    """The run directory cannot be used as asked (taken, locked, not writable, not a run)."""


class ResumeMismatch(UserError, RuntimeError):
    """A checkpoint does not belong to this job (other base model, restored state disagrees, ...)."""


class TrainingDiverged(UserError, RuntimeError):
    """The loss or gradient norm became non-finite; the run stopped before the step reached the weights."""


class TeacherDownStop(UserError, RuntimeError):
    """The teacher refused for good (401/403/404) and ``symbolic.on_teacher_down: stop`` was asked for."""


class CheckpointSaveFailed(UserError, RuntimeError):
    """A checkpoint could not be written (disk full, quota, read-only disk): the message names the step,
    the last good checkpoint (earlier ones are intact) and how to resume once the disk is fixed."""


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, (UserError, FileNotFoundError))
