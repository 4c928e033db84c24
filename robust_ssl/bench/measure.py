"""What the benchmark measures beside the clock: timing statistics, memory, cores, load, versions.

`summarize` turns step times into a median, quartiles and range;
`host_peak_rss_mib` and `device_memory` give peak memory; `cpu_cores` and
`load_average` say how busy the machine is; `environment` records versions and
hardware for the report.
"""

import os
import platform
import resource
import statistics
import sys
import time


def summarize(seconds):
    """Median, quartiles, min and max of step times, in milliseconds.

    Args:
      seconds: list of durations in seconds (at least one).

    Returns:
      dict with median_ms, q1_ms, q3_ms, iqr_ms, min_ms, max_ms, mean_ms, n.
    """
    ms = sorted(1000.0 * s for s in seconds)
    if len(ms) >= 2:
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    else:
        q1 = q3 = ms[0]
    return {
        "median_ms": statistics.median(ms),
        "q1_ms": q1,
        "q3_ms": q3,
        "iqr_ms": q3 - q1,
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "mean_ms": statistics.fmean(ms),
        "n": len(ms),
    }


def host_peak_rss_mib():
    """Peak resident set size of this process so far, MiB (`ru_maxrss`)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def cpu_cores():
    """The CPU cores this process may run on (its affinity where the OS tells, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average():
    """The 1-, 5- and 15-minute load averages, rounded; None where the platform has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def device_memory():
    """Peak and current memory of the first GPU, MiB, as TensorFlow tracks it; None without a GPU.

    Returns:
      {"device", "peak_mib", "current_mib"} or None.
    """
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        return None
    info = tf.config.experimental.get_memory_info(gpus[0].name)
    return {"device": gpus[0].name, "peak_mib": info["peak"] / 2**20, "current_mib": info["current"] / 2**20}


def environment():
    """Versions, CPU, threads and load of this machine, for the report."""
    import keras
    import tensorflow as tf

    cores = cpu_cores()
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_cores": cores,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (on by default)"),
        "load_average": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
