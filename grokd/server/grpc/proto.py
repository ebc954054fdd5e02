"""The protobuf messages and gRPC stubs of xAI's API, as the ``xai-sdk`` wheel ships them.

``xai_sdk.proto`` picks the generated code that matches the installed protobuf runtime; grokd
imports it from there and never carries a copy of xAI's ``.proto`` files.
"""

from __future__ import annotations

from xai_sdk.proto import (
    auth_pb2,
    auth_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    deferred_pb2,
    models_pb2,
    models_pb2_grpc,
    sample_pb2,
    tokenize_pb2,
    tokenize_pb2_grpc,
    usage_pb2,
)

__all__ = [
    "auth_pb2",
    "auth_pb2_grpc",
    "chat_pb2",
    "chat_pb2_grpc",
    "deferred_pb2",
    "models_pb2",
    "models_pb2_grpc",
    "sample_pb2",
    "tokenize_pb2",
    "tokenize_pb2_grpc",
    "usage_pb2",
]
