"""λ trajectories drawn into one matplotlib Axes: one run, or the seeds of one recipe.

The panels of `robust_ssl.figures` (plot_lambdas, plot_lambda_trajectories)
and of `robust_ssl.compare`. Coinciding trajectories draw as one line
(`merge_equal`), a λ that never moves as a note of its values
(`is_constant`, `format_values`, `note`). Nothing here creates or saves a
figure; the names are importable from `robust_ssl.figures` too.
"""

import numpy as np

from robust_ssl.lambda_logs import warmup_end

# Two λ curves closer than this fraction of the panel's λ range (or 1e-9) draw as one.
EQUAL_FRACTION = 1e-3


def _span(lambdas):
    values = np.concatenate([np.asarray(v, np.float64).ravel() for v in lambdas.values()])
    return float(values.max() - values.min()) if values.size else 0.0


def is_constant(lambdas):
    """Whether no λ of any task ever moves (a fixed-λ run, or a log within the warm-up)."""
    return all(np.all(np.asarray(v, np.float64) == np.asarray(v, np.float64)[0]) for v in lambdas.values())


def merge_equal(lambdas):
    """Groups tasks whose λ trajectories coincide, so that none hides another.

    Two trajectories coincide when they differ nowhere by more than
    `EQUAL_FRACTION` of the λ range of all of them (or 1e-9): drawn apart they
    would be one line on the plot.

    Args:
      lambdas: dict task name -> λ [T].

    Returns:
      list of (label, task names, values), in the order of each group's first
      task; the label joins the names with " = ".
    """
    tolerance = max(EQUAL_FRACTION * _span(lambdas), 1e-9)
    groups = []
    for name, values in lambdas.items():
        values = np.asarray(values, np.float64)
        for group in groups:
            if group[2].shape == values.shape and np.max(np.abs(group[2] - values)) <= tolerance:
                group[1].append(name)
                break
        else:
            groups.append(["", [name], values])
    return [(" = ".join(names), names, values) for _, names, values in groups]


def format_values(values, digits=3):
    """'0.5: rotation, color; 1: ir' — tasks grouped by equal λ, largest first, one group a line.

    Args:
      values: dict task name -> λ.
      digits: significant digits.

    Returns:
      list of lines.
    """
    by_value = {}
    for name, value in values.items():
        by_value.setdefault(float(f"{float(value):.{digits}g}"), []).append(name)
    return [
        f"{value:.{digits}g}: {', '.join(names)}" for value, names in sorted(by_value.items(), reverse=True)
    ]


def note(ax, text, fontsize=9):
    """Writes `text` in the middle of a panel that draws no curve, and clears its y axis."""
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        fontsize=fontsize,
        transform=ax.transAxes,
        bbox=dict(boxstyle="round,pad=0.5", facecolor="0.96", edgecolor="0.7"),
    )
    ax.set_yticks([])


def draw_lambdas(
    ax,
    steps,
    lambdas,
    colours=None,
    linestyle="-",
    markers=True,
    warmup_end_step=None,
    fontsize=9,
    fixed_text="λ fixed at",
):
    """Draws λ of each task against the training step into `ax`.

    The λ plot of `plot_lambdas` and of every panel of `robust_ssl.compare`.
    Tasks whose trajectories coincide (`merge_equal`) draw as one line labelled
    "a = b". When no λ moves at all (`is_constant`), no line is drawn: a note
    lists the values ("λ fixed at" + `format_values`) so that flat lines do not
    hide each other. The y axis scales to the data.

    Args:
      ax: matplotlib Axes.
      steps: the training steps [T].
      lambdas: dict task name -> λ [T], drawn in this order.
      colours: optional dict task name -> colour (the same task in the same
        colour across panels; a merged line takes its first task's).
      linestyle: matplotlib line style.
      markers: mark the points of a short trajectory (30 steps or fewer).
      warmup_end_step: a step to mark with a dashed vertical line (the end of
        the warm-up, see `warmup_end`), or None.
      fontsize: of the legend.
      fixed_text: the first words of the note of a constant λ.

    Returns:
      True when curves were drawn, False when the panel holds the note.
    """
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    steps = np.asarray(steps)
    if is_constant(lambdas):
        first = {name: np.asarray(v, np.float64)[0] for name, v in lambdas.items()}
        lines = format_values(first)
        where = f"steps {steps[0]}–{steps[-1]}" if len(steps) > 1 else f"step {steps[0]}"
        text = fixed_text + "\n" + "\n".join(lines)
        note(ax, f"{text}\n({where}, {len(steps)} logged)", fontsize=fontsize + 1)
        if len(steps) > 1:
            ax.set_xlim(steps[0], steps[-1])
        return False
    marker = "o" if markers and len(steps) <= 30 else None
    for label, names, values in merge_equal(lambdas):
        colour = (colours or {}).get(names[0])
        ax.plot(
            steps, values, linestyle, color=colour, label=label, marker=marker, markersize=3, linewidth=1.6
        )
    if warmup_end_step is not None:
        ax.axvline(
            warmup_end_step,
            color="0.3",
            linestyle="--",
            linewidth=1.0,
            label=f"end of warm-up (step {warmup_end_step})",
        )
    ax.margins(y=0.12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=fontsize)
    return True


def draw_seeds(ax, trajectories, colours=None, fontsize=8):
    """Draws λ of each task of one recipe's seeds into `ax`.

    One seed draws as `draw_lambdas` does. Several seeds logged at the same
    steps draw as the mean over seeds with a band from the lowest to the
    highest seed; seeds logged at different steps draw one thin line each.
    Tasks whose trajectories coincide in every seed draw as one line "a = b"
    (`merge_equal`); the end of the warm-up is a dashed vertical line; when no
    λ of any seed moves, a note lists the values.

    Args:
      ax: matplotlib Axes.
      trajectories: list of (steps [T], dict task -> λ [T]), one per seed,
        with the same tasks.
      colours: optional dict task name -> colour.
      fontsize: of the legend.

    Returns:
      True when curves were drawn, False when the panel holds the note.
    """
    from matplotlib.ticker import MaxNLocator

    if len(trajectories) == 1 or all(is_constant(lambdas) for _, lambdas in trajectories):
        steps, lambdas = trajectories[0]
        return draw_lambdas(
            ax, steps, lambdas, colours=colours, warmup_end_step=warmup_end(steps, lambdas), fontsize=fontsize
        )
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    tasks = list(trajectories[0][1])
    steps_agree = all(np.array_equal(steps, trajectories[0][0]) for steps, _ in trajectories)
    every_seed = {
        t: np.concatenate([np.asarray(lambdas[t], np.float64) for _, lambdas in trajectories]) for t in tasks
    }
    for label, names, _ in merge_equal(every_seed):
        colour = (colours or {}).get(names[0])
        if steps_agree:
            stack = np.stack([np.asarray(lambdas[names[0]], np.float64) for _, lambdas in trajectories])
            steps = trajectories[0][0]
            ax.fill_between(steps, stack.min(axis=0), stack.max(axis=0), color=colour, alpha=0.2, linewidth=0)
            ax.plot(steps, stack.mean(axis=0), color=colour, label=label, linewidth=1.6)
        else:
            for i, (steps, lambdas) in enumerate(trajectories):
                ax.plot(
                    steps,
                    lambdas[names[0]],
                    color=colour,
                    label=label if i == 0 else None,
                    linewidth=0.9,
                    alpha=0.8,
                )
    ends = sorted({e for e in (warmup_end(s, lam) for s, lam in trajectories) if e is not None})
    where = f"step {ends[0]}" if len(ends) == 1 else "steps " + ", ".join(map(str, ends))
    for i, end in enumerate(ends):  # one legend entry ("_": not in the legend) for all seeds
        label = f"end of warm-up ({where})"
        ax.axvline(end, color="0.3", linestyle="--", linewidth=1.0, label=label if i == 0 else "_" + label)
    ax.margins(y=0.12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=fontsize)
    return True
