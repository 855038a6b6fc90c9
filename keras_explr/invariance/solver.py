"""The largest 0/1 membership vector that satisfies integer linear equations.

Pure Python (no Keras): the structural pass (`graph`) writes every equation as
a row ``{variable index: integer coefficient}`` that must sum to 0; `solve`
returns the largest set of variables whose memberships m_v = 1 (all others 0)
satisfy every row, exactly, by branch and bound with bound propagation on
each connected set of equations. Iterative (an explicit stack), so the depth
of the search never meets the interpreter's recursion limit.

>>> from keras_explr.invariance import solver
>>> # m0 = m1 (a bias scaled with its kernel), m2 = 0 (a variable that must stay out)
>>> solver.solve(3, [{0: 1, 1: -1}, {2: 1}])
([[0, 1], []], True)
"""

NODE_BUDGET = 200000


def solve(n, rows, node_budget=NODE_BUDGET):
    """The largest m ∈ {0,1}^n with every row Σ a_k m_k = 0.

    Args:
      n (int): the number of variables (indices 0..n-1).
      rows (list[dict[int, int]]): the equations, each a dict {index: nonzero int}.
      node_budget (int): search nodes allowed per connected set of equations.

    Returns:
      ``(parts, exhaustive)``: the chosen indices of each connected set
      (disjoint; their union is the answer) and whether every set was searched
      within the budget (if not, the set found is feasible but maybe not the
      largest).
    """
    rows = [r for r in rows if r]
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for r in rows:
        ks = list(r)
        for k in ks[1:]:
            parent[find(k)] = find(ks[0])
    comps = {}
    for i in range(n):
        comps.setdefault(find(i), []).append(i)
    by_var = {}
    for ri, r in enumerate(rows):
        for k in r:
            by_var.setdefault(k, []).append(ri)
    chosen, exhaustive = [], True
    for comp in comps.values():
        comp_rows = sorted({ri for k in comp for ri in by_var.get(k, [])})
        if not comp_rows:
            chosen.append(comp)
            continue
        sol, done = branch_and_bound(comp, [rows[ri] for ri in comp_rows], node_budget)
        exhaustive &= done
        chosen.append([k for k in comp if sol.get(k)])
    return chosen, exhaustive


def _propagate(rows, by_var, assign, queue):
    """Fixes every membership the rows force given `assign` (in place); False if a row cannot hold."""
    queue = list(queue)
    while queue:
        r = rows[queue.pop()]
        lo = hi = 0
        free = []
        for k, a in r.items():
            if k in assign:
                lo += a * assign[k]
                hi += a * assign[k]
            else:
                free.append((k, a))
                if a > 0:
                    hi += a
                else:
                    lo += a
        if lo > 0 or hi < 0:
            return False
        for k, a in free:
            # Setting m_k to 1 moves [lo, hi] up by a (a > 0) or down by |a|; to 0 the other way.
            if a > 0:
                val = 0 if lo + a > 0 else (1 if hi - a < 0 else None)
            else:
                val = 0 if hi + a < 0 else (1 if lo - a > 0 else None)
            if val is not None:
                assign[k] = val
                queue.extend(by_var[k])
    return True


def branch_and_bound(comp, rows, budget=NODE_BUDGET):
    """The largest assignment of the variables `comp` satisfying `rows`
    (depth first, m = 1 before m = 0), and whether the search finished within `budget` nodes."""
    by_var = {}
    for ri, r in enumerate(rows):
        for k in r:
            by_var.setdefault(k, []).append(ri)
    best, best_ones, count = {k: 0 for k in comp}, 0, 0
    start = {}
    stack = [start] if _propagate(rows, by_var, start, range(len(rows))) else []
    while stack:
        assign = stack.pop()
        count += 1
        if count > budget:
            break
        ones = sum(assign.values())
        free = [k for k in comp if k not in assign]
        if ones + len(free) <= best_ones:
            continue
        if not free:
            best, best_ones = dict(assign), ones
            continue
        k = free[0]
        children = []
        for val in (1, 0):
            child = dict(assign)
            child[k] = val
            if _propagate(rows, by_var, child, by_var[k]):
                children.append(child)
        stack.extend(reversed(children))  # m_k = 1 is searched first
    return best, count <= budget
