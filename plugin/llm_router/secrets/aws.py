"""Secrets from AWS Secrets Manager: aws://NAME#KEY (a JSON secret's key) or aws://NAME (the whole string)."""
from __future__ import annotations

from llm_router.secrets.base import SecretError, SecretRef, value_of


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
        return value_of(ref, text, "the secret")
