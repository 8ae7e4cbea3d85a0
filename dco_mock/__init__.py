"""The DCO: stores images (SRV 11.1), sends and activates them on devices (SRV 11.3),
reads versions (SRV 11.2), over any `smets1.bus.Bus`.

Modules: `store` (the image store in SQLite), `service` (the `Dco`: transfers with bitmap
resume, activation, retries), `http_api` (the same over HTTP, documents from
`smets1.dco_http`), `call_channel` (11.3s and 11.2s as messages on one WebSocket),
`gate` (the token and the bound on calls at once, before both), `metrics` (its
Prometheus samples), `errors`. It imports only the
`smets1` core, never `emulator` or `scheduler`.
"""
