"""Store adapters. Each implements :class:`trio_futurecalls.Store`.

The PostgreSQL store lives in ``trio_futurecalls.stores.postgres`` and is imported
only when used, so the engine and the embedded stores never load a network driver.
"""
