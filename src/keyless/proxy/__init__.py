"""The interception proxy: answers HTTPS for Google's hosts with keyless, tunnels every other host unchanged."""
