"""xAI's gRPC API (the protocol the official ``xai-sdk`` speaks) over the same engine, auth and
stores as the HTTP API. The servicers implement the stubs shipped in the ``xai-sdk`` wheel
(``xai_sdk.proto``; install ``grokd[grpc]``) and translate protobuf messages to and from the
protocol-neutral generation service; ``server`` runs them on ``grpc.aio`` in uvicorn's loop."""
