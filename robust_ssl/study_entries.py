"""A study's entries and their configs: "label=config:key=value,…" parsed, overrides applied.

Every run's config is built and checked here before anything trains
(`robust_ssl.study.run_study`): the entry's config, the study's common
overrides, the entry's own, the seed; then the recipes are made to train on
the same images (`align_training_images`) and a CIFAR-10-C meta loss is
pointed at the study's own set (`point_meta_validation_at`). The names are
importable from `robust_ssl.study` too.
"""

import ast
import dataclasses
import glob
import os

from robust_ssl import config_utils, rundir
from robust_ssl.errors import UserError


@dataclasses.dataclass
class Entry:
    """One recipe of the study: a label, a config name or file, its own overrides."""

    label: str
    config: str
    overrides: dict


def parse_value(text):
    """A Python literal where the text is one (1, 0.5, True, (64, 64)), else the string.

    Args:
      text: the value of an override, as written.

    Returns:
      The literal's value, or `text` itself.
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items):
    """{"a.b": value} from "a.b=value" strings.

    Args:
      items: "key=value" strings (None: none).

    Returns:
      dict dotted key -> value (`parse_value`).

    Raises:
      UserError: an item without "=".
    """
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"an override must be key=value; got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def parse_entry(text):
    """`Entry` from "label=config:key=value,key=value" (label and overrides optional).

    Args:
      text: the entry as written; without a label, the config's file name
        (without its extension) is the label.

    Returns:
      The `Entry`.

    Raises:
      UserError: an empty config.
    """
    label, sep, rest = text.partition("=")
    if not sep or ":" in label or "/" in label:  # no label: the whole text is config[:overrides]
        label, rest = None, text
    config, _, overrides = rest.partition(":")
    if not config.strip():
        raise UserError(f"study entry {text!r} names no config")
    items = [item for item in overrides.split(",") if item.strip()] if overrides else []
    config = config.strip()
    return Entry(label or os.path.splitext(os.path.basename(config))[0], config, parse_overrides(items))


def apply_overrides(config, overrides):
    """Sets dotted keys of a ConfigDict, refusing unknown ones in one line.

    Args:
      config: the ConfigDict, changed in place.
      overrides: dict dotted key -> value (a list where the key holds a
        tuple is set as a tuple).

    Returns:
      `config`.

    Raises:
      UserError: a key the config does not have.
    """
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            if part not in node:
                raise UserError(f"unknown config key {key!r}")
            node = node[part]
        if leaf not in node:
            raise UserError(f"unknown config key {key!r}")
        if isinstance(node[leaf], tuple) and isinstance(value, list):
            value = tuple(value)
        node[leaf] = value
    return config


def align_training_images(configs, recorded=()):
    """Makes every run of a study train on the same images (in place).

    Recipes that hold training images out for their meta loss (AutoML with a
    hold-out) train on the rest; every other recipe then leaves the same
    images out (`data.exclude_holdout`: the hold-out is a function of the
    seed and its size). Runs already in the study's workdir count too
    (`recorded`), so a later invocation with fewer recipes, e.g. `fixed4`
    alone, trains on the images of the rows it joins.

    Args:
      configs: the study's ConfigDicts.
      recorded: the numbers of training images left out by runs already in
        the study's workdir (`recorded_holdouts`).

    Raises:
      UserError: recipes hold out different numbers of images.
    """
    held = {config_utils.training_holdout(c) for c in configs} | set(recorded)
    sizes = sorted(held - {0})
    if len(sizes) > 1:
        raise UserError(
            f"the study's recipes hold out different numbers of training images ({sizes}); "
            f"give them one automl.validation.holdout, or pass --nosame_train_images"
        )
    for config in configs:
        if sizes and not config_utils.training_holdout(config):
            config.data.exclude_holdout = sizes[0]


def recorded_holdouts(workdir, planned_runs=()):
    """The numbers of training images the runs already in a study left out.

    Args:
      workdir: the study's directory (runs in <workdir>/<label>/seed_<s>).
      planned_runs: run directories of this invocation (their config.json is
        what this invocation decides, so it is not read).

    Returns:
      A set of sizes > 0: an AutoML run's hold-out, or `data.exclude_holdout`.
      A run without a readable config.json is skipped.
    """
    planned = {os.path.abspath(run) for run in planned_runs}
    sizes = set()
    for path in glob.glob(os.path.join(workdir, "*", "seed_*", rundir.CONFIG)):
        run = os.path.dirname(path)
        if os.path.abspath(run) in planned:
            continue
        try:
            config = rundir.read_config(run)
            sizes.add(
                config_utils.training_holdout(config) or int(config.data.get("exclude_holdout", 0) or 0)
            )
        except (UserError, AttributeError, KeyError):
            continue
    return sizes - {0}


def point_meta_validation_at(configs, corrupted_dir):
    """Recipes whose meta loss reads CIFAR-10-C read the study's own set (in place).

    The study's set is written in a shuffled order, so "the first `per_block`
    images of every block" of another CIFAR-10-C copy (tfds, the official
    files) are other images than the first of this set's blocks; pointed at
    this set, the meta loss sees exactly the images the evaluation leaves out.

    Args:
      configs: the study's ConfigDicts.
      corrupted_dir: the study's CIFAR-10-C set (`<corruption>.npy`, labels.npy).
    """
    for config in configs:
        if config.automl.enabled and config.automl.validation.source == "cifar10c":
            config.automl.validation.cifar10c_source = "npy"
            config.automl.validation.cifar10c_dir = os.path.abspath(corrupted_dir)


def entry_config(entry, overrides, seed):
    """The ConfigDict of one run: the entry's config, the common overrides, its own, the seed.

    Args:
      entry: the run's `Entry`.
      overrides: dict dotted key -> value, common to every entry.
      seed: the run's seed.

    Returns:
      The ConfigDict (not yet validated).

    Raises:
      UserError: an unknown config or key.
    """
    from robust_ssl import configs

    config = configs.load(entry.config)
    apply_overrides(config, overrides)
    apply_overrides(config, entry.overrides)
    config.seed = int(seed)
    return config
