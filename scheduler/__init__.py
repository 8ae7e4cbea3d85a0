"""The DCC side of the test double: takes Users' firmware requests, applies MP230, releases
work to the DCO through `smets1.services.DcoApi`, and tells each User what happened.

Modules:

* `service`: the `Scheduler` facade: builds the parts below, rebuilds them on a restart,
  and is what the HTTP layer and the runner call;
* `intake`: 11.1 images, 11.2 reads, 11.3 submissions and cancellations, refusals;
* `book`: the request book: every request, its indexes, counts by state and TRT, idleness;
* `schedules`: agreed delivery schedules and the requests attached to their batches;
* `moves`: a security fix taking the place of routine work;
* `release_queue`: waiting work in release order (security, round robin, FIFO);
* `release`: the paced release loop and each released 11.3 until its answer;
* `sweep`: marking requests still open after seven days overdue;
* `views`: read-only views (batches, capacity) for the API and reports;
* `summary`: the run summary (per day, User, campaign) that `smets1 run` and the
  scheduler role write;
* `policy` (the MP230 decisions), `calendar` (capacity and bookings per day, peak
  windows), `requests` (what is tracked), `users` (who may act for whom), `tasks`
  (background coroutines), `store` (SQLite), `notify` (callbacks and polling),
  `duis` (XML in and out), `models`, `api`, `metrics` and `openapi` (HTTP), `errors`.

The parts meet through small public methods handed to each other when the facade builds
them; only the calendar writes its counters. It never imports `emulator` or `dco_mock`.
"""
