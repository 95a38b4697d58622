"""The errors a user can fix. Command-line tools turn them into one `error: ...` line (`lnl_jax.cli`)."""


class ConfigError(ValueError):
  """A configuration that cannot build the network or run; the message names the field and a fix."""


class DataError(ValueError):
  """Bad input data (missing files, malformed label lines, ...); the message names path and fix."""


class Preempted(Exception):
  """SIGTERM/SIGINT arrived; a checkpoint of the current step was written before raising."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum
