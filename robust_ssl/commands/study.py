r"""Trains several recipes under one budget and compares their robustness.

  robust-ssl study --workdir=runs/study \
      --configs=baseline,rotation,fixed4,automl4,augmix,automl_augmix \
      --entry=automl4_lr=automl4:automl.alpha=lr \
      --set=data.source=folder --set=data.folder=data/cifar10-jpeg-10k \
      --set=model.depth=16 --set=train.epochs=6 --set=train.batch_size=64 --seeds=0

--configs lists packaged configs (by name) or config files; each --entry is
one more recipe written `[label=]config[:key=value,key=value]`, a config
with its own overrides, under a label of its own. Every --set applies to all (the common budget: network, data, epochs, batch). Each run trains
into <workdir>/<label>/seed_<s>, is scored on a CIFAR-10-C set generated once
from the study's clean test images (19 corruptions x 5 severities), and the
study writes study.md, study.csv, study.json and study.png in --workdir (each
row names the weighting method that learned its λ, – for fixed λ), and
lambdas.png: the λ trajectories of every recipe that learned λ, all seeds.
The first recipe is the reference of the relative mCE and of the differences.
When a recipe holds training images out for its meta loss (AutoML), every
recipe leaves the same images out (--nosame_train_images: each trains on all
it can); the table gives each row's number of training images. Re-running the same command resumes: finished runs are neither retrained nor
rescored.
"""

from absl import flags

from robust_ssl import cli

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory of the study (runs, generated CIFAR-10-C, tables)."
)
_CONFIGS = flags.DEFINE_list("configs", [], "Configs by name or file (comma-separated), in table order.")
_ENTRIES = flags.DEFINE_multi_string(
    "entry", [], "[label=]config[:key=value,…]: a recipe with its own overrides."
)
_SET = flags.DEFINE_multi_string("set", [], "key=value applied to every run (repeat the flag).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds of every entry.")
_TITLE = flags.DEFINE_string("title", None, "Title of the table and the figure.")
_SAME_TRAIN_IMAGES = flags.DEFINE_boolean(
    "same_train_images",
    True,
    "Every recipe trains on the images the AutoML recipes train on (their hold-out left out of all).",
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    from robust_ssl import study
    from robust_ssl.errors import UserError

    with cli.user_errors():
        cli.no_arguments(argv)
        try:
            seeds = [int(s) for s in _SEEDS.value]
        except ValueError:
            raise UserError(f"--seeds must be integers; got {','.join(_SEEDS.value)}") from None
        entries = [*_CONFIGS.value, *_ENTRIES.value]
        table, paths = study.run_study(
            entries,
            _WORKDIR.value,
            study.parse_overrides(_SET.value),
            seeds,
            title=_TITLE.value,
            same_train_images=_SAME_TRAIN_IMAGES.value,
        )
    print(study.markdown(table, _TITLE.value or "Robustness study"))
    print("wrote " + ", ".join(paths.values()))
