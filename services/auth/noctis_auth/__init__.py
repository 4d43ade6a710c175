"""The Noctis token service: OAuth 2.0 (RFC 6749) and OpenID Connect, mounted at /auth."""
