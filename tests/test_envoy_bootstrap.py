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
    routed = routes["llm-routed"]
    assert routed["match"]["headers"] == [{"name": "x-llm-router-upstream", "present_match": True}]
    assert routed["route"]["auto_host_rewrite"] is True  # Host is each attempt's provider
    assert float(routed["route"]["timeout"].rstrip("s")) >= 300  # long SSE answers
    assert routed["request_headers_to_remove"] == ["x-llm-router-upstream"]
    for name, host in HOSTS.items():
        endpoint = cs[name]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["hostname"] == host
    # Unrouted traffic (other paths, fail-open) goes to the passthrough twin of the default upstream.
    assert routes["llm-0"]["route"]["cluster"] == "llm_router_passthrough"
    assert routes["llm-0"]["route"]["host_rewrite_literal"] == "api.openai.com"
    assert cs["llm_router_ext_proc"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == \
        {"pipe": {"path": "/run/llm-router/ext_proc.sock"}}


def test_ext_proc_filter_is_set_up_for_one_round_trip_routing():
    boot = yaml.safe_load((ROOT / "envoy/envoy.yaml").read_text())
    filters = hcm(boot)["http_filters"]
    assert [f["name"] for f in filters] == ["envoy.filters.http.ext_proc", "envoy.filters.http.buffer", "envoy.filters.http.router"]
    ep = filters[0]["typed_config"]
    assert ep["processing_mode"]["request_header_mode"] == "SEND"
    assert ep["processing_mode"]["request_body_mode"] == "STREAMED"
    assert ep["send_body_without_waiting_for_header_response"] is True
    assert ep["failure_mode_allow"] is False  # the default policy fails closed
    assert "xds.route_metadata" in ep["request_attributes"]
    assert ep["processing_mode"]["response_body_mode"] == "NONE"  # responses are observed by an upstream filter
    assert ep["mutation_rules"] == {"allow_envoy": True}  # it overwrites client-sent retry controls


def upstream_filters(cluster: dict) -> list[dict]:
    return cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]


def test_provider_clusters_rewrite_fallback_attempts_and_observe_every_attempt():
    boot = yaml.safe_load((ROOT / "envoy/envoy.yaml").read_text())
    cs = clusters(boot)
    for name in HOSTS:
        filters = upstream_filters(cs[name])
        assert [f["name"] for f in filters] == ["llm_router.attempt", "llm_router.observe", "envoy.filters.http.upstream_codec"]
        attempt = filters[0]["typed_config"]
        # Skipped on attempt 1 (the routing filter made that call): no extra round trip when nothing fails.
        skip = attempt["xds_matcher"]["matcher_tree"]
        assert skip["input"]["typed_config"]["header_name"] == "x-envoy-attempt-count"
        assert list(skip["exact_match_map"]["map"]) == ["1"]
        ep = attempt["extension_config"]["typed_config"]
        assert ep["failure_mode_allow"] is False  # fail closed: never forward an attempt it could not rewrite
        assert ep["processing_mode"]["request_body_mode"] == "BUFFERED"
        assert ep["request_attributes"] == ["xds.cluster_name"]
        assert ep["grpc_service"]["initial_metadata"] == [{"key": "x-llm-router-service", "value": "attempt"}]
        ob = filters[1]["typed_config"]
        assert ob["observability_mode"] is True and ob["failure_mode_allow"] is True
        assert ob["processing_mode"]["request_header_mode"] == "SEND"  # which attempt this is
        assert ob["processing_mode"]["response_body_mode"] == "STREAMED"
        assert ob["grpc_service"]["initial_metadata"] == [{"key": "x-llm-router-service", "value": "observe"}]
        patterns = ob["forward_rules"]["allowed_headers"]["patterns"]
        allowed = {p["exact"] for p in patterns if "exact" in p}
        assert {"x-envoy-attempt-count", ":status", "retry-after", "retry-after-ms", "content-encoding"} <= allowed
        assert {p["prefix"] for p in patterns if "prefix" in p} == {"x-ratelimit-", "anthropic-ratelimit-"}  # both dialects
        assert all(set(p) <= {"exact", "prefix"} for p in patterns)  # only what it reads: no credentials
        assert "authorization" not in allowed and "x-api-key" not in allowed
        assert {p["exact"] for p in ep["forward_rules"]["allowed_headers"]["patterns"]} == \
            {"x-envoy-attempt-count", ":status", "retry-after"}
        assert cs[name]["circuit_breakers"]["thresholds"][0]["max_retries"] >= 1000
    assert "typed_extension_protocol_options" not in cs["llm_router_passthrough"] or \
        "http_filters" not in cs["llm_router_passthrough"]["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]


def test_routed_route_retries_on_the_chain():
    boot = yaml.safe_load((ROOT / "envoy/envoy.yaml").read_text())
    vhost = hcm(boot)["route_config"]["virtual_hosts"][0]
    assert vhost["include_request_attempt_count"] is True and vhost["include_attempt_count_in_response"] is True
    route = {r["name"]: r for r in vhost["routes"]}["llm-routed"]["route"]
    policy = route["retry_policy"]
    assert set(policy["retry_on"].split(",")) == {"5xx", "reset", "connect-failure", "retriable-status-codes"}
    assert policy["retriable_status_codes"] == [401, 403, 404, 408, 409, 425, 429] and policy["refresh_cluster_on_retry"] is True
    assert policy["num_retries"] == 2  # the default policy's chain: primary + 2 fallbacks
    matcher = route["inline_cluster_specifier_plugin"]["extension"]["typed_config"]["cluster_matcher"]["matcher_tree"]
    assert matcher["input"]["typed_config"]["header_name"] == "x-envoy-attempt-count"
    by_attempt = matcher["exact_match_map"]["map"]
    assert sorted(by_attempt) == ["0", "1", "2"]
    for k, slot in by_attempt.items():  # attempts made so far k -> slot k+1
        tree = slot["matcher"]["matcher_tree"]
        assert tree["input"]["typed_config"]["header_name"] == f"x-llm-router-try-{int(k) + 1}"
        assert sorted(tree["exact_match_map"]["map"]) == sorted(HOSTS)
    assert int(route["retry_policy"]["per_try_timeout"].rstrip("s")) > 0


def test_fallback_off_means_one_attempt_and_no_rewrite_filter():
    cfg = parse_config({"server": {"envoy": {"fallback": False}}})
    boot = build(spec_from_config(cfg, listen=("127.0.0.1", 1), processor="unix:/tmp/x.sock"))
    route = {r["name"]: r for r in hcm(boot)["route_config"]["virtual_hosts"][0]["routes"]}["llm-routed"]["route"]
    assert "retry_policy" not in route
    assert [f["name"] for f in upstream_filters(clusters(boot)["openai"])] == ["llm_router.observe",
                                                                              "envoy.filters.http.upstream_codec"]


def test_longer_chains_get_more_slots_and_retries():
    cfg = parse_config({"policies": {"wide": {"strategy": "ladder", "ladder": {"LOW": "deepseek-v2"}, "fallbacks": 5}}})
    route = {r["name"]: r for r in hcm(build(spec_from_config(cfg, listen=("127.0.0.1", 1), processor="unix:/tmp/x.sock")))[
        "route_config"]["virtual_hosts"][0]["routes"]}["llm-routed"]["route"]
    assert route["retry_policy"]["num_retries"] == 5
    assert len(route["inline_cluster_specifier_plugin"]["extension"]["typed_config"]["cluster_matcher"]["matcher_tree"][
        "exact_match_map"]["map"]) == 6


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
    assert "typed_per_filter_config" not in routes["llm-1"]


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
        assert addr == {"address": "127.0.0.1", "port_value": ports["openai" if name == "llm_router_passthrough" else name]}
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


@pytest.mark.envoy
def test_envoy_is_started_again_on_new_ports_when_its_port_was_taken(tmp_path):
    """A port found free and taken before Envoy binds it (as happened in a full test run): Envoy exits,
    and is started again on fresh ports instead of failing the caller."""
    import socket
    import urllib.request

    from llm_router.bench.envoy import upstream_bootstrap
    from llm_router.gateways.envoy.stack import start_envoy_on_free_ports, stop_all

    require_envoy()
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    taken = held.getsockname()[1]
    asked: list[int] = []

    def bootstrap_for(port: int, admin: int) -> dict:
        asked.append(port)
        return upstream_bootstrap(taken if len(asked) == 1 else port, admin)

    procs: list = []
    try:
        envoy, port = start_envoy_on_free_ports(bootstrap_for, tmp_path, procs, name="retry")
        assert len(asked) == 2 and port == asked[1] != taken
        assert procs == [envoy] and envoy.popen.poll() is None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/chat/completions", data=b"{}", timeout=10) as r:
            assert r.status == 200
        # Any other start failure is not retried: it is the caller's to see.
        def bad(port: int, admin: int) -> dict:
            boot = upstream_bootstrap(port, admin)
            boot["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] = "not-an-address"
            return boot

        with pytest.raises(RuntimeError, match="process exited"):
            start_envoy_on_free_ports(bad, tmp_path, procs, name="broken", timeout=30)
    finally:
        stop_all(procs)
        held.close()


def test_free_ports_are_picked_below_the_ephemeral_range():
    """Client sockets get their local port from the ephemeral range; a port picked below it cannot be taken by one."""
    from llm_router.gateways.envoy.stack import _ephemeral_range, free_port

    low = _ephemeral_range()[0]
    ports = {free_port() for _ in range(20)}
    assert all(1024 < p < low for p in ports) and len(ports) > 10
