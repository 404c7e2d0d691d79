"""The serve runtime: an artifact behind a real HTTP server in a process of its own (a
Flask app under waitress), called over the loopback with a lossless tensor format."""
