"""An HTTP service for upload platforms: ``anonymize serve`` (issue 18).

Modules: :mod:`.store` the durable job table (SQLite under ``--data``), :mod:`.executor` runs
jobs in worker processes behind one small interface, :mod:`.worker` the worker process itself,
:mod:`.upload` streams a multipart upload to disk and sniffs its type, :mod:`.webhook` signs and
delivers callbacks, :mod:`.auth` API keys, :mod:`.app` the FastAPI app, :mod:`.cli` the
``anonymize serve`` command. The contract is in docs/service.md and at ``/openapi.json``.
"""
