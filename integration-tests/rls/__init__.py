"""A rate-limit service for Envoy's RLS v3 API (envoy.filters.http.ratelimit), counting in
Redis with the `limits` library. See README.md; run it with `python -m rls`."""
