"""Several nodes as one gateway: shared state in PostgreSQL (`[cluster]`).

Between call control and the daemon: it implements, over asyncpg, what call control reads
through plain objects (the registrar's binding store, the PIN guard's hook, admission's
count of the calls elsewhere), and the daemon starts it beside the node.
"""
