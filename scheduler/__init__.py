"""The DCC side of the test double: takes Users' firmware requests, applies MP230, releases
work to the DCO through `smets1.services.DcoApi`, and tells each User what happened.

Modules: `service` (the Scheduler), `policy` (the MP230 decisions), `calendar` (capacity
per day, peak windows), `requests` (what is tracked), `store` (SQLite), `notify`
(callbacks and polling), `duis` (XML in and out), `models` and `api` (HTTP), `errors`.
It never imports `emulator` or `dco_mock`.
"""
