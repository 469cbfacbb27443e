"""Live updates: events published after commit, the dashboard's sockets, and following one
execution until it settles (SSE streams, `wait`, `sync: true`, the compat faces).

This package never imports the pages or the API; its one window into the dashboard is
`executions.pages.contexts`, the page contexts and renderers both sides share."""
