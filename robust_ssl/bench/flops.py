"""FLOPs of a traced TensorFlow graph, by TensorFlow's own per-op FLOP statistics.

`count_flops(graph)` sums what `tf.compat.v1.profiler` with
`ProfileOptionBuilder.float_operation()` sums, the `RegisterStatistics("flops")`
function of every op, but also over the bodies of `tf.cond` branches and called
functions, which the profiler on the outer graph does not see, and without the
ops TensorFlow prunes before running.

This is the one module of robust_ssl that uses TensorFlow internals
(tests/test_layout.py checks it): the per-op statistics are reachable only
through `tensorflow.python.framework.ops.get_stats_for_node_def`, which has no
public form (the public profiler calls it on the outer graph only), and the
graphs of the functions a graph calls only through `FuncGraph._functions`.
"""

# No public API gives an op's registered FLOP statistics (see above).
from tensorflow.python.framework import ops as tf_ops


def _function_graphs(graph, found=None):
    """name -> FuncGraph of every function a traced graph defines (recursively)."""
    found = {} if found is None else found
    # `FuncGraph._functions`: the functions (cond branches, called functions)
    # traced into this graph, with their graphs and so their shapes; the public
    # `as_graph_def().library` holds only their FunctionDefs, without shapes.
    for name, function in getattr(graph, "_functions", {}).items():
        sub = getattr(function, "graph", None)
        if sub is not None and name not in found:
            found[name] = sub
            _function_graphs(sub, found)
    return found


def _live_ops(graph):
    """Ops whose results reach the graph's outputs or a side effect.

    The gradient tape also emits ops whose results nothing uses (e.g. the
    gradients toward activations that the outer tape of the naive
    hypergradient records but λ does not need); TensorFlow's graph optimiser
    prunes them before running, so they must not be counted.
    """
    roots = [t.op for t in graph.outputs]
    roots += list(getattr(graph, "control_outputs", []))
    roots += [op for op in graph.get_operations() if op.op_def is not None and op.op_def.is_stateful]
    live, stack = set(), list(roots)
    while stack:
        op = stack.pop()
        if op.name in live:
            continue
        live.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return live


# Ops that run a function: op type -> (attribute naming the function run when
# `take_then`, the one run otherwise); a call runs the same function either way.
_FUNCTION_ATTRS = {
    "If": ("then_branch", "else_branch"),
    "StatelessIf": ("then_branch", "else_branch"),
    "PartitionedCall": ("f", "f"),
    "StatefulPartitionedCall": ("f", "f"),
}


def _op_flops(graph, op):
    """FLOPs of one op by TF's registered statistics (0 if none); None if a shape is unknown."""
    try:
        return int(tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value or 0)
    except (ValueError, TypeError):  # a shape not fully known
        return None


def _graph_flops(graph, functions, take_then, tally, prune):
    live = _live_ops(graph) if prune else None
    for op in graph.get_operations():
        if live is not None and op.name not in live:
            tally["pruned"] += _op_flops(graph, op) or 0
            continue
        if op.type in _FUNCTION_ATTRS:
            name = op.get_attr(_FUNCTION_ATTRS[op.type][0 if take_then else 1]).name
            if name in functions:
                _graph_flops(functions[name], functions, take_then, tally, prune)
            else:
                tally["unresolved_functions"] += 1
            continue
        if op.type in ("While", "StatelessWhile"):
            tally["unresolved_functions"] += 1  # trip count unknown statically
            continue
        value = _op_flops(graph, op)
        if value is None:
            tally["ops_without_shape"] += 1
        elif value:
            kind = "conv_matmul" if ("Conv" in op.type or "MatMul" in op.type) else "other"
            tally[kind] += value


def count_flops(graph, take_then=True, prune=True):
    """FLOPs of one execution of a traced graph, by TF's per-op FLOP statistics.

    Sums `tf_ops.get_stats_for_node_def(graph, node, "flops")` — what
    `tf.compat.v1.profiler.profile(graph, options=float_operation())` sums — over
    the graph's ops and, unlike the profiler, over the bodies of `tf.cond`
    branches and function calls. `take_then` picks which branch of every cond
    runs (in `train_step`: True = the meta step, False = the plain step; the
    asserts' conds cost nothing either way). With `prune`, ops whose results
    reach neither an output nor a side effect are left out, as TensorFlow's
    graph optimiser removes them before running (their FLOPs go to "pruned").

    Args:
      graph: a `FuncGraph`, e.g. `tf.function(f).get_concrete_function(x).graph`.
      take_then: follow the then-branch of conds (else the else-branch).
      prune: leave out dead ops.

    Returns:
      dict: total, conv_matmul, other and pruned (FLOPs), ops_without_shape and
      unresolved_functions (counts of ops that could not be costed).
    """
    tally = {"conv_matmul": 0, "other": 0, "pruned": 0, "ops_without_shape": 0, "unresolved_functions": 0}
    _graph_flops(graph, _function_graphs(graph), take_then, tally, prune)
    tally["total"] = tally["conv_matmul"] + tally["other"]
    return tally
