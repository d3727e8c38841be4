"""The auditor: a party of its own, reading only what a run leaves on disk (ledgers, receipts, the run record).

It imports `shared/` and nothing of `server/` or `client/`: a privacy officer can run it on a copy of a run directory.
"""
