"""Serving: an OpenAI-compatible HTTP server with many T3 heads over one base model (``t3unlearn serve``).

Submodules: ``engine`` (continuous batching, the multi-head decoding step), ``heads`` (the head
registry), ``app`` (the FastAPI app, request schemas, errors), ``cli``; ``static/`` holds the playground.
See ``docs/serve.md``. Imports are lazy so that ``t3unlearn --help`` never loads torch or FastAPI.
"""
