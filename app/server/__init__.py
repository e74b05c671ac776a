"""Serving the app: uvicorn as trackhook runs it (the HTTP protocol with its read bounds and
JSON errors, the worker supervisor), and the shutdown guard the app wears while it drains."""
