"""Identity: verifying ID tokens from corporate and CI issuers, the
corporate-domain policy, and the client-side ways of obtaining a token."""
