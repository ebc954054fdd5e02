"""GET /v1/models[/{id}] (OpenAI shape) and GET /v1/language-models[/{id}] (xAI shape)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from grokd.server.protocol import LanguageModel, LanguageModelList, ModelCard, ModelList
from grokd.server.registry import ServedModel
from grokd.server.routes.deps import get_registry, resolve_model

router = APIRouter()


def _card(m: ServedModel) -> ModelCard:
    return ModelCard(id=m.id, created=m.created, owned_by=m.owned_by, aliases=m.aliases,
                     context_length=m.max_model_len)


def _language_model(m: ServedModel) -> LanguageModel:
    return LanguageModel(
        id=m.id, fingerprint=m.system_fingerprint, created=m.created, owned_by=m.owned_by, version=m.version,
        input_modalities=m.input_modalities, output_modalities=m.output_modalities, aliases=m.aliases,
        max_model_len=m.max_model_len, **m.prices,
    )


def _visible(request: Request) -> list[ServedModel]:
    key = getattr(request.state, "api_key", None)
    models = get_registry(request).models
    return [m for m in models if key is None or key.allows_model(m.id)]


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    return ModelList(data=[_card(m) for m in _visible(request)])


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> ModelCard:
    return _card(resolve_model(request, model_id))


@router.get("/v1/language-models")
async def list_language_models(request: Request) -> LanguageModelList:
    return LanguageModelList(models=[_language_model(m) for m in _visible(request)])


@router.get("/v1/language-models/{model_id:path}")
async def get_language_model(model_id: str, request: Request) -> LanguageModel:
    return _language_model(resolve_model(request, model_id))
