"""What a task-weighting method is, and the name -> method registry.

A method decides how the task weights λ (`model.lambdas`, one per auxiliary
task; the main loss keeps weight 1) are learned on a meta step. Every method
learns the same λ variable, so λ logging (lambdas.csv), checkpoints, resume,
`tf.distribute`, the figures, export and the study see λ the same way whatever
the method. A method may keep state of its own (a log-variance, initial
losses): it adds those variables to the model (`create_state`), so they are
saved and restored with the weights.

Warm-up and `meta_every` apply to every method alike (`steps.step_kind`): λ
stays fixed for the warm-up, then a meta step of the method runs on one step
in every `meta_every`; the other steps are fixed-λ steps.
"""

from robust_ssl.errors import ConfigError

# name -> WeightingMethod subclass, ordered by (class `order`, name).
REGISTRY = {}


def register_method(cls):
    """Class decorator: adds a `WeightingMethod` subclass to the registry under `cls.name`.

    Args:
      cls: the subclass.

    Returns:
      `cls`, unchanged.

    Raises:
      ValueError: no name, or the name is taken by another class.
    """
    if not cls.name or not isinstance(cls.name, str):
        raise ValueError(f"{cls.__name__} needs a `name`")
    other = REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"method name {cls.name!r} is taken by {other.__module__}.{other.__qualname__}")
    REGISTRY[cls.name] = cls
    ordered = sorted(REGISTRY.items(), key=lambda item: (item[1].order, item[0]))
    REGISTRY.clear()
    REGISTRY.update(ordered)
    return cls


class WeightingMethod:
    """How λ is learned on a meta step.

    Class attributes to set:
      name: the config name (`config.automl.method`).
      order: position in listings.
      uses_meta_batch: the method reads the validation batch ("meta/image",
        "meta/label"); methods that do not still get one from the pipeline
        (the hold-out is left out of training for every method alike, so that
        recipes compared in a study train on the same images) and ignore it.
      reference: the paper, by authors and year (docs and listings).
      DEFAULT_OPTIONS: the method's options (`config.automl.method_options.<name>`)
        and their defaults.

    Methods hold options only; their state lives in model variables.
    """

    name = None
    order = 100
    uses_meta_batch = False
    reference = ""
    DEFAULT_OPTIONS = {}

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.DEFAULT_OPTIONS))
        if unknown:
            raise ConfigError(
                f"weighting method {self.name!r} has no option(s) {unknown}; known: {sorted(self.DEFAULT_OPTIONS)}"
            )
        self.options = {**self.DEFAULT_OPTIONS, **options}
        self.validate_options()

    def validate_options(self):
        """Raises ConfigError for invalid option values (override to check)."""

    def check_lambdas(self, names, lambdas):
        """Raises ConfigError where the initial λ cannot start this method (override to check).

        Args:
          names: task names.
          lambdas: initial λ, one float per task (already checked >= 0).
        """

    def create_state(self, model):
        """Adds the method's own variables to `model` (saved with its weights); none by default.

        Called once from the model's constructor when λ is learned. Keep the
        variables in `model.weighting_state` (a plain dict, name -> variable).

        Args:
          model: the `RobustSSLModel` being built.
        """

    def meta_variables(self, model):
        """The variables the meta optimiser trains: λ itself by default.

        Args:
          model: the `RobustSSLModel`.

        Returns:
          A list of variables.
        """
        return [model.lambdas]

    def meta_step(self, model, batch):
        """One meta step on this replica: λ updated, network gradients returned.

        Args:
          model: the compiled `RobustSSLModel`.
          batch: a training dict (see `robust_ssl.data.pipeline`).

        Returns:
          (this replica's share of the gradients over `model.network_variables`
          (None = zero), losses [L_main, L_1, …], main logits, this replica's
          share of the method's λ objective, logged as `meta_loss`).
        """
        raise NotImplementedError
