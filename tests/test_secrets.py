"""Secret stores: env, files (with rotation), Vault KV v2 (token and AppRole), AWS Secrets Manager (moto server)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port, stop_process, wait_for
from llm_router.config import ConfigError, parse_config
from llm_router.credentials import Credentials, Secret
from llm_router.router import build_catalog
from llm_router.runtime import Runtime
from llm_router.secrets.base import SecretError, parse_ref
from llm_router.secrets.env import EnvStore
from llm_router.secrets.file import FileStore
from llm_router.secrets.registry import SecretRefresher, build_stores


def test_refs_parse_and_bad_refs_are_named():
    ref = parse_ref("vault://kv/llm/openai#api_key")
    assert (ref.scheme, ref.path, ref.key) == ("vault", "kv/llm/openai", "api_key") and str(ref) == "vault://kv/llm/openai#api_key"
    for bad in ("OPENAI_API_KEY", "://x", "env://"):
        with pytest.raises(SecretError, match="secret reference"):
            parse_ref(bad)


def test_env_store_and_missing_value_names_the_reference():
    store = EnvStore({"K": "  sk-1 "})
    assert store.get(parse_ref("env://K")) == "sk-1"
    with pytest.raises(SecretError, match="env://NOPE: environment variable NOPE is not set"):
        store.get(parse_ref("env://NOPE"))


def test_missing_secret_is_a_startup_error_naming_the_reference():
    catalog = build_catalog(parse_config({}))
    with pytest.raises(SecretError) as info:
        Credentials.resolve(catalog, [EnvStore({})], missing="error")
    assert "providers.openai.credentials: env://OPENAI_API_KEY" in str(info.value)
    with pytest.raises(ConfigError, match="env://OPENAI_API_KEY"):
        Runtime(parse_config({"secrets": {"missing": "error"}}))


def test_credential_styles_and_key_rotation():
    cfg = parse_config({"providers": {"openai": {"base_url": "https://api.openai.com", "paths": {"chat": "/v1/chat/completions"},
                                                 "credentials": ["env://K1", "env://K2"]}}})
    creds = Credentials.resolve(build_catalog(cfg), [EnvStore({"K1": "one", "K2": "two", "ANTHROPIC_API_KEY": "ant",
                                                               "GEMINI_API_KEY": "gem"})], missing="skip")
    assert [creds.headers("openai") for _ in range(3)] == [
        ((("authorization", "Bearer one"),), 0), ((("authorization", "Bearer two"),), 1), ((("authorization", "Bearer one"),), 0)]
    # a key rate-limited for the model is passed over while another is free; with every key cooling, rotation as usual
    assert [creds.headers("openai", cooling={0})[1] for _ in range(3)] == [1, 1, 1]
    assert [creds.headers("openai", cooling={0, 1})[1] for _ in range(2)] == [0, 1]
    assert creds.headers("anthropic") == ((("x-api-key", "ant"), ("anthropic-version", "2023-06-01")), 0)
    assert creds.headers("google") == ((("x-goog-api-key", "gem"),), 0)
    assert creds.count("openai") == 2 and creds.count("mistral") == 0
    assert not creds.has("mistral")
    assert "two" not in repr(Secret("two"))


def test_file_store_json_keys_and_errors(tmp_path):
    (tmp_path / "openai").write_text("sk-file-1\n")
    (tmp_path / "keys.json").write_text(json.dumps({"anthropic": "ant-1"}))
    store = FileStore()
    assert store.get(parse_ref(f"file://{tmp_path}/openai")) == "sk-file-1"
    assert store.get(parse_ref(f"file://{tmp_path}/keys.json#anthropic")) == "ant-1"
    with pytest.raises(SecretError, match="does not exist"):
        store.get(parse_ref(f"file://{tmp_path}/missing"))
    with pytest.raises(SecretError, match="key 'x' is missing"):
        store.get(parse_ref(f"file://{tmp_path}/keys.json#x"))
    with pytest.raises(SecretError, match="not a JSON object"):
        store.get(parse_ref(f"file://{tmp_path}/openai#k"))


def test_rotated_file_secret_is_picked_up_without_restart(tmp_path):
    """A Kubernetes-style mount: ..data symlink swapped to a new directory."""
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir()
    v2.mkdir()
    (v1 / "openai").write_text("sk-old")
    (v2 / "openai").write_text("sk-new")
    os.symlink(v1, tmp_path / "..data")
    cfg = parse_config({"providers": {"openai": {"base_url": "https://api.openai.com", "paths": {"chat": "/v1/chat/completions"},
                                                 "credentials": [f"file://{tmp_path}/..data/openai"]}},
                        "policies": {"default": {"strategy": "cost_weighted", "constraints": {"providers": ["openai"]}}},
                        "secrets": {"missing": "skip"}})

    async def go():
        rt = Runtime(cfg, telemetry=False)
        rt.refresher.poll_s = 0.01
        await rt.start()
        try:
            assert rt.credentials.headers("openai")[0] == (("authorization", "Bearer sk-old"),)
            tmp = tmp_path / "..data_tmp"
            os.symlink(v2, tmp)
            os.replace(tmp, tmp_path / "..data")  # atomic swap, as the kubelet does

            async def rotated():
                while rt.credentials.headers("openai")[0] != (("authorization", "Bearer sk-new"),):
                    await asyncio.sleep(0.01)
            await asyncio.wait_for(rotated(), 20)
        finally:
            await rt.stop()
    asyncio.run(go())


def test_a_refresh_that_finds_or_loses_keys_changes_what_is_routable(tmp_path, monkeypatch, caplog):
    """secrets.missing: skip: a key written after start-up puts its models back in selection at the next refresh, one
    removed takes them out, and a provider's second key lets a 429 cool one key instead of the model."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "TOGETHER_API_KEY", "DEEPSEEK_API_KEY"):
        monkeypatch.setenv(name, "sk-env")
    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
    first, second, mistral = tmp_path / "openai-1", tmp_path / "openai-2", tmp_path / "mistral"
    first.write_text("sk-file-1")
    cfg = parse_config({"providers": {
        "openai": {"base_url": "https://api.openai.com", "paths": {"chat": "/v1/chat/completions"},
                   "credentials": [f"file://{first}", f"file://{second}"]},
        "mistral": {"base_url": "https://api.mistral.ai", "paths": {"chat": "/v1/chat/completions"},
                    "credentials": [f"file://{mistral}"]}},
        "secrets": {"missing": "skip"}})
    rt = Runtime(cfg)
    health = rt.telemetry.health
    assert "mistral-large" in rt.keyless and "gpt-4o" not in rt.keyless and rt.credentials.count("openai") == 1
    second.write_text("sk-file-2")
    mistral.write_text("mistral-file-key")
    with caplog.at_level("INFO", logger="llm_router"):
        assert asyncio.run(rt.refresher.refresh())
    assert "mistral-large" not in rt.keyless and rt.credentials.count("openai") == 2
    assert "mistral-large has a credential again" in caplog.text
    health.observe("gpt-4o", 429, 0.1, [("retry-after", "30")], 1.0e9, key=1)
    assert rt.cooling_keys("gpt-4o") == {1} and not health.is_open("gpt-4o")  # the first key still has quota
    assert rt.credentials.headers("openai", rt.cooling_keys("gpt-4o"))[1] == 0
    mistral.unlink()
    caplog.clear()
    with caplog.at_level("WARNING", logger="llm_router"):
        assert asyncio.run(rt.refresher.refresh())
    assert "mistral-large" in rt.keyless and "mistral-large has no credential now" in caplog.text
    assert "mistral-file-key" not in caplog.text and "sk-file" not in caplog.text


def test_refresh_failure_keeps_old_values():
    applied = []

    def boom():
        raise SecretError("env://X: environment variable X is not set or empty")
    r = SecretRefresher(boom, applied.append, [])
    assert asyncio.run(r.refresh()) is False and r.failures == 1 and applied == []


def test_unknown_secrets_section_fields_are_named():
    with pytest.raises(SecretError, match=r"secrets: unknown fields \['gcp'\]"):
        build_stores({"gcp": {}})
    with pytest.raises(SecretError, match="secrets.vault.url"):
        build_stores({"vault": {"auth": "token"}})


# ---- AWS Secrets Manager against moto's server mode on 127.0.0.1 -------------------------------

@pytest.fixture(scope="module")
def moto_url():
    binary = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.path.exists(binary):
        pytest.skip("moto_server is not installed (pip install 'moto[server]', part of the test extra)")
    port = free_port()
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    import httpx

    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/moto-api/").status_code < 500, 60, "moto_server")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def test_aws_secrets_manager(moto_url, monkeypatch):
    import boto3

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    sm = boto3.client("secretsmanager", endpoint_url=moto_url, region_name="us-east-1")
    sm.create_secret(Name="llm/openai", SecretString=json.dumps({"api_key": "sk-aws-1"}))
    sm.create_secret(Name="llm/plain", SecretString="sk-plain")
    stores = build_stores({"aws": {"region": "us-east-1", "endpoint_url": moto_url}})
    aws = next(s for s in stores if s.scheme == "aws")
    assert aws.get(parse_ref("aws://llm/openai#api_key")) == "sk-aws-1"
    assert aws.get(parse_ref("aws://llm/plain")) == "sk-plain"
    with pytest.raises(SecretError, match="aws://llm/missing: AWS Secrets Manager answered ResourceNotFoundException"):
        aws.get(parse_ref("aws://llm/missing"))
    with pytest.raises(SecretError, match="key 'nope' is missing"):
        aws.get(parse_ref("aws://llm/openai#nope"))
    # rotation: a new version is picked up by the next refresh
    cfg = parse_config({"secrets": {"aws": {"region": "us-east-1", "endpoint_url": moto_url}, "missing": "skip"},
                        "providers": {"openai": {"base_url": "https://api.openai.com", "paths": {"chat": "/v1/chat/completions"},
                                                 "credentials": ["aws://llm/openai#api_key"]}}})
    rt = Runtime(cfg, telemetry=False)
    assert rt.credentials.headers("openai")[0] == (("authorization", "Bearer sk-aws-1"),)
    sm.put_secret_value(SecretId="llm/openai", SecretString=json.dumps({"api_key": "sk-aws-2"}))
    assert asyncio.run(rt.refresher.refresh())
    assert rt.credentials.headers("openai")[0] == (("authorization", "Bearer sk-aws-2"),)


# ---- Vault KV v2 ------------------------------------------------------------------------------
# No Vault binary is installable here (not in Debian, PyPI or npm without a download). These tests
# drive hvac against a small server that answers the three Vault HTTP endpoints hvac uses here
# (AppRole login, KV v2 read) the way Vault does; the container test below runs a real Vault
# wherever a Docker engine exists.

class _Vault(BaseHTTPRequestHandler):
    data = {("kv", "llm/openai"): {"api_key": "sk-vault-1"}}
    tokens = {"root-token"}
    approles = {("role-1", "secret-1")}

    def log_message(self, *args):
        pass

    def _send(self, code, body):
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/v1/auth/approle/login":
            if (body.get("role_id"), body.get("secret_id")) in self.approles:
                self.tokens.add("approle-token")
                return self._send(200, {"auth": {"client_token": "approle-token", "lease_duration": 60, "renewable": True}})
            return self._send(400, {"errors": ["invalid role or secret ID"]})
        self._send(404, {"errors": []})

    def do_GET(self):
        if self.headers.get("X-Vault-Token") not in self.tokens:
            return self._send(403, {"errors": ["permission denied"]})
        parts = self.path.split("?")[0].split("/")  # /v1/<mount>/data/<path...>
        if len(parts) > 4 and parts[3] == "data":
            secret = self.data.get((parts[2], "/".join(parts[4:])))
            if secret is not None:
                return self._send(200, {"data": {"data": secret, "metadata": {"version": 1, "deletion_time": "", "destroyed": False}}})
        self._send(404, {"errors": []})


@pytest.fixture(scope="module")
def vault_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Vault)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def vault_checks(url: str, token_ref_env: dict[str, str], role: tuple[str, str]) -> None:
    os.environ.update(token_ref_env)
    try:
        tok = next(s for s in build_stores({"vault": {"url": url, "auth": "token", "token": "env://LLMR_TEST_VAULT_TOKEN"}})
                   if s.scheme == "vault")
        assert tok.get(parse_ref("vault://kv/llm/openai#api_key")) == "sk-vault-1"
        with pytest.raises(SecretError, match="vault://kv/llm/missing#api_key: no secret at kv/llm/missing"):
            tok.get(parse_ref("vault://kv/llm/missing#api_key"))
        with pytest.raises(SecretError, match="key 'other' is missing"):
            tok.get(parse_ref("vault://kv/llm/openai#other"))
        app = next(s for s in build_stores({"vault": {"url": url, "auth": "approle", "role_id": role[0], "secret_id": role[1]}})
                   if s.scheme == "vault")
        assert app.get(parse_ref("vault://kv/llm/openai#api_key")) == "sk-vault-1"
        bad = next(s for s in build_stores({"vault": {"url": url, "auth": "approle", "role_id": role[0], "secret_id": "wrong"}})
                   if s.scheme == "vault")
        with pytest.raises(SecretError, match="vault login \\(approle\\)") as info:
            bad.get(parse_ref("vault://kv/llm/openai#api_key"))
        assert "wrong" not in str(info.value)
        denied = next(s for s in build_stores({"vault": {"url": url, "auth": "token", "token": "not-a-token"}}) if s.scheme == "vault")
        with pytest.raises(SecretError, match="permission denied"):
            denied.get(parse_ref("vault://kv/llm/openai#api_key"))
    finally:
        for k in token_ref_env:
            os.environ.pop(k, None)


def test_vault_kv2_token_and_approle(vault_url):
    vault_checks(vault_url, {"LLMR_TEST_VAULT_TOKEN": "root-token"}, ("role-1", "secret-1"))


def test_vault_kv2_against_a_real_vault_container():
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine to run hashicorp/vault ({type(exc).__name__}); the API-level test above ran instead")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    with DockerContainer("hashicorp/vault:1.17").with_env("VAULT_DEV_ROOT_TOKEN_ID", "root-token").with_exposed_ports(8200) as c:
        wait_for_logs(c, "Vault server started", timeout=60)
        url = f"http://{c.get_container_host_ip()}:{c.get_exposed_port(8200)}"
        import hvac

        client = hvac.Client(url=url, token="root-token")
        client.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
        client.secrets.kv.v2.create_or_update_secret(path="llm/openai", secret={"api_key": "sk-vault-1"}, mount_point="kv")
        client.sys.enable_auth_method("approle")
        client.write("auth/approle/role/llm", token_policies=["root"])
        role_id = client.read("auth/approle/role/llm/role-id")["data"]["role_id"]
        secret_id = client.write("auth/approle/role/llm/secret-id")["data"]["secret_id"]
        vault_checks(url, {"LLMR_TEST_VAULT_TOKEN": "root-token"}, (role_id, secret_id))


def test_missing_keys_with_skip_take_those_models_out_of_selection(monkeypatch):
    """secrets.missing: skip never sends a request without a key: keyless providers' models are excluded."""
    from llm_router.runtime import Exchange, Refusal

    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "TOGETHER_API_KEY", "MISTRAL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-only-deepseek")
    rt = Runtime(parse_config({"secrets": {"missing": "skip"}}), telemetry=False)
    assert rt.keyless == {"gpt-4o", "claude-3.5-sonnet", "gemini-1.5-pro", "mistral-large", "llama-3-70b"}
    hard = b'{"messages": [{"role": "user", "content": "Prove rigorously that the halting problem is undecidable, step by step."}]}'
    call = rt.decide(hard, path="/v1/chat/completions", ex=Exchange("1", "r", 0.0))
    assert call.model.id == "deepseek-v2" and ("authorization", "Bearer sk-only-deepseek") in call.set_headers
    schema = (b'{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", "json_schema": '
              b'{"name": "x", "schema": {"type": "object"}}}}')  # structured output: DeepSeek has JSON mode only
    refused = rt.decide(schema, path="/v1/chat/completions", ex=Exchange("2", "r", 0.0))
    assert isinstance(refused, Refusal) and refused.status in (400, 503)
    vision = b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]}'
    assert rt.decide(vision, path="/v1/chat/completions", ex=Exchange("3", "r", 0.0)).model.id == "deepseek-v2"  # it reads images
    with pytest.raises(ConfigError, match="secrets.missing: must be 'error' or 'skip'"):
        Runtime(parse_config({"secrets": {"missing": "maybe"}}))
