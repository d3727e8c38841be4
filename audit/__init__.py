"""The auditor: a party of its own, reading only what a run leaves on disk.

Its inputs are explicit (client ledgers, the server's receipts, the published artifact, held-out
events); it imports `shared/` and nothing of `server/` or `client/`, so a privacy officer can run it on
a copy of a run directory.
"""
