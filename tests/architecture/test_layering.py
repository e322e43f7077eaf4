"""The package's import layering, read from the source (ast): no cycle, no import against
the order of the stages, private Keras API in one module only.

Order (a module may import from its own layer or any lower one):

    0  yolact.utils
    1  yolact.ops
    2  data, yolact.modeling
    3  yolact.losses, yolact.detection
    4  yolact.training, yolact.evaluation, yolact.serving, yolact.weights
    5  yolact.configs, config            (the config checks names against the registries)
    6  yolact.cli
    7  yolact (the public API), train, evaluate, inference, export_savedmodel

Within one layer, imports between packages are allowed as long as the packages do not
import each other (no cycle at package level either). Every import counts, including
those inside functions.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAYERS = (
    ("yolact.utils",),
    ("yolact.ops",),
    ("data", "yolact.modeling"),
    ("yolact.losses", "yolact.detection"),
    ("yolact.training", "yolact.evaluation", "yolact.serving", "yolact.weights"),
    ("yolact.configs", "config"),
    ("yolact.cli",),
    ("yolact", "train", "evaluate", "inference", "export_savedmodel"),
)
TOP_LEVEL = ("config", "train", "evaluate", "inference", "export_savedmodel")
PRIVATE_KERAS_ATTRIBUTES = ("_flatten_layers",)
KERAS_COMPAT = "yolact.utils.keras_compat"


def project_modules() -> dict:
    """{module name: path} of yolact/, data/ and the top-level scripts."""
    out = {name: os.path.join(ROOT, f"{name}.py") for name in TOP_LEVEL}
    for package in ("yolact", "data"):
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for file in files:
                if file.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, file), ROOT)[:-3]
                    name = rel.replace(os.sep, ".").removesuffix(".__init__")
                    out[name] = os.path.join(folder, file)
    return out


MODULES = project_modules()


def group_of(module: str) -> str:
    """The stage package a module belongs to (the longest matching prefix)."""
    names = [g for layer in LAYERS for g in layer
             if module == g or module.startswith(g + ".")]
    if not names:
        raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS")
    return max(names, key=len)


LAYER_OF = {g: i for i, layer in enumerate(LAYERS) for g in layer}


def imports_of(module: str) -> list:
    """[(line, imported project module)] for every import statement in `module`."""
    path = MODULES[module]
    tree = ast.parse(open(path).read(), path)
    is_package = path.endswith("__init__.py")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` of a package path
                target = target.rpartition(".")[0]
            if target and target != module:
                out.append((node.lineno, target))
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        group_of(module)


def test_no_import_against_the_order():
    wrong = []
    for module, imports in GRAPH.items():
        mine = LAYER_OF[group_of(module)]
        for line, target in imports:
            theirs = LAYER_OF[group_of(target)]
            if theirs > mine:
                wrong.append(f"{MODULES[module]}:{line}: {module} (layer {mine}) imports "
                             f"{target} (layer {theirs})")
    assert not wrong, "\n".join(wrong)


def find_cycle(graph: dict):
    """One cycle of a {node: set(nodes)} graph as a list, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_module_cycle():
    graph = {m: {t for _, t in imports} for m, imports in GRAPH.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_package_cycle():
    graph = {}
    for module, imports in GRAPH.items():
        for _, target in imports:
            a, b = group_of(module), group_of(target)
            if a != b:
                graph.setdefault(a, set()).add(b)
    cycle = find_cycle(graph)
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


def private_keras_uses(path: str) -> list:
    """[(line, what)]: imports of keras.src, `_flatten_layers` calls, "keras.src..." names."""
    out = []
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("keras.src")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras.src"):
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_KERAS_ATTRIBUTES:
            out.append((node.lineno, node.attr))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.startswith("keras.src")):
            out.append((node.lineno, node.value))
    return out


def test_private_keras_api_only_in_the_compat_module():
    found = [f"{MODULES[m]}:{line}: {what}" for m in MODULES if m != KERAS_COMPAT
             for line, what in private_keras_uses(MODULES[m])]
    assert not found, "\n".join(found)
    assert private_keras_uses(MODULES[KERAS_COMPAT])  # the checker sees the compat module's


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_find_cycle_finds_cycles(graph, cycle):
    assert find_cycle(graph) == cycle


def test_imports_are_read_inside_functions_and_relative():
    """The checker sees a lazy import inside a function, and a relative one."""
    lazy = dict(GRAPH["yolact.cli.train"])  # run() imports the training loop lazily
    assert "yolact.training.loop" in lazy.values()
    assert group_of("yolact.modeling.backbones.resnet") == "yolact.modeling"
    assert LAYER_OF[group_of("data.parser")] == 2
