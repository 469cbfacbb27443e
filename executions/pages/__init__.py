"""Dashboard pages, one module per page.

`base` holds the plumbing every page shares (the `page` decorator, `base_context`, role checks);
`contexts` holds the page contexts and fragment renderers that the views AND the live consumer
(`executions.live`) render, so a pushed fragment is exactly what a reload would show.
"""
