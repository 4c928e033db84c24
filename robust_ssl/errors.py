"""Errors that reach the user as one clear line."""


class UserError(Exception):
    """A problem with the user's input (config, data, paths) that they can fix.

    The command-line tools print `error: <message>` and exit with status 2 on this
    error, without a traceback.
    """


class ConfigError(UserError, ValueError):
    """An invalid or inconsistent configuration, detected before any training."""


class TrainingDivergedError(UserError, RuntimeError):
    """A loss or the λ gradient became NaN/Inf; the last checkpoint is kept."""


SYNC_BN_XLA_ERROR = (
    "model.sync_batch_norm all-reduces inside the forward pass, which XLA cannot "
    "compile: with several replicas turn off train.jit_compile or model.sync_batch_norm"
)
