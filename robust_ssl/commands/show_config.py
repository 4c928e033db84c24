r"""Prints every config key with its value and what it means: what --config.<key> can set.

  robust-ssl show-config                      # the default config (the paper's settings)
  robust-ssl show-config --config=smoke       # a packaged config, by name
  robust-ssl show-config --config=my_config.py --config.train.epochs=5

One `key=value` line per key, sorted and grouped by section, with the comment
of robust_ssl/configs/default.py that explains it; `[default: …]` marks the
values the chosen config (or an override) changes. Any of them is set on the
command line of `robust-ssl train` (and `tune`, `study`) with
--config.<key>=<value>.
"""

from absl import flags
from ml_collections import config_flags

from robust_ssl import cli, configs

# robust_ssl.cli resolves a config name given to this flag into its file. No
# default file here: ml_collections would load it now, and the configs import
# TensorFlow; robust_ssl.cli gives the default config where none is named.
CONFIG_FLAG = configs.FLAG
_CONFIG = config_flags.DEFINE_config_file(CONFIG_FLAG, None, configs.help_text("The config to show"))


def main(argv):
    from robust_ssl import config_utils

    with cli.user_errors():
        cli.no_arguments(argv)
        file = config_flags.get_config_filename(flags.FLAGS[CONFIG_FLAG])
        name = configs.name_of(file) or file
        print(f"# config {name}: every key, its value and what it means; set one with --config.<key>=<value>")
        print(config_utils.show(_CONFIG.value), end="")
