"""FastAPI routers, one module per endpoint family; ``server.app`` includes them."""
