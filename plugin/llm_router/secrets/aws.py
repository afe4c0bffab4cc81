"""Secrets from AWS Secrets Manager: aws://NAME#KEY (a JSON secret's key) or aws://NAME (the whole string)."""
from __future__ import annotations

import json

from llm_router.secrets.base import SecretError, SecretRef


class AwsStore:
    """GetSecretValue through boto3; region and endpoint from config `secrets.aws` (endpoint for tests)."""

    scheme = "aws"

    def __init__(self, *, region: str | None = None, endpoint_url: str | None = None, timeout: float = 5.0):
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise SecretError("aws:// references need the 'boto3' package (pip install 'llm-router[aws]')") from None
        cfg = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2})
        self._client = boto3.client("secretsmanager", region_name=region, endpoint_url=endpoint_url, config=cfg)

    def get(self, ref: SecretRef) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self._client.get_secret_value(SecretId=ref.path)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise SecretError(f"{ref}: AWS Secrets Manager answered {code}") from None
        except BotoCoreError as exc:
            raise SecretError(f"{ref}: AWS Secrets Manager unreachable ({type(exc).__name__})") from None
        text = resp.get("SecretString")
        if text is None:
            raise SecretError(f"{ref}: the secret is binary; store the key as a string")
        if ref.key:
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                raise SecretError(f"{ref}: the secret is not JSON, so key {ref.key!r} cannot be read") from None
            value = data.get(ref.key) if isinstance(data, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise SecretError(f"{ref}: key {ref.key!r} is missing or empty")
            return value.strip()
        if not text.strip():
            raise SecretError(f"{ref}: the secret is empty")
        return text.strip()
