"""Deployment files agree with the code: CLI arguments parse, socket paths and ports match envoy.yaml."""
from __future__ import annotations

from pathlib import Path

import yaml

from llm_router.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_kubernetes_pod_matches_the_envoy_bootstrap():
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "llm-router-envoy.yaml").read_text()))
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    containers = {c["name"]: c for c in deploy["spec"]["template"]["spec"]["containers"]}
    args = build_parser().parse_args(containers["llm-router"]["args"])
    assert args.command == "serve" and args.envoy.startswith("unix:")
    envoy = yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text())
    pipes = [c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]["path"]
             for c in envoy["static_resources"]["clusters"]
             if "pipe" in c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]]
    assert args.envoy.removeprefix("unix:") in pipes
    listener_port = envoy["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    assert containers["envoy"]["ports"][0]["containerPort"] == listener_port
    router = containers["llm-router"]
    metrics_port = int(args.metrics.rpartition(":")[2])
    assert router["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": metrics_port}  # served by the runner
    assert router["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": metrics_port}
    socket_dir = str(Path(args.envoy.removeprefix("unix:")).parent)
    for c in containers.values():
        assert any(m["mountPath"] == socket_dir for m in c["volumeMounts"]), c["name"]


def test_dockerfile_default_command_parses():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    cmd = next(line for line in text.splitlines() if line.startswith("CMD "))
    args = build_parser().parse_args(yaml.safe_load(cmd.removeprefix("CMD ")))
    assert args.command == "serve" and args.envoy == "unix:/run/llm-router/ext_proc.sock"


def test_dockerfile_compile_option_builds_the_copy_the_final_image_imports_first():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    line = next(ln for ln in text.splitlines() if "llm-router compile" in ln and not ln.startswith("#"))
    words = line.strip().rstrip("\\ ;").split()
    args = build_parser().parse_args(words[words.index("llm-router") + 1:])
    assert args.command == "compile" and not args.no_check  # checked against plain Python at build time
    assert f"COPY --from=compiled {args.out} /opt/llm-router-compiled" in text
    final = text.rsplit("FROM ", 1)[1]
    assert "ENV PYTHONPATH=/opt/llm-router-compiled" in final
    assert 'ARG COMPILE=0' in text and 'if [ "$COMPILE" = 1 ]' in text  # plain Python unless asked
