"""The OpenAI- and Anthropic-compatible gateway: wire format -> ``Engine`` -> wire format.

``tierwise.gateway.app.create_app(settings)`` builds the ASGI app (needs the ``gateway``
extra: Starlette, uvicorn, prometheus-client). This package's ``__init__`` imports nothing,
so the settings can name :class:`~tierwise.gateway.config.GatewayConfig` without pulling in
a web framework.
"""
