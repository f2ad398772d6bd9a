"""Web dashboard and its JSON API."""
