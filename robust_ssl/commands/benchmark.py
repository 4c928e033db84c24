r"""Times training steps per mode and the input pipeline; writes a table and JSON.

  robust-ssl benchmark --output_dir=runs/benchmark
  robust-ssl benchmark --modes=fixed4,automl4_fast,automl4_fast_every4 --steps=12
  robust-ssl benchmark --modes=baseline_noxla,baseline_xla --pipeline=false
  robust-ssl benchmark --modes=fixed4,automl4_fast --precision=float32,bfloat16
  robust-ssl benchmark --modes=fixed4,uncertainty4,gradnorm4,auto_lambda4 --interleave
  robust-ssl benchmark --quick --first_step --output_dir=/tmp/bench
  robust-ssl benchmark --quick --output_dir=/tmp/bench   # tiny model, 3 steps (CI)

Each mode runs `model.train_step` in a `tf.function` on one fixed batch, in its
own subprocess, after warm-up steps; see `robust_ssl.bench.runner` for what each
column means and how FLOPs are counted. Modes: baseline, baseline_xla,
baseline_noxla, fixed_rotation, fixed4, fixed4_xla, fixed7, automl4_fast,
automl4_fast_every4, automl4_naive, automl7_fast, uncertainty4, gradnorm4,
auto_lambda4, fixed_augmix, automl_augmix_fast (or "all").

--precision=float32,bfloat16 times every mode in each precision, one step of
each in turn in one process, and adds the step times and their paired ratio.
--first_step also times train, evaluate and export from their process's start
to their first step, and TensorFlow's import.
"""

import sys

from absl import flags
from ml_collections import config_flags

from robust_ssl import cli, configs, precision
from robust_ssl.bench import modes
from robust_ssl.errors import UserError

# robust_ssl.cli resolves a config name given to this flag into its file.
CONFIG_FLAG = configs.FLAG
_CONFIG = config_flags.DEFINE_config_file(
    CONFIG_FLAG,
    None,  # robust_ssl.cli gives the default config: loading it here would import TensorFlow
    configs.help_text(
        "Base experiment config (optimiser, λ, task options; the flags below override its "
        "model size, batch size, tasks and AutoML settings per mode)"
    ),
)
_MODES = flags.DEFINE_string(
    "modes",
    ",".join(modes.DEFAULT_MODES),
    f"Comma-separated modes or 'all': {', '.join(modes.MODES)}.",
)
_DEPTH = flags.DEFINE_integer("depth", None, "WideResNet depth (default 40; 10 with --quick).")
_WIDTH = flags.DEFINE_integer("width", None, "WideResNet width (default 2; 1 with --quick).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Labelled batch size (default 64; 16 with --quick).")
_META_BATCH = flags.DEFINE_integer("meta_batch_size", None, "Meta-step validation batch (default 25).")
_STEPS = flags.DEFINE_integer("steps", None, "Timed steps per mode (default 10; 3 with --quick).")
_WARMUP = flags.DEFINE_integer("warmup_steps", None, "Untimed warm-up steps per mode (default 2).")
_META_EVERY = flags.DEFINE_integer(
    "meta_every", 1, "Meta step every k-th step for AutoML modes that do not fix their own k."
)
_JIT = flags.DEFINE_bool("jit_compile", False, "XLA for the modes that do not fix their own setting.")
_PRECISION = flags.DEFINE_list(
    "precision",
    ["float32"],
    "Precisions to time each mode in: float32, bfloat16, float16, float64 or auto (what training "
    "picks here); with several, one step of each in turn in one process, and their ratio.",
)
_MIXED = flags.DEFINE_enum(
    "mixed_precision", "", ["", "bf16", "fp16"], "Deprecated: use --precision=bfloat16 or float16."
)
_FIRST_STEP = flags.DEFINE_bool(
    "first_step",
    False,
    "Also time train (smoke config), evaluate and export from their process's start to their first "
    "step, and TensorFlow's import (about a minute more).",
)
_PIPELINE = flags.DEFINE_bool("pipeline", True, "Also time the input pipeline and the task transforms.")
_PIPELINE_BATCHES = flags.DEFINE_integer("pipeline_batches", None, "Batches timed in the pipeline benchmark.")
_PIPELINE_FOLDER = flags.DEFINE_string(
    "pipeline_folder",
    "",
    "Image folder (train/<class>/..., test/...) the input-pipeline benchmark reads instead of generated images.",
)
_PIPELINE_IN_MEMORY = flags.DEFINE_enum(
    "pipeline_in_memory",
    "auto",
    ["auto", "true", "false"],
    "How --pipeline_folder is held: decoded into memory, streamed from disk, or by the 512 MiB rule.",
)
_ISOLATE = flags.DEFINE_bool(
    "isolate", True, "Run each mode in a fresh subprocess (peak memory per mode; no state carried over)."
)
_BREAKDOWN = flags.DEFINE_string(
    "breakdown",
    "",
    "Comma-separated modes whose step is also timed piece by piece (forward, backward(s), lookahead).",
)
_INTERLEAVE = flags.DEFINE_bool(
    "interleave",
    False,
    "Time all modes in one process, one step of each in turn: steadier ratios on a loaded machine.",
)
_QUICK = flags.DEFINE_bool("quick", False, "Tiny model (WRN-10-1, batch 16) and 3 steps: a smoke run for CI.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/benchmark", "Where benchmark.json and benchmark.md go.")


def _settings():
    overrides = {
        "depth": _DEPTH.value,
        "width": _WIDTH.value,
        "batch_size": _BATCH.value,
        "meta_batch_size": _META_BATCH.value,
        "steps": _STEPS.value,
        "warmup_steps": _WARMUP.value,
        "pipeline_batches": _PIPELINE_BATCHES.value,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    precisions = tuple(_PRECISION.value)
    if _MIXED.value:
        if precisions != ("float32",):
            raise UserError("give --precision or the deprecated --mixed_precision, not both")
        precisions = (precision.SHORT_NAMES[modes.MIXED_PRECISION[_MIXED.value]],)
        print(
            f"note: --mixed_precision is deprecated; use --precision={precisions[0]}",
            file=sys.stderr,
        )
    overrides.update(
        meta_every=_META_EVERY.value,
        jit_compile=_JIT.value,
        precisions=precisions,
        pipeline=_PIPELINE.value,
        pipeline_folder=_PIPELINE_FOLDER.value,
        pipeline_in_memory={"true": True, "false": False}.get(_PIPELINE_IN_MEMORY.value, "auto"),
        isolate=_ISOLATE.value,
        interleave=_INTERLEAVE.value,
    )
    if _QUICK.value:
        return modes.quick_settings(**overrides)
    return modes.Settings(**overrides)


def main(argv):
    from robust_ssl import config_utils
    from robust_ssl.bench import benchmark, report

    with cli.user_errors():
        cli.no_arguments(argv)
        settings = _settings()
        mode_names = modes.parse_modes(_MODES.value)
        breakdown = modes.parse_modes(_BREAKDOWN.value) if _BREAKDOWN.value.strip() else []
        results = benchmark.run(
            settings,
            config_utils.to_dict(_CONFIG.value),
            mode_names,
            breakdown_modes=breakdown,
            checkpoint=lambda partial: report.write_report(partial, _OUTPUT_DIR.value),
            first_step=_FIRST_STEP.value,
        )
        json_path, md_path, text = report.write_report(results, _OUTPUT_DIR.value)
    print()
    print(text)
    print(f"written: {json_path}, {md_path}")
    failed = [name for name, r in results["modes"].items() if "error" in r]
    failed += [f"breakdown {name}" for name, r in results.get("breakdown", {}).items() if "error" in r]
    failed += [
        f"first step of {name}"
        for name, r in results.get("first_step", {}).get("commands", {}).items()
        if "error" in r
    ]
    if failed or "error" in results.get("pipeline", {}):
        print(f"error: failed: {', '.join(failed) or 'input pipeline'}", file=sys.stderr)
        sys.exit(1)
