"""The checks of a journey's graph that `relance validate` reports with file:line.

Pure functions of a loaded ``Campaign``: each finding is (path in the YAML, message, severity),
the path being what ``core.spec_loader.Located.problem`` turns into file:line:column, e.g.
``("steps", 2, "branch", "then")``. What the file says on its own (one action per step, unique
names) is the schema's; here is what needs the whole graph: targets that exist, steps no path
reaches, loops that would spin within one tick or never let a customer out, a branch testing a
send step some paths skip, waits longer than the re-entry period, and how long a journey lasts.

Why our own few graph functions rather than networkx: journeys have tens of steps, and
reachability plus strongly connected components are 60 lines, not a new dependency.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from core.spec import Campaign, kind_of, nearest

Path_ = tuple[Any, ...]
Finding = tuple[Path_, str, str]  # (YAML path, message, "error" | "warning")


@dataclass(frozen=True)
class Edge:
    """``source`` (a step index) leads to the step named ``target``, written at ``path``."""

    source: int
    target: str
    path: Path_


def edges(steps: list[Any]) -> list[Edge]:
    """Every edge of the graph with where it is written (the step itself for the default `next`)."""
    out: list[Edge] = []
    for i, step in enumerate(steps):
        kind = kind_of(step)
        if kind == "branch":
            out.append(Edge(i, step.branch.then, ("steps", i, "branch", "then")))
            out.append(Edge(i, step.branch.else_, ("steps", i, "branch", "else")))
        elif kind == "split":
            out += [Edge(i, p.next, ("steps", i, "split", j, "next")) for j, p in enumerate(step.split)]
        elif kind in ("send", "wait"):
            if step.next is not None:
                out.append(Edge(i, step.next, ("steps", i, "next")))
            elif i + 1 < len(steps):
                out.append(Edge(i, steps[i + 1].name, ("steps", i)))
    return out


def ends_here(steps: list[Any], i: int) -> bool:
    """Does the journey end after step ``i`` (an exit step, or the last step without `next:`)?"""
    step = steps[i]
    kind = kind_of(step)
    return kind == "exit" or (kind in ("send", "wait") and step.next is None and i + 1 == len(steps))


def successors(steps: list[Any], guess: bool = False) -> list[list[int]]:
    """Step index -> the indexes it leads to.

    Unknown names are left out (reported on their own), or with ``guess`` read as the nearest
    name, so that one typo does not also make every step after it "never reached".
    """
    index = {s.name: i for i, s in enumerate(steps)}
    out: list[list[int]] = [[] for _ in steps]
    for e in edges(steps):
        target = e.target if e.target in index or not guess else nearest(e.target, index)
        if target in index and index[target] not in out[e.source]:
            out[e.source].append(index[target])
    return out


def reachable(succ: list[list[int]], starts: Iterable[int], avoid: int | None = None) -> set[int]:
    """The indexes reached from ``starts`` (``avoid`` never entered)."""
    seen: set[int] = set()
    todo = [s for s in starts if s != avoid]
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        todo += [j for j in succ[i] if j not in seen and j != avoid]
    return seen


def components(succ: list[list[int]], nodes: Collection[int]) -> list[list[int]]:
    """Strongly connected components of the subgraph on ``nodes`` (Tarjan, iterative), each sorted."""
    number: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    out: list[list[int]] = []
    for root in sorted(nodes):
        if root in number:
            continue
        work = [(root, iter([j for j in succ[root] if j in nodes]))]
        number[root] = low[root] = len(number)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == number[node]:
                    comp = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.append(top)
                        if top == node:
                            break
                    out.append(sorted(comp))
            elif child not in number:
                number[child] = low[child] = len(number)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter([j for j in succ[child] if j in nodes])))
            elif child in on_stack:
                low[node] = min(low[node], number[child])
    return out


def _cyclic(comp: list[int], succ: list[list[int]]) -> bool:
    return len(comp) > 1 or comp[0] in succ[comp[0]]


def _loop(comp: list[int], succ: list[list[int]]) -> list[int]:
    """A shortest loop through the component's first step: [first, ..., first]."""
    start, members = comp[0], set(comp)
    parent: dict[int, int] = {}
    frontier = [start]
    while frontier:
        following = []
        for i in frontier:
            for j in succ[i]:
                if j == start:
                    path = [i]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if i != start else [start, start]
                if j in members and j not in parent:
                    parent[j] = i
                    following.append(j)
        frontier = following
    return [start, start]  # pragma: no cover - a cyclic component always has a loop


def span(delta: timedelta) -> str:
    """3 days 4 hours, 30 minutes: a duration as a marketer writes it."""
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [(days, "day"), (hours, "hour"), (minutes, "minute")]
    text = " ".join(f"{n} {unit}{'s' if n > 1 else ''}" for n, unit in parts if n)
    return text or "0 minutes"


# --------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------


def check_targets(steps: list[Any]) -> list[Finding]:
    """`next`, `then`, `else` and split `next` name steps of this journey."""
    names = [s.name for s in steps]
    out: list[Finding] = []
    for e in edges(steps):
        if e.target in names:
            continue
        close = nearest(e.target, names)
        hint = f"did you mean `{close}`?" if close else f"write one of: {', '.join(names)}"
        out.append((e.path, f"`{e.path[-1]}: {e.target}` is not a step of this journey; {hint}", "error"))
    return out


def check_reachable(steps: list[Any], occupied: Collection[str] = ()) -> list[Finding]:
    """Steps that no path from the first step reaches (a warning when only customers in flight do)."""
    succ = successors(steps, guess=True)
    index = {s.name: i for i, s in enumerate(steps)}
    from_start = reachable(succ, [0])
    from_flight = reachable(succ, [index[n] for n in occupied if n in index])
    out: list[Finding] = []
    for i, step in enumerate(steps):
        start = f"the journey starts at `{steps[0].name}`"
        if i in from_start:
            continue
        if i in from_flight:
            text = (f"step `{step.name}` is reached only by customers already in the journey, not by new "
                    f"ones ({start}); remove it once they have passed")  # fmt: skip
            out.append((("steps", i, "name"), text, "warning"))
        else:
            text = (f"step `{step.name}` is never reached: no step leads to it ({start}); name it in a "
                    f"`next:`, `then:` or `else:`, or remove it")  # fmt: skip
            out.append((("steps", i, "name"), text, "error"))
    return out


def check_loops(steps: list[Any]) -> list[Finding]:
    """Loops without a wait (they would spin within one tick) and loops a customer never leaves."""
    succ = successors(steps)
    out: list[Finding] = []
    not_waits = {i for i, s in enumerate(steps) if kind_of(s) != "wait"}
    for comp in components(succ, not_waits):
        if not _cyclic(comp, succ):
            continue
        loop = _loop(comp, succ)
        shown = " → ".join(f"`{steps[i].name}`" for i in loop)
        closing = next(e for e in edges(steps) if e.source == loop[-2] and e.target == steps[loop[-1]].name)
        text = (f"the steps {shown} go round without a `wait:` step: a customer would loop within one tick; "
                f"put a `wait:` step in the loop or lead this step elsewhere")  # fmt: skip
        out.append((closing.path, text, "error"))
    for comp in components(succ, range(len(steps))):
        members = set(comp)
        if not _cyclic(comp, succ) or any(ends_here(steps, i) for i in comp):
            continue
        if any(j not in members for i in comp for j in succ[i]):
            continue
        if any(e.source in members and e.target not in {s.name for s in steps} for e in edges(steps)):
            continue  # an unknown target is reported on its own
        names = ", ".join(f"`{steps[i].name}`" for i in comp)
        where = next((i for i in comp if kind_of(steps[i]) == "branch"), comp[0])
        path: Path_ = ("steps", where, "branch") if kind_of(steps[where]) == "branch" else ("steps", where)
        text = (f"no way out of the steps {names}: they lead only to each other, so a customer who reaches "
                f"them stays in the journey for ever (until `exit_when:`); lead a `then:`, `else:` or "
                f"`next:` to a step outside them, e.g. an `exit:` step")  # fmt: skip
        out.append((path, text, "error"))
    return out


def check_branch_tests(steps: list[Any]) -> list[Finding]:
    """A response test names a send step that every path to the branch goes through."""
    succ = successors(steps)
    index = {s.name: i for i, s in enumerate(steps)}
    sends = [s.name for s in steps if kind_of(s) == "send"]
    from_start = reachable(succ, [0])
    out: list[Finding] = []
    for i, step in enumerate(steps):
        if kind_of(step) != "branch" or step.branch.if_.step is None:
            continue
        tested = step.branch.if_.step
        at: Path_ = ("steps", i, "branch", "if", "step")
        if tested not in index:
            close = nearest(tested, sends)
            hint = f"did you mean `{close}`?" if close else f"write one of: {', '.join(sends) or '(none)'}"
            out.append((at, f"`step: {tested}` is not a step of this journey; {hint}", "error"))
        elif kind_of(steps[index[tested]]) != "send":
            kind = kind_of(steps[index[tested]])
            hint = f"write one of: {', '.join(sends)}" if sends else "add a `send:` step before it"
            text = f"`step: {tested}` is a {kind} step: a branch tests the response to a `send` step; {hint}"
            out.append((at, text, "error"))
        elif i in from_start and i in reachable(succ, [0], avoid=index[tested]):
            text = (f"`step: {tested}`: some customers reach `{step.name}` without passing `{tested}`, so "
                    f"there is no response of theirs to test; test a send step every path to this branch "
                    f"goes through")  # fmt: skip
            out.append((at, text, "error"))
    return out


def check_reentry(campaign: Campaign) -> list[Finding]:
    """A wait longer than the re-entry period: `every_days` does not hold for customers waiting there.

    A warning, not an error: the engine never enters a customer who is still in the journey
    (journeys.conditions.already_in), so nobody is in it twice; they re-enter later than written.
    """
    every = campaign.reentry.every_days if campaign.reentry is not None else None
    if every is None:
        return []
    out: list[Finding] = []
    for i, step in enumerate(campaign.steps or []):
        if kind_of(step) == "wait" and step.wait.longest() > timedelta(days=every):
            longest = step.wait.longest()
            days = -(-longest // timedelta(days=1))
            text = (f"this wait can last {span(longest)}, longer than `reentry: {{every_days: {every}}}`: a "
                    f"customer still in the journey does not enter it again, so customers waiting here "
                    f"re-enter less often than every {every} days; wait less or write "
                    f"`every_days: {days}`")  # fmt: skip
            out.append((("steps", i, "wait"), text, "warning"))
    return out


def longest_path(campaign: Campaign) -> timedelta:
    """How long a journey can last: the waits' longest() along its longest path without a loop.

    Loops are cut where a depth-first walk from the first step meets a step already on its way.
    """
    steps = list(campaign.steps or [])
    if not steps:
        return timedelta(0)
    succ = successors(steps)
    weight = [s.wait.longest() if kind_of(s) == "wait" else timedelta(0) for s in steps]
    best: dict[int, timedelta] = {}
    on_way: set[int] = set()
    work = [(0, iter(succ[0]))]
    on_way.add(0)
    while work:
        node, children = work[-1]
        child = next(children, None)
        if child is None:
            work.pop()
            on_way.discard(node)
            after = [best[j] for j in succ[node] if j in best]
            best[node] = weight[node] + max(after, default=timedelta(0))
        elif child not in best and child not in on_way:
            on_way.add(child)
            work.append((child, iter(succ[child])))
    return best[0]


def check_length(campaign: Campaign) -> list[Finding]:
    """A conversion window (counted from entry) shorter than the journey misses its later sends."""
    longest, window = longest_path(campaign), campaign.conversion.window_days
    if longest <= timedelta(days=window):
        return []
    days = min(90, -(-longest // timedelta(days=1)))
    text = (f"the journey can last {span(longest)} but `conversion: {{window_days: {window}}}` counts "
            f"purchases for {window} days from entry: purchases after its later steps will not count; "
            f"write `window_days: {days}`")  # fmt: skip
    return [(("conversion", "window_days"), text, "warning")]


def check_graph(campaign: Campaign, occupied: Collection[str] = ()) -> list[Finding]:
    """Every graph check of a journey (none for a one-message campaign).

    ``occupied``: the steps customers are on now; a step only they reach is a warning, not an error.
    """
    steps = list(campaign.steps or [])
    if not steps:
        return []
    out = check_targets(steps)
    out += check_reachable(steps, occupied)
    out += check_loops(steps)
    out += check_branch_tests(steps)
    out += check_reentry(campaign)
    out += check_length(campaign)
    for i, step in enumerate(steps):
        if kind_of(step) == "branch" and step.branch.then == step.branch.else_:
            text = f"`then:` and `else:` both lead to `{step.branch.then}`: the test changes nothing"
            out.append((("steps", i, "branch", "else"), text, "warning"))
    if not any(kind_of(s) == "send" for s in steps):
        out.append((("steps",), "this journey has no `send:` step: it sends nothing", "warning"))
    return out
