"""A Provider for Azure OpenAI: the `openai` package's Azure client, the same streaming code."""

from __future__ import annotations

import openai

from .openai_compat import OpenAICompatProvider


class AzureOpenAIProvider(OpenAICompatProvider):
    """Streams replies from an Azure OpenAI deployment (`model` is the deployment's name).

    Only the client differs from any OpenAI-compatible server: the URL holds the deployment
    (`<endpoint>/openai/deployments/<name>/chat/completions?api-version=…`) and the key
    travels in the `api-key` header.
    """

    name = "azure"
    settings_hint = "the deployment name in CHAT_MODELS and AZURE_OPENAI_ENDPOINT"

    def __init__(self, *, endpoint: str, api_key: str | None, api_version: str,
                 deployment: str, connect_timeout: float = 10.0, read_timeout: float = 60.0,
                 label: str | None = None) -> None:
        self.endpoint = endpoint
        self.api_version = api_version
        super().__init__(base_url=None, api_key=api_key, model=deployment,
                         connect_timeout=connect_timeout, read_timeout=read_timeout,
                         label=label)

    def _make_client(self, base_url: str | None) -> openai.OpenAI:
        # No `azure_deployment`: the client puts the request's `model` (the deployment) into
        # the path, so one client serves every deployment of the resource. Every value is
        # passed, so the SDK reads nothing from the environment behind Relay's back.
        return openai.AzureOpenAI(azure_endpoint=self.endpoint, api_key=self._api_key,
                                  api_version=self.api_version, **self._client_options())
