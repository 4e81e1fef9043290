"""The exceptions that mean "the user can fix this": the CLI prints them as one message, exit 2."""
from neurosym.config import ConfigError
from neurosym.data.examples import DataError
from neurosym.model import ModelError
from neurosym.teacher.errors import TeacherConfigError
from neurosym.train import ResumeMismatch, RunDirError

USER_ERRORS = (ConfigError, DataError, ModelError, RunDirError, ResumeMismatch, TeacherConfigError, FileNotFoundError)
