"""The input pipeline alone: images/s that `training_dataset` delivers, and the task transforms' cost.

For each task set of the benchmarked modes, `run_pipeline` iterates
`robust_ssl.data.pipeline.training_dataset` (augmentation and task transforms
included) without training, and times `make_task_batch` in a `tf.function` on
a fixed batch. The images are generated (`modes.example_data`) or, with
`Settings.pipeline_folder`, the training images of an image folder, decoded
into memory or streamed from disk.
"""

import statistics
import time

from robust_ssl.bench.measure import host_peak_rss_mib, load_average
from robust_ssl.bench.modes import base_config, example_data


def _time_iterations(iterator, n):
    start = time.perf_counter()
    for _ in range(n):
        next(iterator)  # the element's tensors are ready once `next` returned it
    return time.perf_counter() - start


def run_pipeline(settings, config_dict, task_sets):
    """Input pipeline alone and the task transforms' own cost.

    Args:
      settings: `Settings`.
      config_dict: the base experiment config as a plain dict (task options).
      task_sets: list of (tasks tuple, with_meta bool) to measure.

    Returns:
      dict with a "pipeline" entry per task set (images/s and batches/s that
      `training_dataset` delivers, ms per batch of `make_task_batch`).
    """
    import tensorflow as tf

    from robust_ssl.data import pipeline as data_pipeline
    from robust_ssl.tasks import make_tasks

    base = base_config(config_dict)
    if settings.pipeline_folder:
        from robust_ssl.data import datasets

        data = datasets.load_folder(settings.pipeline_folder, in_memory=settings.pipeline_in_memory)
        # Arrays when the folder is decoded into memory, else `folders.ImageFiles`
        # that the pipeline reads and decodes per batch.
        train_examples = data.train_source
    else:
        data = example_data(settings, settings.num_train)
        train_examples = data.train
    b = settings.batch_size
    images = tf.random.stateless_uniform([b, 32, 32, 3], [settings.seed, 1])
    labels = tf.zeros([b], tf.int32)
    seed = tf.constant([settings.seed, 0], tf.int64)
    results = []
    for tasks, with_meta in task_sets:
        load_start = load_average()
        task_objs = make_tasks(tasks, {n: dict(base.task_options.get(n, {})) for n in tasks})
        ds = data_pipeline.training_dataset(
            train_examples,
            task_objs,
            b,
            seed=settings.seed,
            meta_examples=data.test if with_meta else None,
            meta_batch_size=settings.meta_batch_size,
        )
        iterator = iter(ds)
        _time_iterations(iterator, max(3, settings.pipeline_batches // 10))  # fill buffers
        seconds = _time_iterations(iterator, settings.pipeline_batches)

        transform = tf.function(lambda x, y, objs=task_objs: data_pipeline.make_task_batch(x, y, objs, seed))
        transform(images, labels)  # trace
        times = []
        for _ in range(settings.transform_repeats):
            start = time.perf_counter()
            out = transform(images, labels)
            # Fetch one value so the call is complete before the clock stops.
            _ = out["label"].numpy()
            times.append(time.perf_counter() - start)
        results.append(
            {
                "tasks": list(tasks),
                "meta": with_meta,
                "batches": settings.pipeline_batches,
                "images_per_s": settings.pipeline_batches * b / seconds,
                "batches_per_s": settings.pipeline_batches / seconds,
                "transform_ms_per_batch": 1000.0 * statistics.median(times),
                "transform_ms_min": 1000.0 * min(times),
                "load_start": load_start,
                "load_end": load_average(),
            }
        )
    return {
        "pipeline": results,
        "data": _pipeline_data_text(settings, data),
        "peak_host_mib": host_peak_rss_mib(),
    }


def _pipeline_data_text(settings, data):
    if not settings.pipeline_folder:
        return f"{settings.num_train} generated images held in memory"
    streamed = not isinstance(data.train_source, tuple)
    how = "streamed from disk, decoded per batch" if streamed else "decoded into memory once"
    return f"{data.num_train} images of {settings.pipeline_folder}, {how}"
