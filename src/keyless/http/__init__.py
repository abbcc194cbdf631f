"""The HTTP layer: parse a request, call a service, render Google's JSON. Nothing else lives here."""
