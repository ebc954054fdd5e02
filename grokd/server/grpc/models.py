"""``xai_api.Models``, ``xai_api.Tokenize`` and ``xai_api.Auth``: the served models (with aliases
and the context window as ``max_prompt_length``), the engine's own tokenizer (so counts match
usage), and what the calling key is (redacted), as their HTTP twins answer them."""

from __future__ import annotations

import asyncio
from typing import Any

from grokd.server.auth import ANONYMOUS, ApiKey
from grokd.server.errors import invalid_request, model_not_found
from grokd.server.grpc.calls import CallGuard
from grokd.server.grpc.proto import (
    auth_pb2,
    auth_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    tokenize_pb2,
    tokenize_pb2_grpc,
)
from grokd.server.registry import ServedModel
from grokd.server.routes.generation import token_text

MODALITIES = {"text": models_pb2.Modality.TEXT, "image": models_pb2.Modality.IMAGE}


def language_model(m: ServedModel) -> Any:
    out = models_pb2.LanguageModel(
        name=m.id, aliases=list(m.aliases), version=m.version, system_fingerprint=m.system_fingerprint,
        input_modalities=[MODALITIES[x] for x in m.input_modalities if x in MODALITIES],
        output_modalities=[MODALITIES[x] for x in m.output_modalities if x in MODALITIES],
        max_prompt_length=m.max_model_len or 0,
        prompt_text_token_price=m.prices.get("prompt_text_token_price", 0),
        cached_prompt_token_price=m.prices.get("cached_prompt_text_token_price", 0),
        prompt_image_token_price=m.prices.get("prompt_image_token_price", 0),
        completion_text_token_price=m.prices.get("completion_text_token_price", 0),
        search_price=m.prices.get("search_price", 0),
    )
    out.created.FromSeconds(m.created)
    return out


class ModelsService(models_pb2_grpc.ModelsServicer):
    def __init__(self, guard: CallGuard) -> None:
        self.guard = guard

    async def ListLanguageModels(self, request: Any, context: Any) -> Any:
        async with self.guard(context, "/xai_api.Models/ListLanguageModels") as ctx:
            return models_pb2.ListLanguageModelsResponse(models=[language_model(m) for m in ctx.visible_models()])

    async def GetLanguageModel(self, request: Any, context: Any) -> Any:
        async with self.guard(context, "/xai_api.Models/GetLanguageModel") as ctx:
            return language_model(ctx.resolve_model(request.name))

    # grokd serves language models only: the other kinds are empty lists and unknown names.
    async def ListEmbeddingModels(self, request: Any, context: Any) -> Any:
        async with self.guard(context, "/xai_api.Models/ListEmbeddingModels"):
            return models_pb2.ListEmbeddingModelsResponse()

    async def ListImageGenerationModels(self, request: Any, context: Any) -> Any:
        async with self.guard(context, "/xai_api.Models/ListImageGenerationModels"):
            return models_pb2.ListImageGenerationModelsResponse()

    async def GetEmbeddingModel(self, request: Any, context: Any) -> Any:
        async with self.guard(context, "/xai_api.Models/GetEmbeddingModel"):
            raise model_not_found(request.name)

    async def GetImageGenerationModel(self, request: Any, context: Any) -> Any:
        async with self.guard(context, "/xai_api.Models/GetImageGenerationModel"):
            raise model_not_found(request.name)


class TokenizeService(tokenize_pb2_grpc.TokenizeServicer):
    def __init__(self, guard: CallGuard) -> None:
        self.guard = guard

    async def TokenizeText(self, request: Any, context: Any) -> Any:
        async with self.guard(context, "/xai_api.Tokenize/TokenizeText") as ctx:
            model = ctx.resolve_model(request.model)
            tokenizer = ctx.engine.tokenizer
            if tokenizer is None:
                raise invalid_request(f"Model `{model.id}` has no tokenizer.", param="model", code="no_tokenizer")

            def tokens() -> list[Any]:
                out = []
                for tid in tokenizer.encode(request.text):
                    text, raw = token_text(tokenizer, tid)
                    out.append(tokenize_pb2.Token(token_id=tid, string_token=text, token_bytes=bytes(raw)))
                return out

            return tokenize_pb2.TokenizeTextResponse(tokens=await asyncio.to_thread(tokens), model=model.id)


def api_key_info(key: ApiKey) -> Any:
    out = auth_pb2.ApiKey(
        redacted_api_key=key.redacted, user_id="local", name=key.name, modified_by="local", team_id="local",
        acls=key.acls, api_key_id=key.key_id, api_key_blocked=key.blocked, team_blocked=False, disabled=False,
    )
    out.create_time.FromSeconds(int(key.created))
    out.modify_time.FromSeconds(int(key.created))
    return out


class AuthService(auth_pb2_grpc.AuthServicer):
    def __init__(self, guard: CallGuard) -> None:
        self.guard = guard

    async def get_api_key_info(self, request: Any, context: Any) -> Any:
        async with self.guard(context, "/xai_api.Auth/get_api_key_info") as ctx:
            return api_key_info(ctx.key or ANONYMOUS)
