"""The interface every auxiliary objective implements, and the task registry.

A task is one module in `robust_ssl/tasks/` with a `Task` subclass decorated
by `@register_task`; the package imports every module there, so nothing else
names a task. The rest of the package (training, AutoML, tuning, evaluation,
export's SSL probes, `show-tasks`, the benchmark) reads what it needs from the
registry and from the class's declarations.
"""

import dataclasses
import zlib
from collections.abc import Callable

import tensorflow as tf

from robust_ssl.errors import ConfigError

# name -> Task subclass, ordered by (class `order`, name).
REGISTRY = {}


def register_task(cls):
    """Class decorator: adds a `Task` subclass to the registry under `cls.name`.

    Raises:
      ValueError: no name, or the name is taken by another class.
    """
    if not cls.name or not isinstance(cls.name, str):
        raise ValueError(f"{cls.__name__} needs a `name`")
    other = REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"task name {cls.name!r} is taken by {other.__module__}.{other.__qualname__}")
    REGISTRY[cls.name] = cls
    ordered = sorted(REGISTRY.items(), key=lambda item: (item[1].order, item[0]))
    REGISTRY.clear()
    REGISTRY.update(ordered)
    return cls


@dataclasses.dataclass
class Forward:
    """What a task's `predict` may use from the step's shared forward pass.

    Attributes:
      clean_features: trunk features of the clean batch, [B, F] (the forward
        that updates the batch-norm moving averages).
      clean_logits: the main classifier's logits on the clean batch, [B, K].
      encode: images -> features; runs the trunk on another input with its own
        batch statistics and no moving-average update.
      classify: features -> logits of the main classifier.
      joint_features: {task name: features of that task's inputs} for the
        tasks whose inputs went through the clean forward together with the
        clean batch (`Task.joins_clean_forward`), normalised by batch norm
        together with it; rows in the order `flatten_views` gives.
    """

    clean_features: tf.Tensor
    clean_logits: tf.Tensor
    encode: Callable
    classify: Callable
    joint_features: dict = dataclasses.field(default_factory=dict)


class Task:
    """An auxiliary objective: its inputs, targets, head (if any) and loss.

    A task turns a clean batch of images in [0, 1] into inputs and targets
    (`make_batch`: pure TensorFlow, stateless-seeded, so it runs the same
    eagerly, in `tf.data` and in a graph), predicts from the shared forward
    pass (`predict`) and scores per example (`per_example_loss`).

    Two kinds:
    - self-supervised heads (`uses_classifier = False`): the task owns a head
      (`build_head`) on the trunk's features; its gradient reaches the trunk
      and its head;
    - classifier objectives (`uses_classifier = True`, no head): the loss is
      computed from the main classifier's predictions on transformed inputs
      (e.g. a consistency loss); its gradient reaches the trunk and the
      classifier, and the hypergradient covers that.

    Class attributes to set:
      name: the config name (`config.tasks`).
      order: position in listings (the paper's Table 1 is 1–7).
      uses_clean_input: the head reads the clean batch's features (no extra
        trunk forward, no "inputs" in the batch).
      uses_classifier: see above.
      default_weight: the λ configs start from (0.5, the paper's value).
      DEFAULT_OPTIONS: the task's options and their defaults.
      probe_classes: > 0 where the task classifies among `probe_classes`
        transformations of an image (`probe_inputs`; transformation 0 is the
        identity): export's SSL probes and test-time checks use it.
    """

    name = None
    order = 100
    uses_clean_input = False
    uses_classifier = False
    default_weight = 0.5  # λ a config starts from (the paper's 0.5 for single tasks)
    DEFAULT_OPTIONS = {}
    probe_classes = 0

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.DEFAULT_OPTIONS))
        if unknown:
            raise ConfigError(
                f"task {self.name!r} has no option(s) {unknown}; known: {sorted(self.DEFAULT_OPTIONS)}"
            )
        self.options = {**self.DEFAULT_OPTIONS, **options}
        self.validate_options()

    def validate_options(self):
        """Raises ConfigError for invalid option values (override to check)."""

    def joins_clean_forward(self):
        """Whether this task's inputs share the clean batch's trunk forward.

        True: the step concatenates the task's inputs (`flatten_views` of
        them) with the clean batch into one forward, so batch norm normalises
        them together and its moving averages see them (AugMix's code does
        this); `predict` finds the features in `Forward.joint_features`.
        False (the default): the inputs get a forward of their own with their
        own batch statistics and no moving-average update.
        """
        return False

    def check_image_shape(self, image_shape):
        """Raises ConfigError (one line) if the task cannot serve this image shape.

        The default accepts what `head_output_shape` accepts.
        """
        try:
            self.head_output_shape(tuple(image_shape))
        except ValueError as e:
            raise ConfigError(f"task {self.name!r}: {e}") from None

    @property
    def seed_salt(self):
        """A stable integer that makes this task's random stream its own."""
        return zlib.crc32(self.name.encode()) & 0x7FFFFFFF

    def task_seed(self, seed):
        """Derives this task's stateless seed from the batch seed."""
        return tf.random.experimental.stateless_fold_in(seed, self.seed_salt)

    def make_batch(self, images, seed):
        """Makes the task's inputs and targets from a clean batch.

        Args:
          images: float32 [B, H, W, 3] in [0, 1].
          seed: int32/int64 [2] stateless seed of this batch.

        Returns:
          A dict with "targets" and, unless `uses_clean_input`, "inputs"; every
          tensor's leading dimension is B so batches split across replicas.
        """
        raise NotImplementedError

    def head_output_shape(self, image_shape):
        """Shape of the head's output for one feature vector (None: no head).

        Args:
          image_shape: (H, W, C) of the images.

        Returns:
          A tuple, e.g. (4,) or (H, W, 3); None for classifier objectives.

        Raises:
          ValueError: the head cannot be sized for these images.
        """
        raise NotImplementedError

    def build_head(self, feature_dim, image_shape=(32, 32, 3)):
        """Returns this task's head as a built Keras model (None: no head).

        Args:
          feature_dim: size of the trunk's feature vector.
          image_shape: (H, W, C) of the images (decoders are sized from it).
        """
        raise NotImplementedError

    def predict(self, head, forward, inputs, training=True):
        """Runs the head (or the classifier) on the right features.

        Args:
          head: the model returned by `build_head` (None for classifier
            objectives).
          forward: the step's `Forward`.
          inputs: the "inputs" tensor from `make_batch` (None if clean input).
          training: forwarded to the head.

        Returns:
          The predictions `per_example_loss` scores.
        """
        features = forward.clean_features if self.uses_clean_input else forward.encode(inputs)
        return head(features, training=training)

    def per_example_loss(self, targets, predictions):
        """Returns the loss of each example, float32 [B]."""
        raise NotImplementedError

    def probe_inputs(self, images, k):
        """Images transformed by transformation class k (tasks with `probe_classes`).

        Args:
          images: float32 [N, H, W, 3] in [0, 1].
          k: a Python int in [0, probe_classes).

        Returns:
          float32 [N, H, W, 3]: what the task's head must classify as k.
        """
        raise NotImplementedError(f"task {self.name!r} has no probe")

    def display_inputs(self, images, seed):
        """Returns one [B, H, W, 3] image per example to show what the task sees."""
        batch = self.make_batch(images, seed)
        return batch.get("inputs", images)


def flatten_views(inputs):
    """[B, V, H, W, C] -> [V·B, H, W, C], view-major (all first views, then all second, …)."""
    return tf.reshape(tf.transpose(inputs, [1, 0, 2, 3, 4]), [-1, *inputs.shape[2:]])


def mean_over_non_batch_axes(x):
    """Averages everything but the leading (batch) axis."""
    axes = list(range(1, len(x.shape)))
    return tf.reduce_mean(x, axis=axes) if axes else x


def loss_dtype(x):
    """Losses are computed in float32 (also under mixed precision), float64 stays."""
    return tf.float64 if x.dtype == tf.float64 else tf.float32


def sparse_ce(labels, logits):
    """Per-element sparse softmax cross-entropy in `loss_dtype(logits)`."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, loss_dtype(logits))
    )


def random_indices(seed, batch_size, num_classes):
    """Uniform int32 labels in [0, num_classes) from a stateless seed."""
    return tf.random.stateless_uniform([batch_size], seed=seed, minval=0, maxval=num_classes, dtype=tf.int32)
