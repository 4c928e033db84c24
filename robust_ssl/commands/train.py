r"""Trains a robust_ssl model; re-running the same command resumes it.

  robust-ssl train --config=smoke --workdir=runs/smoke
  robust-ssl train --config=rotation --workdir=runs/rot --config.train.epochs=1
  robust-ssl train --config=runs/tune/best_config.py --workdir=runs/tuned
  robust-ssl train --config=smoke --workdir=runs/smoke --dry_run

--config takes a packaged config by name or a config file; --config.<key>=<value>
overrides any field. Everything that can be checked before training (the
config, the data, config.devices, batch sizes against the replicas) is checked
before anything is written; --dry_run does only that and prints the resolved
config. A run starts by printing a short summary (config, model, tasks and λ,
AutoML, data, epochs and batch, workdir); the full config is in
<workdir>/config.json. --log_level=info shows TensorFlow's start-up logs.

Every config key, with its value and what it means:
  robust-ssl show-config [--config=NAME] [--config.<key>=<value> ...]
"""

import sys

from absl import flags
from ml_collections import config_flags

from robust_ssl import cli, configs

# robust_ssl.cli resolves a config name given to this flag into its file. No
# default file here: ml_collections would load it now, and the configs import
# TensorFlow; robust_ssl.cli gives the default config where none is named.
CONFIG_FLAG = configs.FLAG
_CONFIG = config_flags.DEFINE_config_file(CONFIG_FLAG, None, configs.help_text())
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run",
    False,
    "Check the config, data, devices and batch sizes, print the resolved config and stop; writes nothing.",
)
flags.mark_flags_as_required(["workdir"])


def _name_and_overrides():
    """(the config's name, or its file; the keys overridden on the command line)."""
    from robust_ssl import config_utils

    file = config_flags.get_config_filename(flags.FLAGS[CONFIG_FLAG])
    name = configs.name_of(file) or file
    return name, config_utils.override_keys(sys.argv[1:], CONFIG_FLAG)


def main(argv):
    from robust_ssl import preflight

    config, workdir = _CONFIG.value, _WORKDIR.value
    with cli.user_errors():
        cli.no_arguments(argv)
        if config.train.get("deterministic", False):
            from robust_ssl.train import make_deterministic

            make_deterministic(config)  # first: thread pools are fixed before TensorFlow starts
        if _DRY_RUN.value:
            spec = preflight.check(config)
            print(preflight.describe(config))
            print(
                f"dry run: config, data, devices and batch sizes are valid ({spec.replicas} replica(s)); "
                f"nothing was written to {workdir}"
            )
            return
        print(preflight.summary(config, workdir, *_name_and_overrides()), flush=True)
        try:
            with cli.workdir_kept_on_start_failure(workdir), cli.lost_workers(config, workdir):
                from robust_ssl.train import train_and_evaluate

                results = train_and_evaluate(config, workdir)
        except KeyboardInterrupt:  # Ctrl-C: one line, what is saved and how to resume
            print(cli.interrupted_message(workdir), file=sys.stderr)
            sys.exit(cli.INTERRUPTED_STATUS)
    print(cli.summary(results, workdir))
    sys.stdout.flush()
