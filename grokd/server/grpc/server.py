"""The ``grpc.aio`` server: xAI's ``Chat``, ``Models``, ``Tokenize`` and ``Auth`` services on
their own port (uvicorn speaks no HTTP/2 trailers, so gRPC cannot share the HTTP port).

It runs in the event loop of the HTTP server and is started and stopped by the app's lifespan
(``server.app``), so it shares the engine, auth, rate limits, metrics and stores. A drain (first
SIGTERM) makes every new RPC answer UNAVAILABLE while the in-flight ones, counted in
``ServerState.in_flight`` with the HTTP requests, finish; :func:`stop` then cancels what is left,
which aborts those engine requests.
"""

from __future__ import annotations

import logging

import grpc

from grokd.server.grpc.calls import CallGuard
from grokd.server.grpc.chat import ChatService
from grokd.server.grpc.models import AuthService, ModelsService, TokenizeService
from grokd.server.grpc.proto import auth_pb2_grpc, chat_pb2_grpc, models_pb2_grpc, tokenize_pb2_grpc
from grokd.server.state import ServerState

log = logging.getLogger("grokd.server")

MIB = 1 << 20
# xai-sdk sends and accepts messages of up to 20 MiB.
OPTIONS = [("grpc.max_send_message_length", 20 * MIB), ("grpc.max_receive_message_length", 20 * MIB)]


class GrpcServer:
    """The servicers bound to ``host:port`` (port 0 picks a free one: see :attr:`port`)."""

    def __init__(self, state: ServerState, host: str, port: int) -> None:
        self.server = grpc.aio.server(options=OPTIONS)
        guard = CallGuard(state)
        chat_pb2_grpc.add_ChatServicer_to_server(ChatService(guard), self.server)
        models_pb2_grpc.add_ModelsServicer_to_server(ModelsService(guard), self.server)
        tokenize_pb2_grpc.add_TokenizeServicer_to_server(TokenizeService(guard), self.server)
        auth_pb2_grpc.add_AuthServicer_to_server(AuthService(guard), self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"could not listen for gRPC on {host}:{port}")
        self.host = host

    async def start(self) -> None:
        await self.server.start()
        log.info("gRPC (xAI API) listening on %s:%d", self.host, self.port)

    async def stop(self, grace: float | None) -> None:
        """Stop listening; RPCs still running after ``grace`` seconds are cancelled."""
        await self.server.stop(grace)
