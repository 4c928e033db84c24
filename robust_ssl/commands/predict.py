r"""Classifies image files: one line per file with its class and probability.

  robust-ssl predict --workdir=runs/smoke cat.png dog.jpg
  robust-ssl predict --workdir=runs/smoke --top_k=3 photos/
  robust-ssl predict --saved_model=exports/robust_ssl cat.png

Each line is tab-separated: the file, the class name and its probability (then
the next classes with --top_k). Images (.jpg, .jpeg, .png, .bmp, .gif; a folder
stands for the images under it, sorted) are decoded and resized to the model's
image size as training reads an image folder. The model is the run's
model.keras, else its newest checkpoint (--workdir also takes a .keras file),
or an export of `robust-ssl export` (--saved_model).
"""

from absl import flags

from robust_ssl import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory (or a .keras model file).")
_SAVED_MODEL = flags.DEFINE_string(
    "saved_model", None, "An export directory of `robust-ssl export`, instead."
)
_TOP_K = flags.DEFINE_integer("top_k", 1, "Classes per image, most probable first.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images per forward pass.", lower_bound=1)


def main(argv):
    from robust_ssl import predict

    with cli.user_errors():
        paths = predict.image_paths(argv[1:])
        rows = predict.predict_files(
            paths,
            workdir=_WORKDIR.value,
            saved_model=_SAVED_MODEL.value,
            top_k=_TOP_K.value,
            batch_size=_BATCH_SIZE.value,
        )
    for path, top in rows:
        print(predict.format_row(path, top))
