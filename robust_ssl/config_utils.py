"""Checking, saving and comparing experiment configs (ml_collections)."""

import json
import os

from robust_ssl import networks, precision, rundir
from robust_ssl.errors import SYNC_BN_XLA_ERROR, ConfigError
from robust_ssl.tasks import TASKS, make_tasks, parse_task_names

# Meta-validation sources that hold training images out (the rest reads test data).
HOLDOUT_SOURCES = ("train_holdout", "corrupted_holdout")
VALIDATION_SOURCES = (*HOLDOUT_SOURCES, "cifar10c")


def training_holdout(config):
    """How many training images `config`'s AutoML meta loss holds out (0: none)."""
    automl = config.automl
    if automl.enabled and automl.validation.source in HOLDOUT_SOURCES:
        return int(automl.validation.holdout)
    return 0


def task_lambdas(config):
    """The λ of each enabled task, from `config.task_weights`."""
    names = parse_task_names(config.tasks)
    return [float(config.task_weights[name]) for name in names]


def holdout_corruptions(validation):
    """The corruption names and severities of `automl.validation` ("corrupted_holdout").

    Raises:
      ConfigError: a severity that is not an integer.
    """
    names = [n.strip() for n in str(validation.corruptions).split(",") if n.strip()]
    try:
        severities = [int(s) for s in str(validation.severities).split(",")]
    except ValueError:
        raise ConfigError(
            f"automl.validation.severities must be integers within 1..5; got {validation.severities!r}"
        ) from None
    return names, severities


def image_shape(config):
    """(H, W, 3) of the images a config trains on, from `config.data.image_size`.

    Raises:
      ConfigError: a size that is not (height, width) of at least 8 pixels.
    """
    from robust_ssl.data.datasets import parse_image_size

    try:
        return (*parse_image_size(config.data.get("image_size", (32, 32))), 3)
    except ValueError as e:
        raise ConfigError(f"data.image_size: {e}") from None


def backbone(config):
    """The backbone spec of a config (`robust_ssl.networks.backbone_spec`)."""
    model = config.model
    return networks.backbone_spec(
        model.get("backbone", "wrn"), model.get("depth", 40), model.get("width", 2), model.get("dropout", 0.0)
    )


def validate(config):
    """Raises ConfigError with one clear line for any invalid setting.

    Called before any data is read or any model is built.
    """
    names = parse_task_names(config.tasks)
    for name in TASKS:
        value = config.task_weights.get(name, 0.0)
        if name in names and not (isinstance(value, (int, float)) and value >= 0):
            raise ConfigError(f"λ of task {name!r} must be a number >= 0; got {value!r}")
    for name in config.task_options:
        if name not in TASKS:
            raise ConfigError(f"task_options names unknown task {name!r}")
    # Instantiating checks each task's options; each task checks the image size.
    shape = image_shape(config)
    for task in make_tasks(names, {n: dict(config.task_options.get(n, {})) for n in names}):
        task.check_image_shape(shape)
    try:
        networks.check_backbone(backbone(config))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.model.width < 1:
        raise ConfigError(f"model.width must be >= 1; got {config.model.width}")
    train = config.train
    for key in ("batch_size", "epochs"):
        if train[key] < 1:
            raise ConfigError(f"train.{key} must be >= 1; got {train[key]}")
    if train.learning_rate <= 0 or train.min_learning_rate < 0:
        raise ConfigError("train.learning_rate must be > 0 and train.min_learning_rate >= 0")
    if train.min_learning_rate > train.learning_rate:
        raise ConfigError("train.min_learning_rate must not exceed train.learning_rate")
    from robust_ssl.distribute import STRATEGIES

    if config.get("distribute", "none") not in STRATEGIES:
        raise ConfigError(f"distribute must be one of {STRATEGIES}; got {config.distribute!r}")
    jit_compile = train.get("jit_compile", "auto")
    if jit_compile not in (True, False, "auto"):
        raise ConfigError(f"train.jit_compile must be True, False or 'auto'; got {jit_compile!r}")
    if jit_compile is True and config.model.get("sync_batch_norm") and config.get("distribute") != "none":
        raise ConfigError(SYNC_BN_XLA_ERROR)
    if train.get("precision", precision.AUTO) not in precision.PRECISIONS:
        raise ConfigError(f"train.precision must be one of {precision.PRECISIONS}; got {train.precision!r}")
    automl = config.automl
    excluded = config.data.get("exclude_holdout", 0)
    if not isinstance(excluded, int) or isinstance(excluded, bool) or excluded < 0:
        raise ConfigError(f"data.exclude_holdout must be an integer >= 0; got {excluded!r}")
    if excluded and training_holdout(config) and excluded != training_holdout(config):
        raise ConfigError(
            f"data.exclude_holdout={excluded} differs from automl.validation.holdout="
            f"{automl.validation.holdout}: an AutoML run already leaves its hold-out out of training"
        )
    if automl.enabled:
        if not names:
            raise ConfigError("automl.enabled needs at least one task in config.tasks")
        from robust_ssl.steps import ALPHA_MODES
        from robust_ssl.weighting.lookahead import META_MODES

        if automl.mode not in META_MODES:
            raise ConfigError(f"automl.mode must be one of {META_MODES}; got {automl.mode!r}")
        if automl.alpha not in ALPHA_MODES:
            raise ConfigError(f"automl.alpha must be one of {ALPHA_MODES}; got {automl.alpha!r}")
        if automl.meta_optimizer not in ("sgd", "adam"):
            raise ConfigError(f"automl.meta_optimizer must be 'sgd' or 'adam'; got {automl.meta_optimizer!r}")
        if automl.meta_every < 1 or automl.meta_batch_size < 1 or automl.warmup_epochs < 0:
            raise ConfigError("automl.meta_every and meta_batch_size must be >= 1, warmup_epochs >= 0")
        if automl.meta_lr <= 0:
            raise ConfigError(f"automl.meta_lr must be > 0; got {automl.meta_lr}")
        from robust_ssl.weighting import check_config

        check_config(config, task_lambdas(config))  # automl.method, its options, the λ it starts from
        if automl.validation.source == "corrupted_holdout":
            from robust_ssl.data.cifar10c import ALL_CORRUPTIONS, SEVERITIES

            names, severities = holdout_corruptions(automl.validation)
            for name in names:
                if name not in ALL_CORRUPTIONS:
                    raise ConfigError(f"automl.validation.corruptions: unknown corruption {name!r}")
            if not set(severities) <= set(SEVERITIES):
                raise ConfigError(f"automl.validation.severities must be within 1..5; got {severities}")
        holdout = int(automl.validation.holdout)
        if automl.validation.source in HOLDOUT_SOURCES and (holdout < automl.meta_batch_size):
            raise ConfigError(
                f"automl.validation.holdout={holdout} is fewer images than one meta batch "
                f"(automl.meta_batch_size={automl.meta_batch_size})"
            )
        if automl.validation.source in ("corrupted_holdout", "cifar10c") and shape[:2] != (32, 32):
            raise ConfigError(
                f"automl.validation.source={automl.validation.source} uses the CIFAR-10-C corruptions, "
                f"defined for 32x32 images; with data.image_size={shape[0]}x{shape[1]} use train_holdout"
            )
        if automl.validation.source not in VALIDATION_SOURCES:
            raise ConfigError(
                f"automl.validation.source must be one of {VALIDATION_SOURCES}; "
                f"got {automl.validation.source!r}"
            )


def to_dict(config):
    """A JSON-safe dict of a ConfigDict."""
    return json.loads(config.to_json_best_effort())


# The `config.data` keys each data source reads; the others mean nothing there.
_EVERY_SOURCE = ("source", "augment", "image_size", "exclude_holdout")
DATA_KEYS = {
    "tfds": (*_EVERY_SOURCE, "name", "data_dir", "manual_dir", "download"),
    "folder": (*_EVERY_SOURCE, "folder", "test_fraction", "in_memory", "skip_bad_images"),
    "synthetic": (*_EVERY_SOURCE, "num_train", "num_test", "num_classes", "seed"),
}


def recorded(config):
    """The JSON dict a run records: the config, with only the data keys its source reads."""
    out = to_dict(config)
    keep = DATA_KEYS.get(out.get("data", {}).get("source"))
    if keep:
        out["data"] = {k: v for k, v in out["data"].items() if k in keep}
    return out


def write(config, workdir):
    """Writes the resolved config to <workdir>/config.json (`recorded`)."""
    return rundir.write_config(recorded(config), workdir)


# Settings that may change between a run and its resumption.
RESUME_FREE_KEYS = ("train.verbose", "train.overwrite", "train.deterministic")
# How often a run saves checkpoints, and how many it keeps, may change too.
CHECKPOINT_KEYS = ("train.checkpoint_every_steps", "train.checkpoint_every_minutes", "train.keep_checkpoints")
# Settings that may grow between a run and its resumption: more epochs continue it.
RESUME_RAISABLE_KEYS = ("train.epochs",)


def flatten(config, prefix=""):
    """{"a.b": value} of a nested dict or ConfigDict."""
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if hasattr(v, "items"):  # a dict or a ConfigDict
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _same_run(key, saved, current):
    if key in RESUME_FREE_KEYS or key in CHECKPOINT_KEYS:
        return True
    if key in RESUME_RAISABLE_KEYS and isinstance(saved, (int, float)) and isinstance(current, (int, float)):
        return current >= saved
    return saved == current


def changed_keys(saved, current, defaults=None):
    """Dotted keys whose values differ between two config dicts.

    Keys in `RESUME_FREE_KEYS` and `CHECKPOINT_KEYS` may differ, and `train.epochs` may be raised
    (a finished run continues; its cosine schedule then decays over the new
    total), without making it another run.

    Args:
      saved: the config dict of the run in a workdir.
      current: the config dict of the new command.
      defaults: optional config dict whose values stand in for keys `saved`
        lacks: a run saved by an older version, before a key existed, ran
        with what is now that key's default (e.g. `automl.method`).

    Returns:
      The sorted dotted keys that make it another run.
    """
    saved, current = flatten(saved), flatten(current)
    for key, value in flatten(defaults or {}).items():
        if key in current:  # keys the new command records but the old run could not
            saved.setdefault(key, value)
    keys = sorted(set(saved) | set(current))
    return [k for k in keys if not _same_run(k, saved.get(k), current.get(k))]


def differences(config, workdir):
    """Keys that make `config` another run than the one saved in `workdir`.

    Args:
      config: the new command's ConfigDict.
      workdir: a run's folder.

    Returns:
      `changed_keys` of its config.json and `config` (keys its config.json
      lacks read as today's defaults); [] when it has none.

    Raises:
      UserError: a config.json that cannot be read (damaged, not JSON), in one line.
    """
    path = os.path.join(workdir, rundir.CONFIG)
    if not os.path.exists(path):
        return []
    saved = rundir.read_json(path)
    if not isinstance(saved, dict):
        from robust_ssl.errors import UserError

        raise UserError(f"cannot read {path}: it holds a JSON {type(saved).__name__}, not a config")
    from robust_ssl.configs import default

    return changed_keys(saved, recorded(config), recorded(default.get_config()))


def all_keys(config, prefix=""):
    """Every dotted key of a nested dict or ConfigDict: the leaves and the nodes above them."""
    out = []
    for k, v in config.items():
        key = f"{prefix}{k}"
        out.append(key)
        if hasattr(v, "items"):
            out += all_keys(v, key + ".")
    return out


def _abbreviates(short, name):
    """Whether `short` is the initials of `name`'s words ("lr" of "learning_rate")."""
    words = [w for w in name.split("_") if w]
    return len(words) > 1 and short == "".join(w[0] for w in words)


def closest_key(config, key):
    """The existing dotted key a mistyped `key` most likely means, or None.

    The last component counts most: a key of the same parent whose name
    matches (`train.lr` → `train.learning_rate` by its initials,
    `train.epoch` → `train.epochs`), then a key anywhere with that name, its
    initials or a close name (`lr` → `train.learning_rate`), then the closest
    whole key. Keys the typed one starts with (`train` for `train.lr`) are
    never proposed.

    Args:
      config: a ConfigDict (or nested dict).
      key: the dotted key as typed.

    Returns:
      A dotted key of `config`, or None when nothing is close.
    """
    import difflib

    keys = [k for k in all_keys(config) if not key.startswith(k + ".")]
    parent, _, last = key.rpartition(".")

    def name(k):
        return k.rpartition(".")[2]

    def best(candidates):
        return max(candidates, key=lambda k: difflib.SequenceMatcher(None, key, k).ratio())

    same_parent = [k for k in keys if k.rpartition(".")[0] == parent]
    for pool, cutoff in ((same_parent, 0.6), (keys, 0.8)):
        for match in (
            lambda k: name(k) == last,
            lambda k: _abbreviates(last, name(k)),
            lambda k, cutoff=cutoff: difflib.SequenceMatcher(None, last, name(k)).ratio() >= cutoff,
        ):
            found = [k for k in pool if match(k)]
            if found:
                return best(found)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_key(config, key):
    """The one-line message for a dotted key the config does not have, or None if it has it.

    Args:
      config: a ConfigDict (or nested dict).
      key: a dotted key such as "train.epochs".

    Returns:
      `unknown config key train.epoch; did you mean train.epochs?` (the
      hint from `closest_key`, left out when nothing is close), or None.
    """
    node = config
    for part in key.split("."):
        if not hasattr(node, "items") or part not in node:
            close = closest_key(config, key)
            hint = f"; did you mean {close}?" if close else ""
            return f"unknown config key {key}{hint}"
        node = node[part]
    return None


def override_keys(argv, flag="config"):
    """The dotted keys of `--<flag>.<key>=<value>` overrides in command-line arguments.

    Args:
      argv: arguments (the program name may be among them).
      flag: the config flag's name.

    Returns:
      The keys, in order.
    """
    keys = []
    for arg in argv:
        if arg == "--":
            break
        for spelling in (f"--{flag}.", f"-{flag}."):
            if arg.startswith(spelling):
                keys.append(arg[len(spelling) :].partition("=")[0])
                break
    return keys


def key_comments(path=None):
    """What the source of a config file says about each key it sets.

    Reads the assignments `config.<key> = …` of a config module (default: the
    packaged `default`, where every key is set and explained) and the
    comments that go with them: the comment lines just above an assignment
    and the comment at the end of its line.

    Args:
      path: a config file (default: robust_ssl/configs/default.py).

    Returns:
      {dotted key: (comment lines above, end-of-line comment or "")}.
    """
    import ast
    import io
    import tokenize

    if path is None:
        from robust_ssl import configs

        path = configs.path(configs.DEFAULT)
    with open(path, encoding="utf-8") as f:
        source = f.read()
    comments = {}  # line -> (comment text, whether the line holds nothing else)
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            alone = not lines[row - 1][:col].strip()
            comments[row] = (token.string.lstrip("#").strip(), alone)

    def dotted(node):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        return ".".join(reversed(parts)) if isinstance(node, ast.Name) and node.id == "config" else None

    out = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        key = dotted(node.targets[0])
        if not key:
            continue
        above, row = [], node.lineno - 1
        while row in comments and comments[row][1]:
            above.insert(0, comments[row][0])
            row -= 1
        inline = next(
            (
                comments[r][0]
                for r in range(node.lineno, node.end_lineno + 1)
                if r in comments and not comments[r][1]
            ),
            "",
        )
        out[key] = (above, inline)
    return out


def show(config, base=None):
    """Every key of a config with its value and what the default config's source says of it.

    Args:
      config: the config to show (a ConfigDict).
      base: the packaged default config, whose values are named where
        `config` differs (None: loaded here).

    Returns:
      The text: for each key, its comment lines (`# …`) and `key=value  # comment`,
      grouped by section, with `[default: …]` where the value is not the default.
    """
    if base is None:
        from robust_ssl.configs import default

        base = default.get_config()
    notes = key_comments()
    values, defaults = flatten(to_dict(config)), flatten(to_dict(base))
    out, section, explained = [], None, set()
    for key in sorted(values):
        top = key.split(".")[0] if "." in key else ""
        if top != section:
            section = top
            out.append("")
        parents = [".".join(key.split(".")[:i]) for i in range(1, key.count(".") + 1)]
        for parent in parents:  # a section set as a whole (task_weights, task_options) says it once
            above, inline = notes.get(parent, ([], ""))
            if parent not in explained and (above or inline) and key not in notes:
                explained.add(parent)
                out += [f"# {parent}: {line}" for line in [*above, inline] if line]
        above, inline = notes.get(key, ([], ""))
        out += [f"# {line}" for line in above]
        value = values[key]
        text = f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
        extra = [inline] if inline else []
        if key in defaults and defaults[key] != value:
            default = defaults[key]
            extra.append(f"[default: {default!r}]" if isinstance(default, str) else f"[default: {default}]")
        elif key not in defaults:
            extra.append("[not in the default config]")
        out.append(text + (f"  # {' '.join(extra)}" if extra else ""))
    return "\n".join(out).strip("\n") + "\n"
