"""The DCO: stores images (SRV 11.1), sends and activates them on devices (SRV 11.3),
reads versions (SRV 11.2), over any `smets1.bus.Bus`.

Modules: `store` (the image store in SQLite), `service` (the `Dco`: transfers with bitmap
resume, activation, retries), `http_api` (the same over HTTP, documents from
`smets1.dco_http`), `metrics` (its Prometheus samples), `errors`. It imports only the
`smets1` core, never `emulator` or `scheduler`.
"""
