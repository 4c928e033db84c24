"""The numeric precision of training: its names, what `auto` picks, and setting it.

`train.precision` names a Keras dtype policy (`POLICIES`) or `auto` (the
default), which `resolve_precision` turns into

- `mixed_bfloat16` where the device computes bfloat16 natively: a TPU, GPUs
  of compute capability 8.0 or more (Ampere and later), or, without either,
  a CPU whose /proc/cpuinfo flags include `avx512_bf16` or `amx_bf16`
  (Intel Cooper Lake, Sapphire Rapids and later; AMD Zen 4 and later);
- `float32` everywhere else: there bfloat16 is emulated, slower than float32.

Under the mixed policies the variables stay float32 (Keras' rule), and with
them what the AutoML step keeps: λ, the meta optimiser's state and the
hypergradient (a gradient with respect to float32 variables is float32); the
task losses are computed in float32 (`tasks.base.loss_dtype`).

`use_precision` is what a training run calls: it resolves `auto`, prints one
line saying what it chose and why, sets Keras' policy and returns the config
with the resolved name, which the run records in its config.json. A resumed
run keeps what it recorded: `auto` on another machine does not switch a run
half-way to another precision. Nothing here imports TensorFlow at module level.
"""

import copy
import os

AUTO = "auto"
FLOAT32 = "float32"
MIXED_BFLOAT16 = "mixed_bfloat16"
MIXED_FLOAT16 = "mixed_float16"
FLOAT64 = "float64"
# Keras dtype policies a run can train in.
POLICIES = (FLOAT32, MIXED_BFLOAT16, MIXED_FLOAT16, FLOAT64)
# The values of `train.precision`.
PRECISIONS = (AUTO, *POLICIES)
# Short names (the benchmark's columns, its --precision flag).
SHORT_NAMES = {FLOAT32: "float32", MIXED_BFLOAT16: "bfloat16", MIXED_FLOAT16: "float16", FLOAT64: "float64"}
# Every spelling `canonical` accepts -> the policy.
ALIASES = {
    **{policy: policy for policy in POLICIES},
    **{short: policy for policy, short in SHORT_NAMES.items()},
    "fp32": FLOAT32,
    "bf16": MIXED_BFLOAT16,
    "fp16": MIXED_FLOAT16,
    "fp64": FLOAT64,
}
# /proc/cpuinfo flags of CPUs with bfloat16 arithmetic (dot products, matrix tiles).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# GPUs compute bfloat16 natively from this compute capability (Ampere).
GPU_BF16_CAPABILITY = (8, 0)


def canonical(name):
    """The Keras policy a precision name stands for.

    Args:
      name: a policy (`POLICIES`), a short name ("bfloat16") or an alias
        ("bf16", "fp16", "fp32", "fp64"); `auto` stays `auto`.

    Returns:
      A value of `PRECISIONS`.

    Raises:
      ValueError: an unknown name.
    """
    key = str(name).strip().lower()
    if key == AUTO:
        return AUTO
    if key not in ALIASES:
        raise ValueError(
            f"unknown precision {name!r}; choose from {', '.join((AUTO, *SHORT_NAMES.values()))} "
            f"(or the Keras policies {', '.join(POLICIES)})"
        )
    return ALIASES[key]


def cpu_flags(path="/proc/cpuinfo"):
    """The feature flags of this machine's CPU.

    Args:
      path: the cpuinfo file (Linux).

    Returns:
      A frozenset of lower-case flag names; None where the file is missing or
      lists none (not Linux).
    """
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.lower().split())
    except OSError:
        return None
    return None


def accelerators():
    """The GPUs' compute capabilities and the TPU count TensorFlow sees (imports TensorFlow).

    Returns:
      (list of (major, minor) per GPU, None where TensorFlow does not tell;
      number of TPUs).
    """
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        except (ValueError, RuntimeError):
            capability = None
        capabilities.append(tuple(capability) if capability else None)
    return capabilities, len(tf.config.list_physical_devices("TPU"))


def resolve_precision(requested, cpu=None, gpus=None, tpus=None):
    """The Keras policy to train in, and why.

    Args:
      requested: a value of `train.precision` (any spelling `canonical`
        accepts); only `auto` looks at the hardware.
      cpu: the CPU's flags (default: `cpu_flags()`); None where unknown.
      gpus: the GPUs' compute capabilities, (major, minor) or None each
        (default: `accelerators()`, which imports TensorFlow).
      tpus: the number of TPUs (default: `accelerators()`).

    Returns:
      (a value of `POLICIES`, the reason as a few words), e.g.
      ("float32", "auto: this CPU has no AVX512_BF16/AMX").

    Raises:
      ValueError: an unknown precision name.
    """
    precision = canonical(requested)
    if precision != AUTO:
        return precision, "as configured"
    if gpus is None or tpus is None:
        found_gpus, found_tpus = accelerators()
        gpus = found_gpus if gpus is None else gpus
        tpus = found_tpus if tpus is None else tpus
    if tpus:
        return MIXED_BFLOAT16, "auto: TPU"
    if gpus:
        known = [tuple(c) for c in gpus if c]
        if len(known) < len(gpus):
            return FLOAT32, "auto: the GPU's compute capability is unknown"
        lowest = min(known)
        text = f"{lowest[0]}.{lowest[1]}"
        if lowest >= GPU_BF16_CAPABILITY:
            return MIXED_BFLOAT16, f"auto: GPU of compute capability {text} computes bfloat16 natively"
        return FLOAT32, f"auto: GPU of compute capability {text} < 8.0 has no native bfloat16"
    flags = cpu_flags() if cpu is None else frozenset(f.lower() for f in cpu)
    if flags is None:
        return FLOAT32, "auto: the CPU's features are unknown (no /proc/cpuinfo)"
    native = [f.upper() for f in CPU_BF16_FLAGS if f in flags]
    if native:
        return MIXED_BFLOAT16, f"auto: this CPU has {'/'.join(native)}"
    return FLOAT32, "auto: this CPU has no AVX512_BF16/AMX"


def set_precision(precision):
    """Sets Keras' global dtype policy (and floatx: float64 for `float64`, else float32).

    Layers take the policy that is global when they are built; set it first.

    Args:
      precision: a value of `POLICIES` (or a spelling `canonical` accepts;
        not `auto`, see `resolve_precision`).

    Raises:
      ValueError: an unknown name, or `auto`.
    """
    import keras

    policy = canonical(precision)
    if policy == AUTO:
        raise ValueError("set_precision takes a resolved precision; resolve 'auto' first (resolve_precision)")
    keras.config.set_floatx(FLOAT64 if policy == FLOAT64 else FLOAT32)
    keras.config.set_dtype_policy(policy)


def recorded_precision(workdir):
    """The precision a started run in `workdir` recorded, or None.

    A run is started once it has a checkpoint or its final model; its
    config.json then holds the resolved precision.

    Args:
      workdir: a training run's folder.

    Returns:
      A value of `POLICIES`, or None (no started run, or none recorded).
    """
    from robust_ssl import rundir

    started = rundir.checkpoints(os.path.join(workdir, rundir.CHECKPOINTS)) or os.path.exists(
        os.path.join(workdir, rundir.MODEL)
    )
    path = os.path.join(workdir, rundir.CONFIG)
    if not started or not os.path.isfile(path):
        return None
    try:
        saved = rundir.read_json(path)
    except Exception:  # noqa: BLE001 — a damaged config.json is the run check's to report
        return None
    value = (saved.get("train") or {}).get("precision") if isinstance(saved, dict) else None
    return value if value in POLICIES else None


def use_precision(config, workdir=None, log=None):
    """Resolves and sets a training run's precision; the config that records it.

    `auto` resolves by the hardware (`resolve_precision`), except in a workdir
    whose started run recorded a precision, which it keeps (unless
    `train.overwrite`): a run resumes in the precision it began with. Prints
    one line, e.g. "precision: float32 (auto: this CPU has no AVX512_BF16/AMX)".

    Args:
      config: the experiment ConfigDict (not changed).
      workdir: the run's folder (None: no run to resume).
      log: callable taking the line (default: print, flushed).

    Returns:
      A copy of `config` whose `train.precision` is the policy set, for the
      run's config.json.

    Raises:
      ValueError: an unknown precision name.
    """
    requested = config.train.get("precision", FLOAT32)
    precision, reason = resolve_precision(requested)
    if canonical(requested) == AUTO and workdir and not config.train.get("overwrite", False):
        kept = recorded_precision(workdir)
        if kept is not None and kept != precision:
            here = reason.removeprefix("auto: ")
            reason = f"auto: kept from the run's start; here auto gives {precision} ({here})"
            precision = kept
    line = f"precision: {precision} ({reason})"
    if log is None:
        print(line, flush=True)
    else:
        log(line)
    set_precision(precision)
    resolved = copy.deepcopy(config)
    resolved.train.precision = precision
    return resolved
