"""What `robust-ssl benchmark` times: the training modes, the settings, a mode's config and data.

A *mode* is one way of training (baseline, fixed λ, AutoML fast or naive, …; see
`MODES`) with one of the task sets of `task_set`: none, the paper's four tasks
(those of the packaged `automl4` config), the first of them, or every
registered task. `mode_config` turns a base experiment config and the
`Settings` into the config of one mode; `example_data` generates the images
it trains on. Nothing here imports TensorFlow at module level, so the command
line can check its flags before TensorFlow loads.
"""

import dataclasses
import functools

from robust_ssl import configs, precision
from robust_ssl.errors import UserError

# The deprecated --mixed_precision -> the Keras policy (`robust_ssl.precision`).
MIXED_PRECISION = {"": precision.FLOAT32, **{name: precision.ALIASES[name] for name in ("bf16", "fp16")}}

# The task sets of the modes, by what they are rather than by task names: the
# paper's four tasks are those of the packaged config PAPER_CONFIG (Fig. 2),
# one task is the first of them, all tasks every registered one.
PAPER_CONFIG = "automl4"
NO_TASKS, ONE_TASK, PAPER_TASKS, ALL_TASKS = "none", "one", "paper", "all"


@functools.cache
def task_set(kind):
    """The task names of a task set.

    Args:
      kind: NO_TASKS; PAPER_TASKS, the `tasks` of the PAPER_CONFIG config;
        ONE_TASK, the first of those; ALL_TASKS, every task with its own head
        (`robust_ssl.tasks.self_supervised_task_names`);
        "config:<name>", the `tasks` of that packaged config.

    Returns:
      A tuple of task names.
    """
    if kind == NO_TASKS:
        return ()
    from robust_ssl.tasks import parse_task_names, self_supervised_task_names

    if kind == ALL_TASKS:
        return tuple(self_supervised_task_names())
    if kind.startswith("config:"):  # the tasks of a packaged config
        return parse_task_names(configs.load(kind.split(":", 1)[1]).tasks)
    paper = parse_task_names(configs.load(PAPER_CONFIG).tasks)
    return {PAPER_TASKS: paper, ONE_TASK: paper[:1]}[kind]


@dataclasses.dataclass(frozen=True)
class Mode:
    """One way of training to time.

    Attributes:
      name: key in `MODES`.
      text: one line for the table; "{tasks}" stands for the task names.
      task_set: which tasks (see `task_set`).
      automl: None (fixed λ), "fast" or "naive" (the lookahead's computation).
      method: how λ is learned when `automl` is set (`config.automl.method`,
        a name of `robust_ssl.weighting.METHODS`).
      meta_every: meta step every k-th step; None = the `--meta_every` setting.
      jit_compile: XLA; None = the `--jit_compile` setting.
    """

    name: str
    text: str
    task_set: str = NO_TASKS
    automl: str | None = None
    meta_every: int | None = None
    jit_compile: bool | None = None
    method: str = "lookahead"

    @property
    def tasks(self):
        """The self-supervision task names."""
        return task_set(self.task_set)

    @property
    def description(self):
        """`text` with the task names."""
        return self.text.format(tasks="+".join(self.tasks))


MODES = {
    m.name: m
    for m in (
        Mode("baseline", "no self-supervision"),
        Mode("baseline_xla", "no self-supervision, XLA", jit_compile=True),
        Mode("baseline_noxla", "no self-supervision, no XLA", jit_compile=False),
        Mode("fixed_rotation", "fixed λ, {tasks}", ONE_TASK),
        Mode("fixed4", "fixed λ, {tasks}", PAPER_TASKS),
        Mode("fixed4_xla", "fixed λ, {tasks}, XLA", PAPER_TASKS, jit_compile=True),
        Mode("fixed7", "fixed λ, all tasks: {tasks}", ALL_TASKS),
        Mode("automl4_fast", "AutoML fast, {tasks}", PAPER_TASKS, "fast"),
        Mode("automl4_fast_every4", "AutoML fast, {tasks}, meta every 4th step", PAPER_TASKS, "fast", 4),
        Mode("automl4_naive", "AutoML naive (Algorithm 1), {tasks}", PAPER_TASKS, "naive"),
        Mode("automl7_fast", "AutoML fast, all tasks: {tasks}", ALL_TASKS, "fast"),
        # The other ways of learning λ (robust_ssl/weighting/), on the same four tasks.
        Mode("uncertainty4", "uncertainty weighting, {tasks}", PAPER_TASKS, "fast", method="uncertainty"),
        Mode("gradnorm4", "GradNorm, {tasks}", PAPER_TASKS, "fast", method="gradnorm"),
        Mode(
            "auto_lambda4",
            "Auto-Lambda (finite difference), {tasks}",
            PAPER_TASKS,
            "fast",
            method="auto_lambda",
        ),
        Mode("fixed_augmix", "fixed λ, {tasks} (the augmix config)", "config:augmix"),
        Mode(
            "automl_augmix_fast",
            "AutoML fast, {tasks} (the automl_augmix config)",
            "config:automl_augmix",
            "fast",
        ),
    )
}
DEFAULT_MODES = ("baseline", "fixed_rotation", "fixed4", "automl4_fast", "automl4_naive", "automl7_fast")
REFERENCE_MODE = "fixed4"


@dataclasses.dataclass
class Settings:
    """What to benchmark and how long.

    Attributes:
      depth, width: WideResNet size (WRN-40-2 by default).
      batch_size: labelled batch B.
      meta_batch_size: validation batch of the meta step.
      steps: timed steps per mode (after warm-up).
      warmup_steps: untimed steps first (the first one traces and compiles).
      meta_every: default k of the AutoML modes that do not set their own.
      jit_compile: default XLA setting of the modes that do not set their own.
      precisions: the precisions to time each mode in (names
        `robust_ssl.precision.canonical` accepts: "float32", "bfloat16",
        "float16", "auto", …); with several, each mode's steps in all of them
        alternate in one process (paired rounds), the first is the main table's.
      mixed_precision: deprecated (the old --mixed_precision): "" (float32),
        "bf16" or "fp16"; stands for `precisions` when that is left as it is.
      seed: seed of the data and the weights.
      pipeline: also benchmark the input pipeline and the task transforms.
      pipeline_batches: batches timed in the input-pipeline benchmark.
      transform_repeats: timed calls of `make_task_batch` per task set.
      num_train: generated training images the pipeline shuffles and serves.
      pipeline_folder: an image folder (`train/<class>/…`, `test/…`) whose
        training images the pipeline benchmark serves instead of generated
        ones: real decoding, in memory or streamed from disk.
      pipeline_in_memory: "auto", True or False: how that folder is held
        (`datasets.load_folder`'s rule).
      isolate: run each mode in its own subprocess (clean peak memory).
      interleave: time all modes in one process, one step of each in turn
        (`run_interleaved`: steadier ratios on a loaded machine).
    """

    depth: int = 40
    width: int = 2
    batch_size: int = 64
    meta_batch_size: int = 25
    steps: int = 10
    warmup_steps: int = 2
    meta_every: int = 1
    jit_compile: bool = False
    precisions: tuple = (precision.FLOAT32,)
    mixed_precision: str = ""
    seed: int = 0
    pipeline: bool = True
    pipeline_batches: int = 100
    transform_repeats: int = 20
    num_train: int = 2048
    pipeline_folder: str = ""
    pipeline_in_memory: object = "auto"
    isolate: bool = True
    interleave: bool = False


def quick_settings(**overrides):
    """Settings of a CI smoke run: WRN-10-1, batch 16, 3 timed steps.

    Args:
      **overrides: fields of `Settings` to set.

    Returns:
      `Settings`.
    """
    quick = dict(
        depth=10,
        width=1,
        batch_size=16,
        meta_batch_size=8,
        steps=3,
        warmup_steps=1,
        pipeline_batches=5,
        transform_repeats=3,
        num_train=128,
    )
    quick.update(overrides)
    return Settings(**quick)


def parse_modes(spec):
    """Parses "fixed4,automl4_fast" (or "all") into known mode names.

    Raises:
      UserError: on an unknown or empty list.
    """
    if spec.strip() == "all":
        return list(MODES)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UserError("--modes is empty")
    for name in names:
        if name not in MODES:
            raise UserError(f"unknown mode {name!r}; choose from {', '.join(MODES)} (or 'all')")
    return list(dict.fromkeys(names))


def check_settings(settings):
    """Raises UserError for invalid settings (before TensorFlow loads)."""
    from robust_ssl.networks import check_depth

    try:
        check_depth(settings.depth)
    except ValueError as e:
        raise UserError(str(e)) from None
    for key in ("width", "batch_size", "meta_batch_size", "steps", "meta_every"):
        if getattr(settings, key) < 1:
            raise UserError(f"--{key} must be >= 1; got {getattr(settings, key)}")
    if settings.warmup_steps < 1:
        raise UserError("--warmup_steps must be >= 1 (the first step traces and compiles)")
    if settings.mixed_precision not in MIXED_PRECISION:
        raise UserError(
            f"--mixed_precision must be one of '', 'bf16', 'fp16'; got {settings.mixed_precision!r}"
        )
    if settings.mixed_precision and tuple(settings.precisions) != Settings.precisions:
        raise UserError("give --precision or the deprecated --mixed_precision, not both")
    if not settings.precisions:
        raise UserError("--precision is empty")
    for name in settings.precisions:
        try:
            precision.canonical(name)
        except ValueError as e:
            raise UserError(f"--precision: {e}") from None
    if settings.pipeline and (settings.pipeline_batches < 1 or settings.transform_repeats < 1):
        raise UserError("--pipeline_batches and --transform_repeats must be >= 1")


def precisions_of(settings, resolve=precision.resolve_precision):
    """The Keras policies a benchmark times, in order, without repeats.

    Args:
      settings: `Settings` (`precisions`, or the deprecated `mixed_precision`).
      resolve: resolves "auto" (`robust_ssl.precision.resolve_precision`;
        looks at this machine's devices).

    Returns:
      A list of values of `robust_ssl.precision.POLICIES`.
    """
    if settings.mixed_precision:
        return [MIXED_PRECISION[settings.mixed_precision]]
    policies = []
    for name in settings.precisions:
        policy = precision.canonical(name)
        if policy == precision.AUTO:
            policy = resolve(policy)[0]
        policies.append(policy)
    return list(dict.fromkeys(policies))


def base_config(config_dict):
    """The base experiment config as a ConfigDict.

    Args:
      config_dict: the base experiment config as a plain dict (what the
        command line and the benchmark's subprocesses pass).

    Returns:
      A ConfigDict.

    Raises:
      UserError: no config given.
    """
    import ml_collections

    if config_dict is None:
        raise UserError("no base config given (`robust-ssl benchmark` passes the `default` config)")
    return ml_collections.ConfigDict(config_dict)


def mode_config(base, mode, settings):
    """The experiment config of one mode (base config + benchmark settings).

    Args:
      base: ConfigDict of the base experiment (the packaged `default` config by default).
      mode: a `Mode`.
      settings: `Settings`.

    Returns:
      A new ConfigDict.
    """
    config = base.copy_and_resolve_references()
    config.tasks = ",".join(mode.tasks)
    config.model.depth = settings.depth
    config.model.width = settings.width
    config.train.batch_size = settings.batch_size
    with config.ignore_type():  # the field takes True, False or "auto" (robust_ssl/configs/default.py)
        config.train.jit_compile = bool(
            settings.jit_compile if mode.jit_compile is None else mode.jit_compile
        )
    config.automl.enabled = mode.automl is not None
    config.automl.mode = mode.automl or "fast"
    config.automl.method = mode.method
    config.automl.meta_every = int(mode.meta_every or settings.meta_every)
    config.automl.meta_batch_size = settings.meta_batch_size
    config.automl.warmup_epochs = 0  # meta step active from step 0
    config.seed = settings.seed
    return config


def example_data(settings, num_train):
    """Generated images a benchmark trains on and serves (`datasets.load_synthetic`).

    Args:
      settings: `Settings` (its seed and meta batch size).
      num_train: training images to generate.

    Returns:
      `datasets.DataSplits` (`train`, `test` tf.data sets).
    """
    from robust_ssl.data import datasets

    return datasets.load_synthetic(num_train, max(settings.meta_batch_size, 16), seed=settings.seed)
