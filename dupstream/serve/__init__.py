"""``dupstream serve``: a synchronous lookup server on the shared index (FastAPI on uvicorn).

One image in, one verdict out (the stream's Verdict schema), from a read replica of the index
that follows the index-updates feed and publishes its own adds and removals to it.

- ``errors``: HTTP status of every error reason; the server's own request errors
- ``auth``: bearer tokens bound to a tenant (and optionally banks)
- ``scope``: the memory seen through a token's tenant and banks
- ``batcher``: requests gathered into model micro-batches behind a bounded queue
- ``replica``: following the feed, publishing adds and removals
- ``bodylimit``: the request body cap (ASGI middleware)
- ``metrics``: ``dupstream_serve_*`` metrics
- ``app``: the FastAPI application (routes)
- ``build``: Settings -> the running server (the composition for ``dupstream serve``)
"""
