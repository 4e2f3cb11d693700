"""The files a user starts from: the cluster config, the README's commands, the layout's import rules."""

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_ray_cluster_yaml_has_the_launcher_fields_and_a_gpu_worker():
    cfg = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    for key in (
        "cluster_name",
        "max_workers",
        "provider",
        "auth",
        "available_node_types",
        "head_node_type",
        "setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    ):
        assert key in cfg, key
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    gpu = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu and all("node_config" in t and "max_workers" in t for t in gpu)
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    first = [line.split("#")[0].strip() for line in blocks[0].splitlines() if line.split("#")[0].strip()]
    assert first == ["make build", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^build: setup", makefile, re.M) and re.search(r"^test: setup", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _imports(folder: str) -> set[str]:
    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_imports_run_one_way():
    assert not {"jobs", "viewer"} & _imports("atlas")
    assert not {"jobs", "ray", "diffusers", "torch"} & _imports("viewer")
    assert not {"atlas", "jobs", "viewer"} & _imports("schemas")
