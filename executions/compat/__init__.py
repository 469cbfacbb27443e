"""Other platforms' API dialects (Julep, Moderately AI, Discuro) over the same services.

Each module translates request and response shapes only: reads go through `selectors`, writes
through `services`, and every status change through `lifecycle`. See docs/compat.md.
"""
