"""`llm-router apisix enable|disable|upstreams` against a fake Admin API that answers like APISIX's."""
from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llm_router.cli import main
from llm_router.config import load_config
from llm_router.gateways.apisix import routes
from llm_router.router import build_catalog

REPO = Path(__file__).resolve().parents[1]
KEY = "edd1c9f034335f136f87ad84b625c8f1"
ROUTE_FIELDS = {"id", "uri", "uris", "name", "desc", "methods", "host", "hosts", "remote_addrs", "vars", "filter_func",
                "priority", "labels", "status", "plugins", "upstream", "upstream_id", "service_id", "plugin_config_id",
                "timeout", "enable_websocket", "create_time", "update_time"}
HEADER_VAR = "http_x_llm_router_upstream"


class FakeAdmin:
    """Routes and upstreams in memory; validation in the spirit of APISIX's schemas."""

    def __init__(self) -> None:
        self.store: dict[str, dict[str, dict]] = {"routes": {}, "upstreams": {}}
        self.index = 100
        self.puts: list[tuple[str, str]] = []
        self.on_get = None  # hook(kind, id) to simulate a concurrent edit
        self.lock = threading.Lock()

    def seed(self, kind: str, obj_id: str, value: dict) -> None:
        self.index += 1
        self.store[kind][obj_id] = {"value": copy.deepcopy(value), "modifiedIndex": self.index, "createdIndex": self.index}

    def validate(self, kind: str, obj_id: str, value: dict) -> str | None:
        if not isinstance(value, dict):
            return "invalid configuration: object expected"
        if "id" in value and str(value["id"]) != obj_id:
            return "wrong route id"
        if kind == "upstreams":
            if not value.get("nodes"):
                return 'invalid configuration: property "nodes" is required'
            if value.get("pass_host") == "rewrite" and not value.get("upstream_host"):
                return 'invalid configuration: "upstream_host" is required when pass_host is rewrite'
            if value.get("scheme") not in ("http", "https"):
                return "invalid configuration: property \"scheme\" validation failed"
            return None
        unknown = set(value) - ROUTE_FIELDS
        if unknown:
            return f'invalid configuration: additional properties forbidden, found {sorted(unknown)[0]}'
        if not (value.get("uri") or value.get("uris")):
            return 'invalid configuration: value should match only one schema, but matches none'
        for uid in [value.get("upstream_id")] if value.get("upstream_id") else []:
            if uid not in self.store["upstreams"]:
                return f"failed to fetch upstream info by upstream id [{uid}], response code: 404"
        plugins = value.get("plugins", {})
        for name in ("ext-plugin-pre-req", "ext-plugin-post-resp"):
            if name in plugins:
                conf = plugins[name]
                items = conf.get("conf")
                if not isinstance(items, list) or not items:
                    return f"failed to check the configuration of plugin {name} err: property \"conf\" validation failed"
                for item in items:
                    if not isinstance(item.get("value"), str) or not 1 <= len(item.get("name", "")) <= 128:
                        return f"failed to check the configuration of plugin {name} err: property \"conf\" validation failed"
                if not isinstance(conf.get("allow_degradation", False), bool):
                    return f"failed to check the configuration of plugin {name} err: allow_degradation"
        split = plugins.get("traffic-split")
        if split is not None:
            for rule in split.get("rules", []):
                for w in rule.get("weighted_upstreams", []):
                    uid = w.get("upstream_id")
                    if uid is not None and uid not in self.store["upstreams"]:
                        return f"failed to fetch upstream info by upstream id [{uid}], response code: 404"
        return None


def make_handler(admin: FakeAdmin):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _target(self):
            if self.headers.get("X-API-KEY") != KEY:
                self._send(401, {"message": "failed to check token"})
                return None
            parts = self.path.strip("/").split("/")
            if len(parts) != 4 or parts[:2] != ["apisix", "admin"] or parts[2] not in admin.store:
                self._send(404, {"error_msg": "404 Route Not Found"})
                return None
            return parts[2], parts[3]

        def do_GET(self):
            target = self._target()
            if target is None:
                return
            kind, obj_id = target
            if admin.on_get:
                admin.on_get(kind, obj_id)
            with admin.lock:
                found = admin.store[kind].get(obj_id)
            if found is None:
                self._send(404, {"message": "Key not found"})
                return
            self._send(200, {"key": f"/apisix/{kind}/{obj_id}", **copy.deepcopy(found)})

        def do_PUT(self):
            target = self._target()
            if target is None:
                return
            kind, obj_id = target
            try:
                value = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            except ValueError:
                self._send(400, {"error_msg": "invalid request body"})
                return
            with admin.lock:
                problem = admin.validate(kind, obj_id, value)
                if problem:
                    self._send(400, {"error_msg": problem})
                    return
                created = obj_id not in admin.store[kind]
                value = {**value, "id": obj_id, "update_time": 1_700_000_000 + admin.index}
                admin.seed(kind, obj_id, value)
                admin.puts.append((kind, obj_id))
                entry = admin.store[kind][obj_id]
            self._send(201 if created else 200, {"key": f"/apisix/{kind}/{obj_id}", **copy.deepcopy(entry)})

    return Handler


@pytest.fixture
def admin():
    fake = FakeAdmin()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


BASE_ROUTE = {"uri": "/v1/*", "name": "llm", "methods": ["POST", "GET"], "upstream_id": "default-up",
              "plugins": {"key-auth": {}, "limit-count": {"count": 10, "time_window": 60, "rejected_code": 429},
                          "traffic-split": {"rules": [{"match": [{"vars": [["arg_canary", "==", "1"]]}],
                                                       "weighted_upstreams": [{"upstream_id": "canary", "weight": 1}]}]}}}


def cli(admin: FakeAdmin, *args: str) -> int:
    return main(["apisix", *args, "--admin", admin.url, "--key", KEY])


def seed_base(admin: FakeAdmin, route: dict | None = None) -> None:
    admin.seed("upstreams", "default-up", {"nodes": [{"host": "127.0.0.1", "port": 1, "weight": 1}], "scheme": "http"})
    admin.seed("upstreams", "canary", {"nodes": [{"host": "127.0.0.1", "port": 2, "weight": 1}], "scheme": "http"})
    admin.seed("routes", "r1", {"id": "r1", **(route or BASE_ROUTE), "create_time": 1_600_000_000})


def stored(admin: FakeAdmin, obj_id: str = "r1") -> dict:
    return admin.store["routes"][obj_id]["value"]


def test_upstreams_then_enable_then_disable(admin, capsys):
    seed_base(admin)
    assert cli(admin, "upstreams", "--apply") == 0
    catalog = build_catalog(load_config(None))
    expected_ids = sorted(routes.provider_upstreams(catalog))
    assert all(uid in admin.store["upstreams"] for uid in expected_ids)
    up = admin.store["upstreams"]["llm-openai"]["value"]
    assert up["scheme"] == "https" and up["pass_host"] == "rewrite" and up["upstream_host"] == "api.openai.com"
    assert up["nodes"] == [{"host": "api.openai.com", "port": 443, "weight": 1}] and up["timeout"]["read"] >= 300

    assert cli(admin, "enable", "r1", "--post-resp") == 0
    assert "enabled on route r1" in capsys.readouterr().out
    route = stored(admin)
    plugins = route["plugins"]
    # everything the route had is still there
    assert route["upstream_id"] == "default-up" and route["uri"] == "/v1/*" and route["methods"] == ["POST", "GET"]
    assert plugins["key-auth"] == {} and plugins["limit-count"]["count"] == 10
    pre = plugins["ext-plugin-pre-req"]
    assert pre["allow_degradation"] is False
    assert pre["conf"] == [{"name": "llm-router", "value": '{"policy":"default"}'}]
    assert plugins["ext-plugin-post-resp"]["conf"] == pre["conf"]
    rules = plugins["traffic-split"]["rules"]
    ours = [r for r in rules if HEADER_VAR in json.dumps(r)]
    assert len(ours) == len({m.upstream for m in catalog.models.values()})
    assert rules[-1]["weighted_upstreams"] == [{"upstream_id": "canary", "weight": 1}]  # the user's rule kept, after ours
    target = {r["match"][0]["vars"][0][2]: r["weighted_upstreams"][0]["upstream_id"] for r in ours}
    assert target["openai"] == "llm-openai" and target["deepseek"] == "llm-deepseek"

    # enabling again changes nothing
    before = copy.deepcopy(route)
    assert cli(admin, "enable", "r1", "--post-resp") == 0
    after = stored(admin)
    assert {k: v for k, v in after.items() if k != "update_time"} == {k: v for k, v in before.items() if k != "update_time"}

    assert cli(admin, "disable", "r1") == 0
    restored = stored(admin)
    original = {"id": "r1", **BASE_ROUTE}
    assert {k: v for k, v in restored.items() if k not in ("update_time", "create_time")} == original


def test_enable_refuses_route_whose_vars_read_the_routing_header(admin, capsys):
    route = {**BASE_ROUTE, "vars": [["http_x_llm_router_upstream", "~~", ".*"]]}
    seed_base(admin, route)
    assert cli(admin, "upstreams", "--apply") == 0
    puts = len(admin.puts)
    assert cli(admin, "enable", "r1") == 1
    err = capsys.readouterr().err
    assert "refusing" in err and "vars" in err and "spoofed" in err
    assert len(admin.puts) == puts and "ext-plugin-pre-req" not in stored(admin)["plugins"]


def test_enable_refuses_a_plugin_that_reads_the_routing_header(admin, capsys):
    route = copy.deepcopy(BASE_ROUTE)
    route["plugins"]["proxy-rewrite"] = {"headers": {"set": {"x-llm-router-upstream": "openai"}}}
    seed_base(admin, route)
    assert cli(admin, "upstreams", "--apply") == 0
    assert cli(admin, "enable", "r1") == 1
    assert "proxy-rewrite" in capsys.readouterr().err


def test_enable_needs_the_provider_upstreams(admin, capsys):
    seed_base(admin)
    assert cli(admin, "enable", "r1") == 1
    err = capsys.readouterr().err
    assert "do not exist" in err and "llm-router apisix upstreams --apply" in err
    assert "ext-plugin-pre-req" not in stored(admin)["plugins"]


def test_enable_on_a_missing_route_and_with_a_wrong_key(admin, capsys):
    seed_base(admin)
    assert cli(admin, "enable", "nope") == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["apisix", "enable", "r1", "--admin", admin.url, "--key", "wrong"]) == 1
    assert "401" in capsys.readouterr().err
    assert main(["apisix", "enable", "r1", "--admin", "http://127.0.0.1:9", "--key", KEY]) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_enable_validates_the_runner_conf(admin, capsys):
    seed_base(admin)
    with pytest.raises(SystemExit) as exc:
        cli(admin, "enable", "r1", "--conf", '{"extends": "default", "fallbacks": 99}')
    assert exc.value.code == 2
    assert "fallbacks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(admin, "enable", "r1", "--policy", "no-such-policy")
    assert "no-such-policy" in capsys.readouterr().err


def test_dry_run_and_allow_degradation(admin, capsys):
    seed_base(admin)
    cli(admin, "upstreams", "--apply")
    capsys.readouterr()
    puts = len(admin.puts)
    assert cli(admin, "enable", "r1", "--dry-run", "--allow-degradation",
               "--conf", '{"extends": "default", "explain": true}') == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["plugins"]["ext-plugin-pre-req"]["allow_degradation"] is True
    assert json.loads(printed["plugins"]["ext-plugin-pre-req"]["conf"][0]["value"]) == {"extends": "default", "explain": True}
    assert len(admin.puts) == puts  # nothing saved
    assert cli(admin, "enable", "r1", "--dry-run", "--conf", '{"extends": "default", "failure_mode": "open"}') == 0
    assert json.loads(capsys.readouterr().out)["plugins"]["ext-plugin-pre-req"]["allow_degradation"] is True


def test_a_concurrent_edit_is_not_overwritten(admin, capsys):
    seed_base(admin)
    cli(admin, "upstreams", "--apply")
    gets = {"n": 0}

    def edit_between(kind, obj_id):
        if kind == "routes":
            gets["n"] += 1
            if gets["n"] == 2:  # someone saves the route while enable is working on it
                admin.seed("routes", "r1", {**stored(admin), "desc": "edited meanwhile"})

    admin.on_get = edit_between
    assert cli(admin, "enable", "r1") == 1
    assert "changed while" in capsys.readouterr().err
    assert stored(admin)["desc"] == "edited meanwhile" and "ext-plugin-pre-req" not in stored(admin)["plugins"]


def test_disable_keeps_other_runner_plugins_and_says_when_nothing_to_do(admin, capsys):
    seed_base(admin)
    assert cli(admin, "disable", "r1") == 0
    assert "not enabled" in capsys.readouterr().out
    mixed = {"uri": "/x", "upstream_id": "u", "plugins": {"ext-plugin-pre-req": {
        "conf": [{"name": "llm-router", "value": "{}"}, {"name": "audit", "value": "{}"}], "allow_degradation": False}}}
    assert routes.disable(mixed, "x-llm-router-upstream")["plugins"]["ext-plugin-pre-req"]["conf"] == [
        {"name": "audit", "value": "{}"}]
    problems = routes.check_route(mixed, "x-llm-router-upstream")
    assert any("audit" in p for p in problems)  # one runner per APISIX: enable refuses to mix


def test_committed_apisix_files_match_the_generators(capsys):
    from llm_router.commands.apisix import config_fragment

    cfg = load_config(None)
    assert (REPO / "apisix" / "config.yaml").read_text() == config_fragment(cfg)
    assert (REPO / "apisix" / "config-dev.yaml").read_text() == config_fragment(cfg, dev_socket="/tmp/llm-router.sock")
    assert main(["apisix", "upstreams"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((REPO / "apisix" / "upstreams.json").read_text())
    example = json.loads((REPO / "apisix" / "route.json").read_text())
    enabled = routes.enable(example, build_catalog(cfg), routes.EnableOptions(conf_value='{"policy": "default"}', post_resp=True))
    assert enabled == json.loads((REPO / "apisix" / "route-enabled.json").read_text())


def test_provider_upstreams_follow_the_base_url():
    from llm_router.config import parse_config

    cfg = parse_config({"providers": {"openai": {"base_url": "http://127.0.0.1:8081", "paths": {"chat": "/v1/chat/completions"},
                                                 "credentials": ["env://OPENAI_API_KEY"]}}})
    ups = routes.provider_upstreams(build_catalog(cfg), "p-")
    up = ups["p-openai"]
    assert up["scheme"] == "http" and up["nodes"] == [{"host": "127.0.0.1", "port": 8081, "weight": 1}] and "tls" not in up
    assert ups["p-anthropic"]["scheme"] == "https" and ups["p-anthropic"]["tls"] == {"verify": True}
    rules = routes.split_rules(build_catalog(cfg), "X-My-Route", "p-")
    assert rules[0]["match"][0]["vars"][0][0] == "http_x_my_route"
    assert {r["weighted_upstreams"][0]["upstream_id"] for r in rules} == set(ups)


def test_enable_with_stream_usage_adds_our_logger_and_disable_removes_only_ours(admin, capsys, monkeypatch):
    seed_base(admin)
    assert cli(admin, "upstreams", "--apply") == 0
    url = "http://127.0.0.1:9464/v1/usage-log"
    assert cli(admin, "enable", "r1", "--stream-usage", url) == 1  # the runner learns of streams at post-resp
    assert "needs --post-resp" in capsys.readouterr().err
    assert cli(admin, "enable", "r1", "--post-resp", "--stream-usage", url) == 0
    out = capsys.readouterr()
    assert "http-logger (streams usage)" in out.out and "LLM_ROUTER_USAGE_LOG_KEY is not set" in out.err
    assert "auth_header" not in stored(admin)["plugins"]["http-logger"]
    monkeypatch.setenv("LLM_ROUTER_USAGE_LOG_KEY", "k-123456")
    assert cli(admin, "enable", "r1", "--post-resp", "--stream-usage", url) == 0
    assert "is not set" not in capsys.readouterr().err
    logger = stored(admin)["plugins"]["http-logger"]
    assert logger["auth_header"] == "Bearer k-123456"  # the runner refuses posts without it
    assert logger["uri"] == url and logger["include_resp_body"] is True
    assert logger["include_resp_body_expr"] == [["sent_http_content_type", "~~", "text/event-stream"]]
    assert logger["max_resp_body_bytes"] >= 1 << 20  # the usage block is the stream's end: never cut it off
    assert cli(admin, "disable", "r1") == 0
    assert "http-logger" not in (stored(admin).get("plugins") or {})
    # a route logging elsewhere keeps its logger, and stream usage is refused rather than taking it over
    theirs = {"uri": "http://logs.example/ingest", "batch_max_size": 10}
    admin.seed("routes", "r1", {**BASE_ROUTE, "plugins": {**BASE_ROUTE["plugins"], "http-logger": theirs}})
    assert cli(admin, "enable", "r1", "--post-resp", "--stream-usage", url) == 1
    assert "already has its own http-logger" in capsys.readouterr().err
    assert cli(admin, "enable", "r1", "--post-resp") == 0 and cli(admin, "disable", "r1") == 0
    assert stored(admin)["plugins"]["http-logger"] == theirs


def test_config_fragment_passes_the_usage_log_key_when_streams_usage_is_on():
    from llm_router.commands.apisix import config_fragment
    from llm_router.config import parse_config

    assert "LLM_ROUTER_USAGE_LOG_KEY" not in config_fragment(parse_config({}))
    assert "- LLM_ROUTER_USAGE_LOG_KEY" in config_fragment(parse_config({"server": {"apisix_stream_usage": True}}))
