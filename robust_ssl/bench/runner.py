"""Timing one training mode's step: build its model and a fixed batch, warm up, time, summarise.

For each mode a model is built as `robust_ssl.train.build_model` builds it for
training, and the train function `fit` runs (`model.make_train_function()`: the
host picks each step's kind and runs that kind's compiled step; with
`jit_compile` XLA compiles its computations) is timed on one fixed, pre-built
batch (so data loading is measured separately, see `robust_ssl.bench.pipeline`)
after warm-up steps, with the AutoML meta step active from step 0. Per mode
the result holds:

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
- CPU share (process CPU time / (wall time × cores) over the timed steps) and
  the load average: on a shared machine they tell whether other jobs inflated
  the times. `run_interleaved` (one step of each mode in turn, one process)
  gives ratios between modes that such drift does not bias.

With several precisions (`Settings.precisions`), `run_interleaved` builds one
model per mode and precision in one process and steps them in turn, so the
ratio of a mode's step time in bfloat16 to float32 is a median over rounds of
two steps measured side by side ("precision_ratio").

The ratio of each mode's step time to the reference mode's is added by
`robust_ssl.bench.benchmark.run`.
"""

import math
import statistics
import time

from robust_ssl.bench.flops import count_flops
from robust_ssl.bench.measure import cpu_cores, device_memory, host_peak_rss_mib, load_average, summarize
from robust_ssl.bench.modes import (
    MODES,
    REFERENCE_MODE,
    base_config,
    example_data,
    mode_config,
    precisions_of,
)
from robust_ssl.precision import SHORT_NAMES, set_precision


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


def _fixed_batch(model, settings, automl):
    """One training element as `training_dataset` builds it, held fixed."""
    from robust_ssl.data import pipeline

    data = example_data(settings, max(2 * settings.batch_size, 64))
    ds = pipeline.training_dataset(
        data.train,
        model.tasks,
        settings.batch_size,
        seed=settings.seed,
        meta_examples=data.test if automl else None,
        meta_batch_size=settings.meta_batch_size,
    )
    return next(iter(ds))


def build(mode_name, settings, config_dict, precision=None):
    """Sets the precision and seed, then builds one mode's model and fixed batch.

    Args:
      mode_name: key in `MODES`.
      settings: `Settings`.
      config_dict: the base experiment config as a plain dict.
      precision: the Keras policy (default: the first of `precisions_of(settings)`).

    Returns:
      (the `Mode`, its experiment ConfigDict, the model, the fixed batch).
    """
    import keras

    from robust_ssl import train

    mode = MODES[mode_name]
    set_precision(precision or precisions_of(settings)[0])
    config = mode_config(base_config(config_dict), mode, settings)
    keras.utils.set_random_seed(settings.seed)
    model = train.build_model(config, num_classes=10, steps_per_epoch=1000)
    return mode, config, model, _fixed_batch(model, settings, mode.automl is not None)


class ModeRunner:
    """One mode's model, fixed batch and compiled step, ready to be timed.

    Building traces the step and counts its FLOPs; `warm_up` runs the untimed
    steps; `step` times one step; `result` summarises the timed steps.

    Layers keep the dtype policy they were built under; `warm_up` and `step`
    set it again as the global one first, so that runners of several
    precisions can alternate in one process.

    Args:
      mode_name: key in `MODES`.
      settings: `Settings`.
      config_dict: the base experiment config as a plain dict.
      precision: the Keras policy (default: the first of `precisions_of(settings)`).
    """

    def __init__(self, mode_name, settings, config_dict, precision=None):

        self.settings = settings
        self.precision = precision or precisions_of(settings)[0]
        self.load_start = load_average()
        self.mode, config, self.model, self.batch = build(mode_name, settings, config_dict, self.precision)
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
        set_precision(self.precision)
        start = time.perf_counter()
        self.first_loss = self._one_step()
        self.first_step_s = time.perf_counter() - start
        for _ in range(warmup - 1):
            self._one_step()
        self.warmup_steps = warmup

    def step(self):
        """Times one training step; returns its duration in seconds."""
        from robust_ssl import steps

        set_precision(self.precision)  # outside the timed part; the step's layers hold their own
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
            "method": self.mode.method if self.automl else None,
            "meta_every": k if self.automl else None,
            "jit_compile": self.jit,
            "precision": self.precision,
            "mixed_precision": SHORT_NAMES[self.precision],
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
        meta_images = settings.meta_batch_size if model.weighting.uses_meta_batch else 0
        trunk_per_step = trunk_images(self.batch, model.tasks) + meta_share * meta_images
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
            device_memory=device_memory(),
            cpu_share=self.cpu_seconds / sum(times) / cpu_cores(),
            load_start=self.load_start,
            load_end=load_average(),
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


def _paired_median(times, reference):
    """The median over rounds of times[i] / reference[i]."""
    return statistics.median(t / r for t, r in zip(times, reference))


def run_interleaved(mode_names, settings, config_dict):
    """Times several modes (each in every precision) in one process, one step of each in turn.

    On a shared machine the load drifts; round-robin steps expose every mode to
    the same drift, so ratios between modes are far steadier than those of
    separate runs. Every other round goes through the modes in reverse order,
    so that no mode always follows the same one. Peak host memory is then the
    process's, of all modes together.

    Args:
      mode_names: keys of `MODES`.
      settings: `Settings` (`steps` rounds; `precisions_of(settings)`).
      config_dict: the base experiment config as a plain dict.

    Returns:
      dict mode name -> the result dict in the first precision, with
      "interleaved": True and, where `REFERENCE_MODE` is among them (with
      another mode), "round_ratio_median" (the median over rounds of this mode's step time /
      the reference's in the same round and precision). With several
      precisions also "by_precision" (short precision name -> that
      precision's result dict, with its own "round_ratio_median") and
      "precision_ratio" (short name -> median over rounds of the step time in
      that precision / in the first).
    """
    precisions = precisions_of(settings)
    runners = {
        (name, policy): ModeRunner(name, settings, config_dict, policy)
        for name in mode_names
        for policy in precisions
    }
    for runner in runners.values():
        runner.warm_up()
    order = list(runners.values())
    for round_index in range(settings.steps):
        for runner in order if round_index % 2 == 0 else reversed(order):
            runner.step()
    results = {}
    for name in mode_names:
        by_precision = {}
        for policy in precisions:
            result = {**runners[name, policy].result(), "interleaved": True}
            if (REFERENCE_MODE, policy) in runners and len(mode_names) > 1:
                reference = runners[REFERENCE_MODE, policy].times
                result["round_ratio_median"] = _paired_median(runners[name, policy].times, reference)
            by_precision[SHORT_NAMES[policy]] = result
        first = precisions[0]
        results[name] = dict(by_precision[SHORT_NAMES[first]])
        if len(precisions) > 1:
            results[name]["by_precision"] = by_precision
            results[name]["precision_ratio"] = {
                SHORT_NAMES[policy]: _paired_median(runners[name, policy].times, runners[name, first].times)
                for policy in precisions[1:]
            }
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
