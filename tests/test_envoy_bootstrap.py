"""Generated Envoy bootstraps: committed files are current, Envoy accepts them, production is TLS-checked."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from fixtures_envoy import require_envoy
from llm_router.config import load_config, parse_config
from llm_router.gateways.envoy import bootstrap
from llm_router.gateways.envoy.bootstrap import RouteSpec, build, spec_from_config

ROOT = Path(__file__).resolve().parent.parent
HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com", "deepseek": "api.deepseek.com",
         "google": "generativelanguage.googleapis.com", "mistral": "api.mistral.ai", "together": "api.together.xyz"}


def clusters(boot: dict) -> dict[str, dict]:
    return {c["name"]: c for c in boot["static_resources"]["clusters"]}


def hcm(boot: dict) -> dict:
    return boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def test_committed_files_are_what_the_generator_makes():
    assert (ROOT / "envoy/envoy.yaml").read_text() == bootstrap.production(), \
        "envoy/envoy.yaml is stale: python -m llm_router.gateways.envoy.bootstrap production > envoy/envoy.yaml"
    assert (ROOT / "envoy/envoy-local.yaml").read_text() == bootstrap.local(), \
        "envoy/envoy-local.yaml is stale: python -m llm_router.gateways.envoy.bootstrap local > envoy/envoy-local.yaml"


@pytest.mark.envoy
@pytest.mark.parametrize("name", ["envoy.yaml", "envoy-local.yaml"])
def test_envoy_validates_the_committed_bootstraps(name):
    binary = require_envoy()
    if name == "envoy.yaml" and not Path(bootstrap.CA_BUNDLE).exists():
        pytest.skip(f"the system CA bundle {bootstrap.CA_BUNDLE} is missing (Debian package ca-certificates)")
    out = subprocess.run([str(binary), "--mode", "validate", "-c", str(ROOT / "envoy" / name), "--disable-hot-restart"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout + out.stderr


def test_production_clusters_are_the_providers_over_verified_tls():
    boot = yaml.safe_load((ROOT / "envoy/envoy.yaml").read_text())
    cs = clusters(boot)
    for name, host in HOSTS.items():
        c = cs[name]
        addr = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        assert (addr["address"], addr["port_value"]) == (host, 443)
        tls = c["transport_socket"]["typed_config"]
        assert tls["sni"] == host
        vc = tls["common_tls_context"]["validation_context"]
        assert vc["trusted_ca"]["filename"] == "/etc/ssl/certs/ca-certificates.crt"
        assert vc["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": host}}]
    routes = {r["name"]: r for r in hcm(boot)["route_config"]["virtual_hosts"][0]["routes"]}
    for name, host in HOSTS.items():
        r = routes[f"to-{name}"]
        assert r["match"]["headers"] == [{"name": "x-llm-router-upstream", "string_match": {"exact": name}}]
        assert r["route"]["cluster"] == name and r["route"]["host_rewrite_literal"] == host
        assert float(r["route"]["timeout"].rstrip("s")) >= 300  # long SSE answers
        assert r["request_headers_to_remove"] == ["x-llm-router-upstream"]
    assert cs["llm_router_ext_proc"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == \
        {"pipe": {"path": "/run/llm-router/ext_proc.sock"}}


def test_ext_proc_filter_is_set_up_for_one_round_trip_routing():
    boot = yaml.safe_load((ROOT / "envoy/envoy.yaml").read_text())
    filters = hcm(boot)["http_filters"]
    assert [f["name"] for f in filters] == ["envoy.filters.http.ext_proc", "llm_router.observe",
                                             "envoy.filters.http.buffer", "envoy.filters.http.router"]
    ep = filters[0]["typed_config"]
    assert ep["processing_mode"]["request_header_mode"] == "SEND"
    assert ep["processing_mode"]["request_body_mode"] == "STREAMED"
    assert ep["send_body_without_waiting_for_header_response"] is True
    assert ep["failure_mode_allow"] is False  # the default policy fails closed
    assert "xds.route_metadata" in ep["request_attributes"]
    assert ep["processing_mode"]["response_body_mode"] == "NONE"  # responses are observed by the second filter
    ob = filters[1]["typed_config"]
    assert ob["observability_mode"] is True and ob["failure_mode_allow"] is True
    assert ob["processing_mode"]["response_header_mode"] == "SEND" and ob["processing_mode"]["response_body_mode"] == "STREAMED"
    assert ob["grpc_service"]["initial_metadata"] == [{"key": "x-llm-router-service", "value": "observe"}]
    routes = {r["name"]: r for r in hcm(boot)["route_config"]["virtual_hosts"][0]["routes"]}
    assert routes["llm-0"]["typed_per_filter_config"]["llm_router.observe"]["disabled"] is True
    assert "typed_per_filter_config" not in routes["to-openai"]


def test_failure_mode_and_route_policies_come_from_config():
    cfg = parse_config({"server": {"envoy": {"failure_mode": "open", "message_timeout_ms": 250}},
                        "policies": {"cheap": {"strategy": "ladder", "ladder": {"LOW": "deepseek-v2"}, "failure_mode": "closed"}}})
    spec = spec_from_config(cfg, listen=("127.0.0.1", 10000), processor="unix:/tmp/x.sock",
                            routes=(RouteSpec("/cheap/", policy="cheap", failure_mode="closed"), RouteSpec("/")))
    boot = build(spec)
    ep = hcm(boot)["http_filters"][0]["typed_config"]
    assert ep["failure_mode_allow"] is True and ep["message_timeout"] == "0.25s"
    routes = {r["name"]: r for r in hcm(boot)["route_config"]["virtual_hosts"][0]["routes"]}
    cheap = routes["llm-0"]
    assert cheap["match"] == {"prefix": "/cheap/"}
    assert cheap["metadata"] == {"filter_metadata": {"llm_router": {"policy": "cheap"}}}
    assert cheap["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["overrides"] == {"failure_mode_allow": False}
    assert "envoy.filters.http.ext_proc" not in routes["llm-1"]["typed_per_filter_config"]


def test_buffers_hold_the_largest_policy_body_limit():
    cfg = parse_config({"policies": {"big": {"strategy": "ladder", "ladder": {"LOW": "deepseek-v2"}, "max_body_bytes": 20 << 20}}})
    boot = build(spec_from_config(cfg, listen=("127.0.0.1", 1), processor="unix:/tmp/x.sock"))
    listener = boot["static_resources"]["listeners"][0]
    assert listener["per_connection_buffer_limit_bytes"] > 20 << 20
    buffer = next(f for f in hcm(boot)["http_filters"] if f["name"] == "envoy.filters.http.buffer")
    assert buffer["typed_config"]["max_request_bytes"] > 20 << 20


def test_local_variant_points_every_provider_at_the_fakes():
    cfg = load_config(None)
    ports = {p: 20000 + i for i, p in enumerate(sorted(cfg.providers))}
    boot = build(spec_from_config(cfg, listen=("127.0.0.1", 1), processor="unix:/tmp/x.sock", local_ports=ports))
    for name, c in clusters(boot).items():
        if name == "llm_router_ext_proc":
            continue
        addr = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        assert addr == {"address": "127.0.0.1", "port_value": ports[name]}
        assert "transport_socket" not in c
    prod = build(spec_from_config(cfg, listen=("127.0.0.1", 1), processor="unix:/tmp/x.sock"))
    assert hcm(boot)["http_filters"] == hcm(prod)["http_filters"]  # same filters: they cannot drift
    assert [r["name"] for r in hcm(boot)["route_config"]["virtual_hosts"][0]["routes"]] == \
        [r["name"] for r in hcm(prod)["route_config"]["virtual_hosts"][0]["routes"]]


def test_custom_upstream_names_become_clusters():
    cfg = parse_config({"models": {"gpt-4o-eu": {"provider": "openai", "name": "gpt-4o", "input_price": 5, "output_price": 15,
                                                 "context_window": 128000, "upstream": "openai-eu"}}})
    boot = build(spec_from_config(cfg, listen=("127.0.0.1", 1), processor="unix:/tmp/x.sock"))
    assert "openai-eu" in clusters(boot)
    text = bootstrap.render(boot)
    assert "<<" not in text and "&id" not in text  # Envoy's YAML loader rejects merge keys and anchors
