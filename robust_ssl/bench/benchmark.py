"""Benchmarks of the training step and of the input pipeline (`robust-ssl benchmark`).

A *mode* is one way of training (baseline, fixed λ, AutoML fast or naive, …; see
`MODES`) with one of the task sets of `task_set`: none, the paper's four tasks
(those of the packaged `automl4` config), the first of them, or every
registered task. For each mode a model is built as `robust_ssl.train.build_model` builds
it for training, and the train function `fit` runs (`model.make_train_function()`:
the host picks each step's kind and runs that kind's compiled step; with
`jit_compile` XLA compiles its computations) is timed on one
fixed, pre-built batch (so data loading is measured separately) after warm-up
steps, with the AutoML meta step active from step 0. Per mode the benchmark reports:

- ms per step: the median over the timed steps and the spread (quartiles, min,
  max). With `meta_every = k > 1` the per-step figure is amortised over a cycle
  of k steps: (median meta step + (k - 1) × median plain step) / k.
- base images/s: labelled images (the batch) per second.
- trunk images/s: images through the WideResNet trunk per second, each task's
  inputs counted once — rotation "all" adds 3B (0° is the clean forward),
  colour, BIR, inpaint, RGB and jigsaw B each, IR 0; a meta step adds the meta
  batch (amortised by k). Recomputation (the naive path's second forward) is
  not counted: the figure is the rate of useful work, comparable across modes.
- GFLOP per step and achieved GFLOP/s: FLOPs are counted from the graph of the
  traced step (`robust_ssl.bench.flops`) with TensorFlow's per-op FLOP statistics (the
  `RegisterStatistics("flops")` functions that `tf.compat.v1.profiler` with
  `ProfileOptionBuilder.float_operation()` sums), including the bodies of
  called functions and `tf.cond` branches, which the profiler on the outer
  graph does not see. For an AutoML mode the meta and the plain step functions
  are counted apart and amortised.
  Ops whose results nothing uses are left out (TensorFlow prunes them before
  running). Convolutions (forward, input and filter gradients) and matmuls
  dominate; the elementwise ops the registry knows (Mul, Add, …) are included.
- peak memory: the process's peak resident set (`ru_maxrss`; each mode runs in a
  fresh subprocess by default so that peaks do not carry over) and, on a GPU,
  `tf.config.experimental.get_memory_info(...)["peak"]`.
- the ratio of its step time to the fixed-λ four-task step (`REFERENCE_MODE`).
- CPU share (process CPU time / (wall time × cores) over the timed steps) and
  the load average: on a shared machine they tell whether other jobs inflated
  the times. `run_interleaved` (one step of each mode in turn, one process)
  gives ratios between modes that such drift does not bias.

The input pipeline is measured alone: images/s that `training_dataset` delivers
(augmentation and task transforms included) for each task set of the modes,
iterated without training, and the task transforms' own cost per batch
(`make_task_batch` in a `tf.function` on a fixed batch).

`run_breakdown` times the pieces of one mode's step (forward, one backward of
the weighted loss, one backward per task, the meta batch's forward and
backward, `model.lambda_gradient`) to show what bounds it.
"""

import dataclasses
import functools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from robust_ssl import configs
from robust_ssl.bench.flops import count_flops
from robust_ssl.errors import UserError

# --mixed_precision -> the precision `robust_ssl.train.set_precision` takes.
MIXED_PRECISION = {"": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}

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
      automl: None (fixed λ), "fast" or "naive".
      meta_every: meta step every k-th step; None = the `--meta_every` setting.
      jit_compile: XLA; None = the `--jit_compile` setting.
    """

    name: str
    text: str
    task_set: str = NO_TASKS
    automl: str | None = None
    meta_every: int | None = None
    jit_compile: bool | None = None

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
      mixed_precision: "" (float32), "bf16" or "fp16".
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
    if settings.pipeline and (settings.pipeline_batches < 1 or settings.transform_repeats < 1):
        raise UserError("--pipeline_batches and --transform_repeats must be >= 1")


# ------------------------------------------------------------------ statistics
def summarize(seconds):
    """Median, quartiles, min and max of step times, in milliseconds.

    Args:
      seconds: list of durations in seconds (at least one).

    Returns:
      dict with median_ms, q1_ms, q3_ms, iqr_ms, min_ms, max_ms, mean_ms, n.
    """
    ms = sorted(1000.0 * s for s in seconds)
    if len(ms) >= 2:
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    else:
        q1 = q3 = ms[0]
    return {
        "median_ms": statistics.median(ms),
        "q1_ms": q1,
        "q3_ms": q3,
        "iqr_ms": q3 - q1,
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "mean_ms": statistics.fmean(ms),
        "n": len(ms),
    }


def host_peak_rss_mib():
    """Peak resident set size of this process so far, MiB (`ru_maxrss`)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _load():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def trunk_images(batch, tasks):
    """Images a plain (non-meta) training step feeds through the trunk, each task's inputs once.

    The clean batch counts once (main task, rotation 0° and IR share its
    forward); a task input of shape [B, n, H, W, C] counts n·B (rotation "all":
    3B), [B, H, W, C] counts B. A meta step adds its meta batch to this.

    Args:
      batch: the training dict (see `robust_ssl.data.pipeline`).
      tasks: the model's `Task`s.

    Returns:
      The number of images (int).
    """
    total = int(batch["image"].shape[0])
    for task in tasks:
        inputs = batch.get(f"{task.name}/inputs")
        if inputs is not None and not task.uses_clean_input:
            total += math.prod(int(d) for d in inputs.shape[:-3])
    return total


# ------------------------------------------------------------ building blocks
def _base_config(config_dict):
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
    config.automl.meta_every = int(mode.meta_every or settings.meta_every)
    config.automl.meta_batch_size = settings.meta_batch_size
    config.automl.warmup_epochs = 0  # meta step active from step 0
    config.seed = settings.seed
    return config


def _example_data(settings, num_train):
    from robust_ssl.data import datasets

    return datasets.load_synthetic(num_train, max(settings.meta_batch_size, 16), seed=settings.seed)


def _fixed_batch(model, settings, automl):
    """One training element as `training_dataset` builds it, held fixed."""
    from robust_ssl.data import pipeline

    data = _example_data(settings, max(2 * settings.batch_size, 64))
    ds = pipeline.training_dataset(
        data.train,
        model.tasks,
        settings.batch_size,
        seed=settings.seed,
        meta_examples=data.test if automl else None,
        meta_batch_size=settings.meta_batch_size,
    )
    return next(iter(ds))


def _build(mode_name, settings, config_dict):
    """Sets the precision and seed, then builds one mode's model and fixed batch.

    Args:
      mode_name: key in `MODES`.
      settings: `Settings`.
      config_dict: the base experiment config as a plain dict.

    Returns:
      (the `Mode`, its experiment ConfigDict, the model, the fixed batch).
    """
    import keras

    from robust_ssl import train

    mode = MODES[mode_name]
    train.set_precision(MIXED_PRECISION[settings.mixed_precision])
    config = mode_config(_base_config(config_dict), mode, settings)
    keras.utils.set_random_seed(settings.seed)
    model = train.build_model(config, num_classes=10, steps_per_epoch=1000)
    return mode, config, model, _fixed_batch(model, settings, mode.automl is not None)


def _gpu_memory():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        return None
    info = tf.config.experimental.get_memory_info(gpus[0].name)
    return {"device": gpus[0].name, "peak_mib": info["peak"] / 2**20, "current_mib": info["current"] / 2**20}


class ModeRunner:
    """One mode's model, fixed batch and compiled step, ready to be timed.

    Building traces the step and counts its FLOPs; `warm_up` runs the untimed
    steps; `step` times one step; `result` summarises the timed steps.

    Args:
      mode_name: key in `MODES`.
      settings: `Settings`.
      config_dict: the base experiment config as a plain dict.
    """

    def __init__(self, mode_name, settings, config_dict):

        self.settings = settings
        self.load_start = _load()
        self.mode, config, self.model, self.batch = _build(mode_name, settings, config_dict)
        self.jit = bool(config.train.jit_compile)
        self.automl = bool(config.automl.enabled)
        self.k = int(config.automl.meta_every) if self.automl else 1
        from robust_ssl import steps

        # Exactly what `fit` runs: the model's train function, which picks the
        # kind of each step on the host and runs that kind's compiled step
        # (with jit_compile, XLA compiles the step's computations, see steps.py).
        self.train_function = self.model.make_train_function()
        start = time.perf_counter()
        plain = self.model.step_function(steps.FIXED).get_concrete_function(self.batch).graph
        self.trace_s = time.perf_counter() - start
        self.flops_plain = count_flops(plain)
        # Without AutoML there is no meta step: both counts are the plain step's.
        if self.automl:
            meta = self.model.step_function(steps.META).get_concrete_function(self.batch).graph
            self.flops_meta = count_flops(meta)
        else:
            self.flops_meta = self.flops_plain
        self.times, self.meta_flags, self.cpu_seconds = [], [], 0.0

    def _one_step(self):
        logs = self.train_function(iter([self.batch]))
        return float(logs["loss"])  # waits for the step (and checks it ran)

    def warm_up(self):
        """Runs the untimed steps; the first one includes tracing and compiling."""
        warmup = self.settings.warmup_steps
        if self.automl and self.k > 1:
            warmup = max(warmup, 2)  # run the meta and the plain branch once each
        start = time.perf_counter()
        self.first_loss = self._one_step()
        self.first_step_s = time.perf_counter() - start
        for _ in range(warmup - 1):
            self._one_step()
        self.warmup_steps = warmup

    def step(self):
        """Times one training step; returns its duration in seconds."""
        from robust_ssl import steps

        kind = steps.step_kind(self.model, int(self.model.optimizer.iterations.numpy()))
        self.meta_flags.append(kind == steps.META)
        cpu, start = time.process_time(), time.perf_counter()
        self.last_loss = self._one_step()
        seconds = time.perf_counter() - start
        self.cpu_seconds += time.process_time() - cpu
        self.times.append(seconds)
        return seconds

    def result(self):
        """The mode's result dict (see the module docstring)."""
        settings, model, k = self.settings, self.model, self.k
        times, meta_flags = self.times, self.meta_flags
        stats = summarize(times)
        result = {
            "mode": self.mode.name,
            "description": self.mode.description,
            "tasks": list(self.mode.tasks),
            "automl": self.mode.automl,
            "meta_every": k if self.automl else None,
            "jit_compile": self.jit,
            "mixed_precision": settings.mixed_precision or "float32",
            "batch_size": settings.batch_size,
            "meta_batch_size": settings.meta_batch_size if self.automl else 0,
            "trace_s": self.trace_s,
            "first_step_s": self.first_step_s,
            "warmup_steps": self.warmup_steps,
            "step_times_ms": [1000.0 * t for t in times],
            "meta_step_flags": meta_flags,
            **stats,
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
        }
        ms_per_step = stats["median_ms"]
        meta_times = [t for t, m in zip(times, meta_flags) if m]
        plain_times = [t for t, m in zip(times, meta_flags) if not m]
        if self.automl and k > 1:
            if meta_times and plain_times:
                result["median_meta_step_ms"] = 1000.0 * statistics.median(meta_times)
                result["median_plain_step_ms"] = 1000.0 * statistics.median(plain_times)
                ms_per_step = (result["median_meta_step_ms"] + (k - 1) * result["median_plain_step_ms"]) / k
            else:
                ms_per_step = stats["mean_ms"]
                result["note"] = f"timed steps hold no full meta cycle of {k}; ms_per_step is the mean"
        meta_share = (1.0 / k) if self.automl else 0.0
        trunk_per_step = trunk_images(self.batch, model.tasks) + meta_share * settings.meta_batch_size
        fm, fp = self.flops_meta, self.flops_plain
        flops = meta_share * fm["total"] + (1.0 - meta_share) * fp["total"]
        conv = meta_share * fm["conv_matmul"] + (1.0 - meta_share) * fp["conv_matmul"]
        seconds = ms_per_step / 1000.0
        result.update(
            ms_per_step=ms_per_step,
            base_images_per_s=settings.batch_size / seconds,
            trunk_images_per_step=trunk_per_step,
            trunk_images_per_s=trunk_per_step / seconds,
            flops_per_step=flops,
            flops_meta_step=fm["total"] if self.automl else None,
            flops_plain_step=fp["total"],
            conv_matmul_share=conv / flops if flops else None,
            uncosted_ops=fm["ops_without_shape"] + fm["unresolved_functions"],
            gflops_per_s=flops / seconds / 1e9,
            peak_host_mib=host_peak_rss_mib(),
            device_memory=_gpu_memory(),
            cpu_share=self.cpu_seconds / sum(times) / _cores(),
            load_start=self.load_start,
            load_end=_load(),
        )
        return result


def run_mode(mode_name, settings, config_dict):
    """Builds and times one mode in this process.

    Args:
      mode_name: key in `MODES`.
      settings: `Settings`.
      config_dict: the base experiment config as a plain dict.

    Returns:
      The mode's result dict (see module docstring).
    """
    runner = ModeRunner(mode_name, settings, config_dict)
    runner.warm_up()
    for _ in range(settings.steps):
        runner.step()
    return runner.result()


def run_interleaved(mode_names, settings, config_dict):
    """Times several modes in one process, one step of each in turn.

    On a shared machine the load drifts; round-robin steps expose every mode to
    the same drift, so ratios between modes are far steadier than those of
    separate runs. Peak host memory is then the process's, of all modes together.

    Args:
      mode_names: keys of `MODES`.
      settings: `Settings` (`steps` rounds).
      config_dict: the base experiment config as a plain dict.

    Returns:
      dict mode name -> result dict, each with "interleaved": True and, where
      `REFERENCE_MODE` is among them, "round_ratio_median" (the median over
      rounds of this mode's step time / the reference's in the same round).
    """
    runners = {name: ModeRunner(name, settings, config_dict) for name in mode_names}
    for runner in runners.values():
        runner.warm_up()
    for _ in range(settings.steps):
        for runner in runners.values():
            runner.step()
    results = {name: {**runner.result(), "interleaved": True} for name, runner in runners.items()}
    if REFERENCE_MODE in runners:
        ref = runners[REFERENCE_MODE].times
        for name, runner in runners.items():
            results[name]["round_ratio_median"] = statistics.median(t / r for t, r in zip(runner.times, ref))
    return results


def trunk_forward_flops(settings):
    """FLOPs of one image's trunk forward (inference), by the same FLOP count.

    Args:
      settings: `Settings` (depth, width).

    Returns:
      FLOPs (int).
    """
    import tensorflow as tf

    from robust_ssl.networks import build_wide_resnet

    trunk = build_wide_resnet(settings.depth, settings.width)
    fn = tf.function(lambda x: trunk(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec([1, 32, 32, 3], tf.float32)).graph
    return count_flops(graph)["total"]


def _time_iterations(iterator, n):
    start = time.perf_counter()
    for _ in range(n):
        next(iterator)  # the element's tensors are ready once `next` returned it
    return time.perf_counter() - start


def run_pipeline(settings, config_dict, task_sets):
    """Input pipeline alone and the task transforms' own cost.

    Args:
      settings: `Settings`.
      config_dict: the base experiment config as a plain dict (task options).
      task_sets: list of (tasks tuple, with_meta bool) to measure.

    Returns:
      dict with a "pipeline" entry per task set (images/s and batches/s that
      `training_dataset` delivers, ms per batch of `make_task_batch`).
    """
    import tensorflow as tf

    from robust_ssl.data import pipeline
    from robust_ssl.tasks import make_tasks

    base = _base_config(config_dict)
    if settings.pipeline_folder:
        from robust_ssl.data import datasets

        data = datasets.load_folder(settings.pipeline_folder, in_memory=settings.pipeline_in_memory)
        # Arrays when the folder is decoded into memory, else `folders.ImageFiles`
        # that the pipeline reads and decodes per batch.
        train_examples = data.train_source
    else:
        data = _example_data(settings, settings.num_train)
        train_examples = data.train
    b = settings.batch_size
    images = tf.random.stateless_uniform([b, 32, 32, 3], [settings.seed, 1])
    labels = tf.zeros([b], tf.int32)
    seed = tf.constant([settings.seed, 0], tf.int64)
    results = []
    for tasks, with_meta in task_sets:
        load_start = _load()
        task_objs = make_tasks(tasks, {n: dict(base.task_options.get(n, {})) for n in tasks})
        ds = pipeline.training_dataset(
            train_examples,
            task_objs,
            b,
            seed=settings.seed,
            meta_examples=data.test if with_meta else None,
            meta_batch_size=settings.meta_batch_size,
        )
        iterator = iter(ds)
        _time_iterations(iterator, max(3, settings.pipeline_batches // 10))  # fill buffers
        seconds = _time_iterations(iterator, settings.pipeline_batches)

        transform = tf.function(lambda x, y, objs=task_objs: pipeline.make_task_batch(x, y, objs, seed))
        transform(images, labels)  # trace
        times = []
        for _ in range(settings.transform_repeats):
            start = time.perf_counter()
            out = transform(images, labels)
            # Fetch one value so the call is complete before the clock stops.
            _ = out["label"].numpy()
            times.append(time.perf_counter() - start)
        results.append(
            {
                "tasks": list(tasks),
                "meta": with_meta,
                "batches": settings.pipeline_batches,
                "images_per_s": settings.pipeline_batches * b / seconds,
                "batches_per_s": settings.pipeline_batches / seconds,
                "transform_ms_per_batch": 1000.0 * statistics.median(times),
                "transform_ms_min": 1000.0 * min(times),
                "load_start": load_start,
                "load_end": _load(),
            }
        )
    return {
        "pipeline": results,
        "data": _pipeline_data_text(settings, data),
        "peak_host_mib": host_peak_rss_mib(),
    }


def _pipeline_data_text(settings, data):
    if not settings.pipeline_folder:
        return f"{settings.num_train} generated images held in memory"
    streamed = not isinstance(data.train_source, tuple)
    how = "streamed from disk, decoded per batch" if streamed else "decoded into memory once"
    return f"{data.num_train} images of {settings.pipeline_folder}, {how}"


# ---------------------------------------------------------------- breakdown
def _step_pieces(model, batch):
    """name -> (description, callable(batch)) of the pieces of a training step.

    None of them changes the model (batch statistics only, no updates).
    """
    import tensorflow as tf

    from robust_ssl import steps

    lambdas = tf.convert_to_tensor(model.lambdas)

    def total(grads):
        return tf.add_n([tf.reduce_sum(g) for g in grads if g is not None])

    def forward(b):
        losses, _ = model.task_losses(b, update_stats=False)
        return steps.weighted_loss(losses, lambdas)

    def fixed_gradients(b):
        # As `steps.fixed_gradients`, but without updating the BN statistics.
        with tf.GradientTape() as tape:
            losses, _ = model.task_losses(b, update_stats=False)
            loss = steps.weighted_loss(losses, lambdas)
        return total(tape.gradient(loss, model.network_variables))

    def per_task_gradients(b):
        _, _, main_grads, trunk_task_grads, head_task_grads = steps.local_per_task_gradients(
            model, b, update_stats=False
        )
        return total([*main_grads, *(g for gs in trunk_task_grads + head_task_grads for g in gs)])

    def meta_forward_backward(b):
        # The lookahead's functional forward (the model's meta loss) at ψ.
        params = [v.value for v in model.psi_variables]
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = steps.meta_loss_fn(model, b)(params)
        return total(tape.gradient(loss, params))

    pieces = {
        "forward": ("forward of all tasks (losses only)", forward),
        "fixed_gradients": ("forward + one backward of the λ-weighted loss", fixed_gradients),
    }
    if model.tasks:
        pieces["per_task_gradients"] = (
            "forward + one backward per task (persistent tape)",
            per_task_gradients,
        )
    if "meta/image" in batch:
        pieces["meta_forward_backward"] = (
            "meta batch forward + backward at ψ (stateless)",
            meta_forward_backward,
        )
        pieces["lambda_gradient_fast"] = (
            "per-task gradients + lookahead hypergradient (model.lambda_gradient fast)",
            lambda b: tf.reduce_sum(model.lambda_gradient(b, "fast")[0]),
        )
        pieces["lambda_gradient_naive"] = (
            "double-backprop hypergradient (model.lambda_gradient naive)",
            lambda b: tf.reduce_sum(model.lambda_gradient(b, "naive")[0]),
        )
    return pieces


def run_breakdown(mode_name, settings, config_dict):
    """Times the pieces of one mode's training step (forward, backward(s), lookahead).

    Args:
      mode_name: key in `MODES` (its tasks and AutoML setting are used).
      settings: `Settings` (`steps` timed calls per piece after one warm-up).
      config_dict: the base experiment config as a plain dict.

    Returns:
      dict piece name -> {description, median_ms, min_ms, max_ms, flops}.
    """
    import tensorflow as tf

    _, config, model, batch = _build(mode_name, settings, config_dict)
    jit = bool(config.train.jit_compile)
    out = {"mode": mode_name, "pieces": {}, "load_start": _load()}
    pieces = _step_pieces(model, batch)
    compiled, flops, times = {}, {}, {}
    for name, (_, fn) in pieces.items():
        compiled[name] = tf.function(fn, jit_compile=jit)
        flops[name] = count_flops(compiled[name].get_concrete_function(batch).graph)["total"]
        float(compiled[name](batch))  # warm-up (and tracing)
        times[name] = []
    # Round-robin, so that a drifting machine load affects every piece alike.
    for _ in range(settings.steps):
        for name, fn in compiled.items():
            start = time.perf_counter()
            float(fn(batch))
            times[name].append(time.perf_counter() - start)
    for name, (description, _) in pieces.items():
        out["pieces"][name] = {"description": description, **summarize(times[name]), "flops": flops[name]}
    out["load_end"] = _load()
    return out


# ------------------------------------------------------------- subprocesses
def _package_root():
    import robust_ssl

    return os.path.dirname(os.path.dirname(os.path.abspath(robust_ssl.__file__)))


def _in_subprocess(job):
    """Runs `_child_main` on a job dict in a fresh Python; returns its result."""
    with tempfile.TemporaryDirectory(prefix="robust_ssl_bench_") as tmp:
        job_path, out_path = os.path.join(tmp, "job.json"), os.path.join(tmp, "result.json")
        with open(job_path, "w") as f:
            json.dump(job, f)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.setdefault("KERAS_BACKEND", "tensorflow")
        proc = subprocess.run(
            [sys.executable, "-m", "robust_ssl.bench.benchmark", job_path, out_path],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0 or not os.path.exists(out_path):
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            return {"error": f"subprocess exited with status {proc.returncode}:\n{tail}"}
        with open(out_path) as f:
            return json.load(f)


def _run_job(job):
    settings = Settings(**job["settings"])
    if job["kind"] == "mode":
        return run_mode(job["mode"], settings, job["config"])
    if job["kind"] == "pipeline":
        result = run_pipeline(settings, job["config"], [(tuple(t), bool(m)) for t, m in job["task_sets"]])
        result["trunk_forward_flops_per_image"] = trunk_forward_flops(settings)
        return result
    if job["kind"] == "breakdown":
        return run_breakdown(job["mode"], settings, job["config"])
    if job["kind"] == "interleaved":
        return run_interleaved(job["modes"], settings, job["config"])
    raise ValueError(f"unknown job kind {job['kind']!r}")


def _dispatch(job, isolate):
    if isolate:
        return _in_subprocess(job)
    try:
        return _run_job(job)
    except Exception as e:  # keep the other modes' results
        return {"error": f"{type(e).__name__}: {e}"}


def _child_main(argv):
    job_path, out_path = argv[1], argv[2]
    with open(job_path) as f:
        job = json.load(f)
    result = _run_job(job)
    with open(out_path, "w") as f:
        json.dump(result, f)


# ------------------------------------------------------------------ the run
def environment():
    """Versions, CPU, threads and load of this machine, for the report."""
    import keras
    import tensorflow as tf

    cores = _cores()
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_cores": cores,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (on by default)"),
        "load_average": _load(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _task_sets(mode_names):
    sets = []
    for name in mode_names:
        mode = MODES[name]
        key = (tuple(mode.tasks), mode.automl is not None)
        if key not in sets:
            sets.append(key)
    return sets


def run(settings, config_dict, mode_names, log=print, breakdown_modes=(), checkpoint=None):
    """Runs the benchmark of several modes (and the input pipeline).

    Args:
      settings: `Settings`.
      config_dict: the base experiment config as a plain dict.
      mode_names: keys of `MODES`.
      log: callable taking one progress line.
      breakdown_modes: modes whose step is also timed piece by piece
        (`run_breakdown`).
      checkpoint: optional callable(results) called after each part, e.g. to
        write the partial report.

    Returns:
      The results dict (settings, environment, modes, pipeline) that
      `write_report` writes.
    """
    check_settings(settings)
    results = {
        "settings": dataclasses.asdict(settings),
        "environment": environment(),
        "flop_count": (
            "TensorFlow per-op FLOP statistics (as tf.compat.v1.profiler float_operation) over the "
            "traced train_step graph, tf.cond branches included, ops whose results nothing uses left out"
        ),
        "reference_mode": REFERENCE_MODE,
        "modes": {},
    }
    checkpoint = checkpoint or (lambda _: None)

    def job(kind, **fields):
        return {"kind": kind, **fields, "settings": dataclasses.asdict(settings), "config": config_dict}

    def report(name, result):
        if "error" in result:
            log(f"  {name} failed: {result['error']}")
        else:
            log(
                f"  {name}: {result['ms_per_step']:.1f} ms/step (IQR {result['iqr_ms']:.1f}), "
                f"{result['base_images_per_s']:.1f} images/s, {result['gflops_per_s']:.1f} GFLOP/s"
            )

    if settings.interleave:
        log(f"modes {', '.join(mode_names)}, interleaved (load {_load()})")
        combined = _dispatch(job("interleaved", modes=mode_names), settings.isolate)
        for name in mode_names:
            results["modes"][name] = combined if "error" in combined else combined[name]
            report(name, results["modes"][name])
        checkpoint(results)
    else:
        for name in mode_names:
            log(f"mode {name}: {MODES[name].description} (load {_load()})")
            results["modes"][name] = _dispatch(job("mode", mode=name), settings.isolate)
            report(name, results["modes"][name])
            checkpoint(results)
    reference = results["modes"].get(REFERENCE_MODE, {})
    for result in results["modes"].values():
        if "error" not in result and "ms_per_step" in reference:
            result["ratio_to_reference"] = result["ms_per_step"] / reference["ms_per_step"]
    if settings.pipeline:
        task_sets = _task_sets(mode_names)
        log(f"input pipeline: {len(task_sets)} task set(s) (load {_load()})")
        results["pipeline"] = _dispatch(job("pipeline", task_sets=task_sets), settings.isolate)
        if "error" in results["pipeline"]:
            log(f"  failed: {results['pipeline']['error']}")
        else:
            _pipeline_ratios(results)
        checkpoint(results)
    for name in breakdown_modes:
        log(f"breakdown of {name} (load {_load()})")
        results.setdefault("breakdown", {})[name] = _dispatch(job("breakdown", mode=name), settings.isolate)
        checkpoint(results)
    results["environment"]["load_average_end"] = _load()
    return results


def _pipeline_ratios(results):
    """Adds, per pipeline entry, how many times faster it is than each mode consumes."""
    for entry in results["pipeline"]["pipeline"]:
        consumers = {}
        for name, result in results["modes"].items():
            if "error" in result:
                continue
            if list(result["tasks"]) == entry["tasks"] and (result["automl"] is not None) == entry["meta"]:
                consumers[name] = entry["images_per_s"] / result["base_images_per_s"]
        entry["headroom_vs_mode"] = consumers


def _fmt(value, digits=1):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def markdown(results):
    """The results as markdown tables.

    Args:
      results: the dict `run` returns.

    Returns:
      A markdown string.
    """
    s, env = results["settings"], results["environment"]
    lines = [
        f"WRN-{s['depth']}-{s['width']}, batch {s['batch_size']}, meta batch {s['meta_batch_size']}, "
        f"{s['steps']} timed steps after {s['warmup_steps']} warm-up, "
        f"precision {s['mixed_precision'] or 'float32'}; TF {env['tensorflow']}, Keras {env['keras']}, "
        f"{env['cpu_cores']} CPU cores{', GPU ' + ', '.join(env['gpus']) if env['gpus'] else ''}, "
        f"oneDNN {env['TF_ENABLE_ONEDNN_OPTS']}; load average {env['load_average']} at the start, "
        f"{env.get('load_average_end')} at the end; {env['date']}."
        + (
            " Modes interleaved in one process (one step of each in turn); peak host memory is "
            "that process's, all modes together."
            if s.get("interleave")
            else (
                " Each mode in its own process."
                if s.get("isolate", True)
                else " All modes in this process: peak host memory is the process's peak so far."
            )
        )
        + (
            " fp16 is timed only: `RobustSSLModel.train_step` does no loss scaling, so the "
            "LossScaleOptimizer Keras wraps around the optimiser shrinks every update."
            if s["mixed_precision"] == "fp16"
            else ""
        ),
        "",
    ]
    gpu = any((r.get("device_memory") or {}).get("peak_mib") for r in results["modes"].values())
    paired = any("round_ratio_median" in r for r in results["modes"].values())
    header = [
        "mode",
        "XLA",
        "ms/step (median)",
        "IQR ms",
        "min–max ms",
        "base img/s",
        "trunk img/step",
        "trunk img/s",
        "GFLOP/step",
        "GFLOP/s",
        f"× {results['reference_mode']}",
    ]
    if paired:
        header.append(f"× {results['reference_mode']} (paired rounds)")
    header.append("peak host MiB")
    if gpu:
        header.append("peak device MiB")
    header += ["CPU share", "load (1 min) start→end"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results["modes"].items():
        if "error" in r:
            first = r["error"].splitlines()[0]
            lines.append(f"| {name} | {first} |" + " |" * (len(header) - 2))
            continue
        label = name if not r.get("meta_every") or r["meta_every"] == 1 else f"{name} (k={r['meta_every']})"
        row = [
            label,
            "yes" if r["jit_compile"] else "no",
            _fmt(r["ms_per_step"], 0),
            _fmt(r["iqr_ms"], 0),
            f"{_fmt(r['min_ms'], 0)}–{_fmt(r['max_ms'], 0)}",
            _fmt(r["base_images_per_s"], 1),
            _fmt(r["trunk_images_per_step"], 0),
            _fmt(r["trunk_images_per_s"], 1),
            _fmt(r["flops_per_step"] / 1e9, 1),
            _fmt(r["gflops_per_s"], 1),
            _fmt(r.get("ratio_to_reference"), 2),
        ]
        if paired:
            row.append(_fmt(r.get("round_ratio_median"), 2))
        row.append(_fmt(r["peak_host_mib"], 0))
        if gpu:
            row.append(_fmt((r.get("device_memory") or {}).get("peak_mib"), 0))
        load = f"{(r['load_start'] or ['?'])[0]}→{(r['load_end'] or ['?'])[0]}"
        row += [f"{100 * r['cpu_share']:.0f}%" if r.get("cpu_share") is not None else "–", load]
        lines.append("| " + " | ".join(row) + " |")
    split = [
        (name, r) for name, r in results["modes"].items() if "median_meta_step_ms" in r and "error" not in r
    ]
    if split:
        lines.append("")
        for name, r in split:
            lines.append(
                f"{name}: meta steps {_fmt(r['median_meta_step_ms'], 0)} ms, plain steps "
                f"{_fmt(r['median_plain_step_ms'], 0)} ms (medians); ms/step above is amortised over "
                f"k = {r['meta_every']}."
            )
    pipe = results.get("pipeline")
    if pipe:
        lines.append("")
        if "error" in pipe:
            lines.append(f"Input pipeline: failed: {pipe['error'].splitlines()[0]}")
        else:
            lines += [
                "Input pipeline alone (`training_dataset`: shuffle, augmentation, task transforms; "
                f"{pipe.get('data', 'generated images held in memory')}) and the task transforms' own cost "
                "(`make_task_batch` in a `tf.function`, one batch):",
                "",
                "| tasks | meta batch | images/s | batches/s | transforms ms/batch | × what the step consumes "
                "| load start→end |",
                "|---|---|---|---|---|---|---|",
            ]
            for e in pipe["pipeline"]:
                headroom = ", ".join(f"{k}: {v:.0f}×" for k, v in e["headroom_vs_mode"].items()) or "–"
                lines.append(
                    f"| {','.join(e['tasks']) or '(none)'} | {'yes' if e['meta'] else 'no'} | "
                    f"{_fmt(e['images_per_s'], 0)} | {_fmt(e['batches_per_s'], 1)} | "
                    f"{_fmt(e['transform_ms_per_batch'], 1)} | {headroom} | "
                    f"{(e['load_start'] or ['?'])[0]}→{(e['load_end'] or ['?'])[0]} |"
                )
            flops = pipe.get("trunk_forward_flops_per_image")
            if flops:
                lines += ["", f"Trunk forward (inference) per image: {flops / 1e9:.3f} GFLOP."]
    for name, b in results.get("breakdown", {}).items():
        lines.append("")
        if "error" in b:
            lines.append(f"Breakdown of {name}: failed: {b['error'].splitlines()[0]}")
            continue
        lines += [
            f"Pieces of the {name} step (each its own `tf.function`, no updates; "
            f"load {(b['load_start'] or ['?'])[0]}→{(b['load_end'] or ['?'])[0]}):",
            "",
            "| piece | ms (median) | min–max ms | GFLOP | GFLOP/s |",
            "|---|---|---|---|---|",
        ]
        for piece, p in b["pieces"].items():
            lines.append(
                f"| {piece}: {p['description']} | {_fmt(p['median_ms'], 0)} | "
                f"{_fmt(p['min_ms'], 0)}–{_fmt(p['max_ms'], 0)} | {_fmt(p['flops'] / 1e9, 1)} | "
                f"{_fmt(p['flops'] / p['median_ms'] / 1e6, 1)} |"
            )
    lines += [
        "",
        "FLOPs: " + results["flop_count"] + ". Trunk images count each task's inputs once "
        "(n·B for n images per example, 0 for a task that reuses the clean forward), plus the meta "
        "batch on meta steps. "
        "CPU share: the process's CPU time over the timed steps / (their wall time × cores); well "
        "below 100% means other processes took cores and the times are inflated. Load: the 1-minute "
        "load average, this benchmark's own threads included.",
    ]
    return "\n".join(lines) + "\n"


def write_report(results, output_dir):
    """Writes benchmark.json and benchmark.md into `output_dir`.

    Args:
      results: the dict `run` returns.
      output_dir: directory (created if needed).

    Returns:
      (json path, markdown path, the markdown text).
    """
    from robust_ssl import rundir

    os.makedirs(output_dir, exist_ok=True)
    text = markdown(results)
    json_path = rundir.write_json(os.path.join(output_dir, "benchmark.json"), results)
    md_path = rundir.write_text(os.path.join(output_dir, "benchmark.md"), text)
    return json_path, md_path, text


if __name__ == "__main__":
    _child_main(sys.argv)
