"""The Responses API (``/v1/responses``): wire models, input → conversation, output items,
streaming events and the store behind ``previous_response_id``; the route is
``server.routes.responses``."""
