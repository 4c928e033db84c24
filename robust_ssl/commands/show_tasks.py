r"""Draws what each self-supervision task sees (the paper's Figure 1) into a PNG.

  robust-ssl show-tasks --output=tasks.png
  robust-ssl show-tasks --output=tasks.png \
      --folder=data/my-images --num_images=6 --tasks=rotation,color,bir

One row per image: the image, then each task's input. Without --folder the
images are generated (robust_ssl.data.synthetic).
"""

import os

from absl import flags

from robust_ssl import cli

_OUTPUT = flags.DEFINE_string("output", None, "PNG file to write.")
_FOLDER = flags.DEFINE_string(
    "folder",
    None,
    "Image folder (e.g. keras image_dataset_from_directory layout, searched recursively); "
    "default: generated images.",
)
_NUM_IMAGES = flags.DEFINE_integer("num_images", 4, "Number of images (rows).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the image choice and of the random tasks.")
_TASKS = flags.DEFINE_string(
    "tasks", "", "Comma-separated task names (columns); default: every registered task."
)
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", 32, "Image size in pixels (folder images are resized to it)."
)
flags.mark_flags_as_required(["output"])


def main(argv):
    from robust_ssl import figures
    from robust_ssl.errors import UserError

    with cli.user_errors():
        cli.no_arguments(argv)
        # Cheap checks first: a wrong flag fails before any image is read.
        num_images, size = _NUM_IMAGES.value, _IMAGE_SIZE.value
        if num_images < 1:
            raise UserError(f"--num_images must be >= 1; got {num_images}")
        if size < 8 or size % 8:
            raise UserError(f"--image_size must be a multiple of 8 (e.g. 32); got {size}")
        if _FOLDER.value is not None:
            images = figures.load_folder_images(_FOLDER.value, num_images, _SEED.value, (size, size))
        else:
            from robust_ssl.data import synthetic

            images, _ = synthetic.generate(num_images, seed=_SEED.value, image_size=size)
        from robust_ssl.tasks import TASKS, make_tasks

        names = _TASKS.value or list(TASKS)
        path = figures.task_grid(images, make_tasks(names), _SEED.value, _OUTPUT.value)
    print(f"wrote {os.path.abspath(path)}")
