"""Delivery over ASGI: the HTTP routes, the WebSocket session and the error envelope."""
