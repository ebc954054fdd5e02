"""The protocol-neutral generation service that every conversational front end sits on (see
``service``'s docstring); ``types`` holds its plan, result and stream event dataclasses."""
