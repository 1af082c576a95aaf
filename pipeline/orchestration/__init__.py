"""Running the stages over many cells: planning (``rts plan``), the Dask run with digests,
locks and progress (``rts run``), and the reprocessing queue's worker (``rts jobs``)."""
