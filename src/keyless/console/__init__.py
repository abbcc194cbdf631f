"""The web console's files (``static/``: its page, modules, style sheet and the pinned graph library), shipped as
package data; ``keyless.http.console`` serves them at ``/console/`` (docs/console.md)."""
